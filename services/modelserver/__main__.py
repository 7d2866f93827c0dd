"""Entry point: python -m services.modelserver [TF Serving flags]."""

import os
import sys

# TensorFlow's C++ start-up chatter (oneDNN, CPU features) drowns the service's own logs; errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from services.common.logging import setup_logging
from services.common.server import run, serve_until_signalled
from services.modelserver.config import load_settings
from services.modelserver.server import create_server


async def main(argv: list[str]) -> None:
    settings = load_settings(argv)
    setup_logging("modelserver", level=settings.log_level, fmt=settings.log_format)
    running = await create_server(settings)
    await serve_until_signalled(running, grace=settings.grace_seconds)


if __name__ == "__main__":
    try:
        run(main(sys.argv[1:]))
    except ValueError as exc:
        # Bad flags, settings or model layout: one readable line, no traceback.
        sys.exit(f"modelserver: {exc}")
