"""Waiting in tests: poll a condition until it holds or a limit passes, and say what was awaited if it never did.

Tests wait for things to happen (a status to change, a server to serve), never for time to pass: a fixed sleep is
either too short on a busy machine or wasted on an idle one.
"""

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

INTERVAL_SECONDS = 0.05


class TimedOut(AssertionError):
    """What was awaited did not happen in time (a test failure, like any failed assertion)."""


async def eventually(
    condition: Callable[[], Any],
    *,
    awaiting: str,
    within: float = 10.0,
    interval: float = INTERVAL_SECONDS,
    ignoring: tuple[type[BaseException], ...] = (),
) -> Any:
    """Calls `condition` (plain or async) until it returns something truthy, and returns that.

    Exceptions of the `ignoring` types count as "not yet". After `within` seconds the test fails with a message
    naming what it was `awaiting` and the last answer it got.
    """
    deadline = time.monotonic() + within
    while True:
        last = await _attempt_async(condition, ignoring)
        if last and not isinstance(last, BaseException):
            return last
        if time.monotonic() >= deadline:
            raise TimedOut(_timed_out(awaiting, within, last))
        await asyncio.sleep(interval)


def eventually_blocking(
    condition: Callable[[], Any],
    *,
    awaiting: str,
    within: float = 10.0,
    interval: float = INTERVAL_SECONDS,
    ignoring: tuple[type[BaseException], ...] = (),
) -> Any:
    """`eventually` for code without an event loop: `condition` is a plain function and the wait blocks."""
    deadline = time.monotonic() + within
    while True:
        try:
            last = condition()
        except ignoring as exc:
            last = exc
        if last and not isinstance(last, BaseException):
            return last
        if time.monotonic() >= deadline:
            raise TimedOut(_timed_out(awaiting, within, last))
        time.sleep(interval)


async def _attempt_async(condition: Callable[[], Any], ignoring: tuple[type[BaseException], ...]) -> Any:
    try:
        value = condition()
        return await value if inspect.isawaitable(value) else value
    except ignoring as exc:
        return exc


def _timed_out(awaiting: str, within: float, last: Any) -> str:
    return f"gave up after {within:g}s waiting for {awaiting}; the last check gave {last!r}"
