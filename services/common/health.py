"""Watches what a service needs (its database, its object storage) and reports it on gRPC health."""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from prometheus_client import CollectorRegistry, Gauge

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[None]]
# How often the dependencies are checked, and how long one check may take before it counts as a failure.
CHECK_INTERVAL_SECONDS = 1.0
CHECK_TIMEOUT_SECONDS = 1.5


class DependencyWatcher:
    """Runs every check each interval; the service is SERVING only while all of them pass.

    A check is an async callable that returns when the dependency works and raises (or times out) when not.
    `on_change(healthy)` is awaited whenever the overall answer changes, `on_dependency(name, passed)` whenever
    one dependency's does (and once for each at the first check).
    """

    def __init__(
        self,
        checks: Mapping[str, Check],
        *,
        on_change: Callable[[bool], Awaitable[None]],
        on_dependency: Callable[[str, bool], Awaitable[None]] | None = None,
        registry: CollectorRegistry | None = None,
        interval: float = CHECK_INTERVAL_SECONDS,
        timeout: float = CHECK_TIMEOUT_SECONDS,
    ) -> None:
        self._checks = dict(checks)
        self._on_change = on_change
        self._on_dependency = on_dependency
        self._interval = interval
        self._timeout = timeout
        self.states: dict[str, bool | None] = dict.fromkeys(self._checks)
        self.healthy = True
        self._up = Gauge(
            "tagsmith_dependency_up",
            "1 while a dependency of this service answers its health check, else 0.",
            ["dependency"],
            registry=registry,
        )

    async def check_once(self) -> bool:
        """Runs every check concurrently, records and reports the result; True when all pass."""
        names = list(self._checks)
        results = await asyncio.gather(*(self._passes(name) for name in names))
        for name, passed in zip(names, results, strict=True):
            if passed != self.states[name]:
                log.log(logging.INFO if passed else logging.WARNING, "%s %s", name, "reachable" if passed else "down")
                if self._on_dependency is not None:
                    await self._on_dependency(name, passed)
            self.states[name] = passed
            self._up.labels(name).set(int(passed))
        healthy = all(results)
        if healthy != self.healthy:
            self.healthy = healthy
            await self._on_change(healthy)
        return healthy

    async def _passes(self, name: str) -> bool:
        try:
            await asyncio.wait_for(self._checks[name](), self._timeout)
        except Exception as exc:
            log.debug("health check of %s failed: %r", name, exc)
            return False
        return True

    async def run(self) -> None:
        """Checks forever at the interval (measured from the start of each round)."""
        while True:
            started = time.monotonic()
            await self.check_once()
            await asyncio.sleep(max(0.0, self._interval - (time.monotonic() - started)))
