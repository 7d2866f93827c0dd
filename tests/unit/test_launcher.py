"""The `make run` launcher's pieces: child environments, prefixed and filtered logs, kept secrets, port plans and
settings."""

import os
import socket
import stat
import subprocess
import sys
import time

from local.__main__ import busy_port, ports_from
from local.children import REPO, Child, child_environment
from local.config import LocalSettings
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


def test_a_shared_model_server_is_used_instead_of_a_new_one(tmp_path):
    stack = Stack(StackOptions(model_base_path=tmp_path, modelserver_addr="127.0.0.1:8600"))
    stack._assign_ports(Ports.free())
    assert stack.addresses["modelserver"] == ["127.0.0.1:8600"]
    assert stack._inference_env(stack._ports["inference"][0])["TAGSMITH_TFSERVING_ADDR"] == "127.0.0.1:8600"


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


LAUNCHER_PORTS = [name for name in LocalSettings.model_fields if name.endswith("_port")]


def test_every_port_the_system_listens_on_is_a_launcher_setting(monkeypatch, tmp_path):
    """Each TAGSMITH_*_PORT reaches the one service that listens on it: no fixed port is left to collide."""
    chosen = {name: 20000 + index for index, name in enumerate(LAUNCHER_PORTS)}
    for name, port in chosen.items():
        monkeypatch.setenv(f"TAGSMITH_{name.upper()}", str(port))
    stack = Stack(StackOptions(model_base_path=tmp_path))
    stack.base_dir = tmp_path
    stack._assign_ports(ports_from(LocalSettings()))
    listens = {
        "gateway_port": stack._gateway_env(stack._ports["gateway"][0])["TAGSMITH_PORT"],
        "modelserver_port": _flag(stack._modelserver_args(), "--port"),
        "modelserver_metrics_port": _flag(stack._modelserver_args(), "--metrics_port"),
    }
    for service in ("auth", "catalog", "inference"):
        env = getattr(stack, f"_{service}_env")(stack._ports[service][0])
        listens |= {f"{service}_port": env["TAGSMITH_PORT"], f"{service}_metrics_port": env["TAGSMITH_METRICS_PORT"]}
    assert set(listens) == set(LAUNCHER_PORTS)
    assert {name: int(port) for name, port in listens.items()} == chosen


def _flag(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def test_a_busy_port_is_one_line_naming_its_setting(monkeypatch):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        for name in LAUNCHER_PORTS:
            monkeypatch.setenv(f"TAGSMITH_{name.upper()}", "0")
        monkeypatch.setenv("TAGSMITH_CATALOG_METRICS_PORT", str(port))
        message = busy_port(LocalSettings())
    assert message == (
        f"port {port} (Prometheus /metrics port of the catalog) is in use by another program; "
        "set TAGSMITH_CATALOG_METRICS_PORT to another port (0 picks a free one)"
    )
    assert busy_port(LocalSettings()) is None


def test_make_run_stops_at_once_on_a_busy_port(tmp_path):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        env = {key: value for key, value in os.environ.items() if not key.startswith("TAGSMITH_")}
        env |= {f"TAGSMITH_{name.upper()}": "0" for name in LAUNCHER_PORTS}
        env |= {"TAGSMITH_GATEWAY_PORT": str(port), "TAGSMITH_DATA_DIR": str(tmp_path / "var")}
        env |= {"TAGSMITH_MODEL_BASE_PATH": str(REPO / "models")}
        result = subprocess.run(
            [sys.executable, "-m", "local"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
        )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"port {port} (HTTP port of the gateway (the page and the API)) is in use by another program; "
        "set TAGSMITH_GATEWAY_PORT to another port (0 picks a free one)"
    ]
    assert not (tmp_path / "var").exists()


TENSORFLOW_START_UP = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796138820.698775   16821 cudart_stub.cc:31] Could not find cuda drivers on your machine, "
    "GPU will not be used.",
    "E0000 00:00:1796138832.673700   16821 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: "
    "Failed call to cuInit: UNKNOWN ERROR (303)",
    "I0000 00:00:1796138832.9   16821 cpu_feature_guard.cc:210] This TensorFlow binary is optimized to use "
    "available CPU instructions in performance-critical operations.",
]
KEPT = [
    "2026-12-01 15:27:17,061 INFO  auth [-] services.common.server: serving on 127.0.0.1:47555",
    "E0000 00:00:1796138832.673700   16821 saved_model.cc:52] Could not load the model",
    "WARNING: something a person should read",
]


def test_tensorflow_start_up_lines_stay_in_the_log_file_only(tmp_path):
    sink = Sink()
    code = "import sys; print('\\n'.join(sys.argv[1:]), file=sys.stderr)"
    lines = [TENSORFLOW_START_UP[0], KEPT[0], *TENSORFLOW_START_UP[1:], *KEPT[1:]]
    child = Child("modelserver", ["-c", code, *lines], env={}, log_dir=tmp_path, sink=sink).start()
    child.wait(time.monotonic() + 30)
    assert child.exit_code() == 0
    assert sink.text.splitlines() == [f"modelserver     | {line}" for line in KEPT]
    assert (tmp_path / "modelserver.log").read_text().splitlines() == lines
