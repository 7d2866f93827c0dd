"""Where the CLI keeps sessions: $XDG_CONFIG_HOME/tagsmith/session.json (mode 0600), one entry per server URL."""

import contextlib
import fcntl
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tagsmith_client.models import Session


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "tagsmith"


class SessionStore:
    """Refresh and access tokens per server, in a file only its owner may read.

    Refresh tokens rotate and reusing a spent one ends the session, so two commands running at once take the
    file's lock around reading, renewing and writing.
    """

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or config_dir()
        self.path = self.directory / "session.json"
        self._in_process = threading.RLock()
        self._depth = 0

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Excludes other processes and threads; re-entrant, since a renewal inside the lock saves the new pair."""
        with self._in_process:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            descriptor = os.open(self.directory / ".session.lock", os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX)
                self._depth = 1
                yield
            finally:
                self._depth = 0
                os.close(descriptor)

    def load(self, url: str) -> dict[str, Any] | None:
        return self._read().get(url)

    def save(self, url: str, session: Session, *, username: str | None = None) -> None:
        entries = self._read()
        entry = entries.get(url, {})
        entry.update(
            access_token=session.access_token, refresh_token=session.refresh_token, expires_at=session.expires_at
        )
        if username:
            entry["username"] = username
        entries[url] = entry
        self._write(entries)

    def forget(self, url: str) -> bool:
        entries = self._read()
        if entries.pop(url, None) is None:
            return False
        self._write(entries)
        return True

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self, entries: dict[str, Any]) -> None:
        """Written to a new 0600 file and renamed over the old one, so a crash never leaves half a file."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        descriptor = os.open(temporary, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            json.dump(entries, file, indent=2)
        os.chmod(temporary, 0o600)
        os.replace(temporary, self.path)


class SavedSession:
    """One server's entry in a SessionStore, as a Client's keeper: renewals there are seen by every command."""

    def __init__(self, store: SessionStore, url: str) -> None:
        self.store, self.url = store, url

    def locked(self) -> contextlib.AbstractContextManager[None]:
        return self.store.locked()

    def load(self) -> Session | None:
        entry = self.store.load(self.url)
        if not entry or not entry.get("refresh_token"):
            return None
        return Session(entry.get("access_token", ""), entry["refresh_token"], float(entry.get("expires_at", 0)))

    def save(self, session: Session) -> None:
        self.store.save(self.url, session)
