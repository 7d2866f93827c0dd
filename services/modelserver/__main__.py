"""Entry point: python -m services.modelserver [TF Serving flags]."""

import os
import sys

# TensorFlow's C++ start-up chatter (oneDNN, CPU features) drowns the service's own logs; errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from services.common.logging import setup_logging
from services.common.server import run, serve_until_signalled
from services.common.settings import settings_or_report
from services.modelserver.config import Settings, flag_overrides
from services.modelserver.server import create_server


async def serve(settings: Settings) -> None:
    running = await create_server(settings)
    await serve_until_signalled(running, grace=settings.grace_seconds)


def main(argv: list[str]) -> int:
    try:
        overrides = flag_overrides(argv)
    except ValueError as exc:
        sys.stderr.write(f"modelserver: {exc}\n")
        return 2
    if (settings := settings_or_report(Settings, sources=overrides.sources, **overrides.values)) is None:
        return 2
    setup_logging("modelserver", level=settings.log_level, fmt=settings.log_format)
    try:
        run(serve(settings))
    except ValueError as exc:
        # A model layout, config file or warm-up file the server cannot use: one readable line, no traceback.
        sys.stderr.write(f"modelserver: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
