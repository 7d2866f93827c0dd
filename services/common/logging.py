"""JSON (or plain text) logs that carry the current request id."""

import json
import logging
import sys
import time
from contextvars import ContextVar

# Shown in logs outside any request.
NO_REQUEST_ID = "-"
request_id_var: ContextVar[str] = ContextVar("request_id", default=NO_REQUEST_ID)

# Attributes every LogRecord has; anything else was passed through `extra=`.
_STANDARD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, service, logger, message, request id and extras."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": request_id_var.get(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """Readable lines for a terminal, still with the request id."""

    def __init__(self, service: str) -> None:
        super().__init__(f"%(asctime)s %(levelname)-5s {service} [%(request_id)s] %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        record.request_id = request_id_var.get()
        return super().format(record)


def setup_logging(service: str, *, level: str = "INFO", fmt: str = "json") -> None:
    """Send every log record to stderr in the chosen format; call once at start-up."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if fmt == "json" else TextFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
