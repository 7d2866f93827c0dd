"""The CLI's session file: private, per server, rewritten whole, and locked across processes."""

import stat
import subprocess
import sys

from tagsmith_client.config import SavedSession, SessionStore, config_dir
from tagsmith_client.models import Session


def test_sessions_live_under_xdg_config_home_with_mode_0600(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert config_dir() == tmp_path / "xdg" / "tagsmith"
    store = SessionStore()
    store.save("http://a:8080", Session("access", "refresh", 123.0), username="ada")
    store.save("http://b:8080", Session("access-b", "refresh-b", 456.0))
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700
    assert store.load("http://a:8080") == {
        "access_token": "access",
        "refresh_token": "refresh",
        "expires_at": 123.0,
        "username": "ada",
    }
    assert SavedSession(store, "http://b:8080").load() == Session("access-b", "refresh-b", 456.0)
    assert store.forget("http://a:8080") and not store.forget("http://a:8080")
    assert store.load("http://a:8080") is None and store.load("http://b:8080") is not None


def test_the_lock_is_reentrant_here_and_exclusive_between_processes(tmp_path):
    store = SessionStore(tmp_path)
    probe = (
        "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR)\n"
        "try: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
        "except BlockingIOError: print('held')\n"
        "else: print('free')"
    )

    def other_process_sees() -> str:
        command = [sys.executable, "-c", probe, str(tmp_path / ".session.lock")]
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()

    with store.locked():
        with store.locked():
            store.save("http://a", Session("a", "r", 1.0))
        assert other_process_sees() == "held"
    assert other_process_sees() == "free"
