"""The `make run` launcher's pieces: child environments, prefixed logs, kept secrets and port plans."""

import os
import stat
import time

from local.children import REPO, Child, child_environment
from local.stack import Ports, Stack, StackOptions
from tests.support.waiting import eventually_blocking


def test_children_get_their_own_settings_only(monkeypatch):
    monkeypatch.setenv("TAGSMITH_PORT", "1234")
    monkeypatch.setenv("HOME_SOMETHING", "kept")
    env = child_environment({"TAGSMITH_CATALOG_ADDR": "127.0.0.1:9"})
    assert "TAGSMITH_PORT" not in env
    assert env["TAGSMITH_CATALOG_ADDR"] == "127.0.0.1:9"
    assert env["HOME_SOMETHING"] == "kept"
    assert env["PYTHONPATH"].split(os.pathsep)[:2] == [str(REPO / "gen"), str(REPO)]


class Sink:
    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> None:
        self.text += text

    def flush(self) -> None:
        pass


def test_child_output_is_prefixed_and_kept(tmp_path):
    sink = Sink()
    code = "import sys; print('hello'); print('oops', file=sys.stderr)"
    child = Child("probe", ["-c", code], env={}, log_dir=tmp_path, sink=sink).start()
    child.wait(time.monotonic() + 30)
    assert child.exit_code() == 0
    assert "probe           | hello\n" in sink.text
    assert "probe           | oops\n" in sink.text
    assert (tmp_path / "probe.log").read_text().splitlines() == ["hello", "oops"]


def test_without_a_sink_the_child_writes_its_log_file_itself(tmp_path):
    code = "import sys; print('hello'); print('oops', file=sys.stderr)"
    child = Child("quiet", ["-c", code], env={}, log_dir=tmp_path, sink=None).start()
    child.wait(time.monotonic() + 30)
    assert child.exit_code() == 0
    assert child._pump is None
    assert sorted((tmp_path / "quiet.log").read_text().splitlines()) == ["hello", "oops"]


def test_a_stuck_child_is_killed_after_the_grace_period(tmp_path):
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready'); time.sleep(60)"
    child = Child("stuck", ["-c", code], env={}, log_dir=tmp_path, sink=None).start()
    eventually_blocking(lambda: "ready" in child.tail(), awaiting="the child to start")
    child.terminate()
    began = time.monotonic()
    child.wait(began + 0.5)
    assert child.exit_code() == -9
    assert time.monotonic() - began < 5


def test_secrets_are_generated_once_and_private(tmp_path):
    stack = Stack(StackOptions(model_base_path=tmp_path))
    stack.base_dir = tmp_path
    first = stack._secret("catalog-service-password")
    assert first == stack._secret("catalog-service-password")
    assert len(first) >= 24
    mode = stat.S_IMODE((tmp_path / "secrets" / "catalog-service-password").stat().st_mode)
    assert mode == 0o600


def test_replicas_get_distinct_free_ports_and_joined_addresses(tmp_path):
    stack = Stack(StackOptions(model_base_path=tmp_path, replicas={"catalog": 3, "gateway": 2}))
    stack._assign_ports(Ports.free())
    ports = [port for name in ("auth", "catalog", "gateway", "inference", "modelserver") for port in stack._ports[name]]
    assert len(ports) == len(set(ports)) == 8
    assert all(port > 0 for port in ports)
    assert stack._joined("catalog").count(",") == 2
    assert len(stack.gateway_urls) == 2


def test_default_ports_are_the_documented_ones(tmp_path):
    stack = Stack(StackOptions(model_base_path=tmp_path))
    stack._assign_ports(Ports())
    assert stack.gateway_url == "http://127.0.0.1:8080"
    assert stack.addresses["auth"] == ["127.0.0.1:50052"]
    assert stack.addresses["modelserver"] == ["127.0.0.1:8500"]


def test_bad_launcher_settings_name_the_variable_and_never_echo_values(monkeypatch, capsys):
    from local.__main__ import main

    monkeypatch.setenv("TAGSMITH_GATEWAY_PORT", "eighty-eighty-secret")
    monkeypatch.setenv("TAGSMITH_BLOB_DRIVER", "ftp-with-password-hunter2")
    assert main() == 2
    err = capsys.readouterr().err
    assert "TAGSMITH_GATEWAY_PORT" in err and "TAGSMITH_BLOB_DRIVER" in err
    assert "secret" not in err and "hunter2" not in err
