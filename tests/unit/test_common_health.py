"""The dependency watcher: healthy only while every check passes; slow checks count as failures."""

import asyncio

from prometheus_client import CollectorRegistry

from services.common.health import DependencyWatcher


class Switch:
    def __init__(self) -> None:
        self.up = True
        self.delay = 0.0

    async def __call__(self) -> None:
        await asyncio.sleep(self.delay)
        if not self.up:
            raise ConnectionError("down")


async def test_reports_changes_of_the_whole_and_of_each_dependency():
    database, storage = Switch(), Switch()
    overall, each = [], []

    async def on_change(healthy):
        overall.append(healthy)

    async def on_dependency(name, passed):
        each.append((name, passed))

    registry = CollectorRegistry()
    watcher = DependencyWatcher(
        {"database": database, "object_storage": storage},
        on_change=on_change,
        on_dependency=on_dependency,
        registry=registry,
    )
    assert await watcher.check_once() is True
    assert overall == [] and sorted(each) == [("database", True), ("object_storage", True)]
    database.up = False
    assert await watcher.check_once() is False
    assert await watcher.check_once() is False
    assert overall == [False] and each[-1] == ("database", False)
    assert registry.get_sample_value("tagsmith_dependency_up", {"dependency": "database"}) == 0
    database.up = True
    assert await watcher.check_once() is True
    assert overall == [False, True]
    assert watcher.states == {"database": True, "object_storage": True}


async def test_a_check_slower_than_the_timeout_fails():
    hung = Switch()
    hung.delay = 5.0

    async def ignore(_):
        return None

    watcher = DependencyWatcher({"database": hung}, on_change=ignore, registry=CollectorRegistry(), timeout=0.1)
    assert await watcher.check_once() is False
