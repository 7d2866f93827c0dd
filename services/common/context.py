"""Per-call state that interceptors set and handlers read: the caller and the deadline."""

import time
from contextvars import ContextVar
from typing import Any

import grpc

from services.common.tokens import Principal

principal_var: ContextVar[Principal | None] = ContextVar("principal", default=None)
# Absolute time.monotonic() by which the current incoming call must answer.
deadline_var: ContextVar[float | None] = ContextVar("deadline", default=None)


def current_principal() -> Principal:
    """The authenticated caller of the current RPC; the auth interceptor guarantees one exists."""
    principal = principal_var.get()
    if principal is None:
        raise RuntimeError("no authenticated caller in this context")
    return principal


def time_remaining() -> float | None:
    """Seconds left before the incoming call's deadline, or None when the caller set none."""
    deadline = deadline_var.get()
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def set_deadline_from(context: grpc.aio.ServicerContext[Any, Any]) -> None:
    remaining = context.time_remaining()
    deadline_var.set(None if remaining is None else time.monotonic() + remaining)
