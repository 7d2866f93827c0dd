"""The tests' own PostgreSQL cluster: a pg_ctl that dies of a signal is run again, in a restart and at cleanup."""

import subprocess

import psutil

from tests.support.postgres import PgCtl, library_pg_ctl, start_cluster
from tests.support.waiting import eventually_blocking


def dying_on(calls: list[str], deaths: set[int]) -> PgCtl:
    """The library's pg_ctl, but the runs numbered in `deaths` (from 0) die of SIGSEGV before pg_ctl runs, as a
    pg_ctl forked from a process full of gRPC threads now and then does."""
    real = library_pg_ctl()

    def pg_ctl(args: list[str], **kwargs) -> str:
        calls.append(args[-1])
        if len(calls) - 1 in deaths:
            subprocess.run(["sh", "-c", "kill -SEGV $$"], check=True)
        return real(args, **kwargs)

    return pg_ctl


def gone(process: psutil.Process) -> bool:
    # The postmaster is no child of ours; where nothing reaps orphans it may linger as a zombie, which serves nothing.
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_the_session_cluster_survives_pg_ctl_dying_of_a_signal(monkeypatch):
    monkeypatch.delenv("TAGSMITH_TEST_POSTGRES_DSN", raising=False)
    calls: list[str] = []
    _, cluster = start_cluster(pg_ctl=dying_on(calls, deaths={0, 3}))
    assert cluster is not None
    cluster.stop()
    assert not cluster.accepts_connections()
    cluster.start()
    assert cluster.accepts_connections()
    postmaster = psutil.Process(int((cluster.pgdata / "postmaster.pid").read_text().split()[0]))
    cluster.cleanup()
    # Each death was followed by a second run; cleanup stopped the server itself, leaving the library only the files.
    assert calls == ["stop", "stop", "start", "stop", "stop"]
    assert gone(postmaster)
    # The files are deleted in the background, so the run does not wait for them.
    eventually_blocking(lambda: not cluster.pgdata.parent.exists(), awaiting="the cluster's files deleted")
