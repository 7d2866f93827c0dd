"""`python -m services.gateway`: serve the REST API and the web page until SIGTERM or Ctrl-C."""

import logging
import sys

import uvicorn

from services.common.logging import setup_logging
from services.common.server import CannotListen, port_in_use, run
from services.common.settings import settings_or_report
from services.gateway.app import create_app
from services.gateway.config import Settings
from services.gateway.timeouts import head_timeout_protocol

log = logging.getLogger("services.gateway")


def uvicorn_config(settings: Settings) -> uvicorn.Config:
    """uvicorn with our logging, no access log of its own (the middleware logs), proxy headers if trusted, a deadline
    for request heads, and keep-alive connections that outlive a proxy's idle timeout (the proxy closes first, so
    it never sends a request on a connection the gateway is closing)."""
    return uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        http=head_timeout_protocol(settings.header_timeout_seconds),
        timeout_keep_alive=settings.keep_alive_timeout_seconds,
        log_config=None,
        access_log=False,
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=settings.trusted_proxies or None,
        server_header=False,
        timeout_graceful_shutdown=int(settings.grace_seconds) or None,
        lifespan="on",
    )


class _DropColorMessage(logging.Filter):
    """uvicorn attaches a terminal-colored copy of some messages; JSON logs need only the plain one."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.__dict__.pop("color_message", None)
        return True


def main() -> int | str:
    if (settings := settings_or_report(Settings)) is None:
        return 2
    if settings.port and port_in_use(settings.host, settings.port):
        # uvicorn's own report would not say which setting moves the port.
        return str(CannotListen(settings.host, settings.port, "TAGSMITH_PORT"))
    setup_logging("gateway", level=settings.log_level, fmt=settings.log_format)
    logging.getLogger("uvicorn.error").addFilter(_DropColorMessage())
    server = uvicorn.Server(uvicorn_config(settings))
    run(server.serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
