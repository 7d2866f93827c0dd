"""A bounded LRU of classifications by image SHA-256, emptied when a newer model version answers."""

from collections import OrderedDict
from typing import Generic, TypeVar

Value = TypeVar("Value")


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (-1, version)


class ResultCache(Generic[Value]):
    """Least-recently-used entries go first; a size of 0 remembers nothing."""

    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        self._entries: OrderedDict[str, Value] = OrderedDict()
        self._version: str | None = None
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> Value | None:
        value = self._entries.get(key)
        if value is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return value

    def put(self, key: str, value: Value, *, version: str) -> None:
        """Stores a result; results of a newer model version replace everything, older ones are not kept."""
        if self._max == 0:
            return
        if self._version != version:
            if self._version is not None and _version_key(version) < _version_key(self._version):
                return
            self._entries.clear()
            self._version = version
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
