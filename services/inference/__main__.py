"""Entry point: python -m services.inference."""

import sys

from services.common.logging import setup_logging
from services.common.server import run, serve_until_signalled
from services.common.settings import InvalidSettings, load_settings
from services.inference.config import Settings
from services.inference.server import create_server


async def main() -> None:
    settings = load_settings(Settings)
    setup_logging("inference", level=settings.log_level, fmt=settings.log_format)
    running = await create_server(settings)
    await serve_until_signalled(running, grace=settings.grace_seconds)


if __name__ == "__main__":
    try:
        run(main())
    except (InvalidSettings, ValueError) as exc:
        # Bad settings or labels file: say what is wrong without a traceback.
        sys.exit(f"inference: {exc}")
