"""Entry point: python -m services.inference."""

import sys

from services.common.logging import setup_logging
from services.common.server import run, serve_until_signalled
from services.common.settings import settings_or_report
from services.inference.config import Settings
from services.inference.server import create_server


async def serve(settings: Settings) -> None:
    running = await create_server(settings)
    await serve_until_signalled(running, grace=settings.grace_seconds)


def main() -> int:
    if (settings := settings_or_report(Settings)) is None:
        return 2
    setup_logging("inference", level=settings.log_level, fmt=settings.log_format)
    try:
        run(serve(settings))
    except ValueError as exc:
        # A labels file that cannot be read: say what is wrong without a traceback.
        sys.stderr.write(f"inference: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
