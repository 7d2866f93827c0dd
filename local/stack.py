"""The whole system as subprocesses: `Stack(...).start(base_dir)` for `make run`, the e2e tests and benchmarks."""

import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import grpc

from local.children import Child, run_command
from local.health import free_port, grpc_serving, http_ready, wait_until
from local.postgres import EmbeddedPostgres, ensure_database
from services.common.model_contract import SERVED_MODELS
from services.modelserver.config import model_config_text

log = logging.getLogger(__name__)

DATABASE = "tagsmith"
SERVICE_ACCOUNT = "catalog-worker"
ANONYMOUS_USER = "anonymous"
REPLICATED = ("gateway", "catalog", "inference")


@dataclass(frozen=True)
class Ports:
    """First-replica ports; 0 means any free port. Further replicas always take free ports."""

    gateway: int = 8080
    auth: int = 50052
    catalog: int = 50053
    inference: int = 50054
    modelserver: int = 8500
    metrics: dict[str, int] = field(
        default_factory=lambda: {"auth": 9102, "catalog": 9103, "inference": 9104, "modelserver": 9105}
    )

    @classmethod
    def free(cls) -> "Ports":
        return cls(0, 0, 0, 0, 0, {"auth": 0, "catalog": 0, "inference": 0, "modelserver": 0})


@dataclass
class StackOptions:
    """What to run and how; the defaults suit tests (JSON logs to files only, local blobs, one replica each)."""

    model_base_path: Path
    postgres_dsn: str = ""
    host: str = "127.0.0.1"
    replicas: dict[str, int] = field(default_factory=dict)
    anonymous_mode: bool = False
    log_format: str = "json"
    log_level: str = "INFO"
    sink: TextIO | None = None
    start_timeout: float = 180.0
    grace_seconds: float = 10.0
    extra_env: dict[str, dict[str, str]] = field(default_factory=dict)
    # A model server already running (host:port) to use instead of starting one: it serves read-only models, so
    # systems on one machine can share it and load TensorFlow once.
    modelserver_addr: str = ""


class StackError(RuntimeError):
    """A service did not become ready; the message holds the end of its log."""


class Stack:
    """PostgreSQL (embedded unless a DSN is given), the model server, auth, inference, catalog and gateway."""

    def __init__(self, options: StackOptions) -> None:
        self.options = options
        self.base_dir = Path()
        self.children: list[Child] = []
        self.gateway_urls: list[str] = []
        self.addresses: dict[str, list[str]] = {}
        self.dsn = ""
        self.anonymous_password = ""
        self._postgres: EmbeddedPostgres | None = None
        self._ports: dict[str, list[int]] = {}
        self._metrics: dict[str, int] = {}

    @property
    def gateway_url(self) -> str:
        return self.gateway_urls[0]

    @property
    def postgres_pid(self) -> int | None:
        """The embedded PostgreSQL's main process, or None when an external server is used."""
        return self._postgres.pid if self._postgres is not None else None

    def start(self, base_dir: Path, *, ports: Ports | None = None) -> "Stack":
        """Starts everything under `base_dir` (free ports unless `ports` is given) and waits until it is ready."""
        self.base_dir = base_dir.resolve()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self._assign_ports(ports or Ports.free())
        try:
            self._start_all()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_all(self) -> None:
        deadline = time.monotonic() + self.options.start_timeout
        if not self.options.modelserver_addr:
            self._launch("modelserver", self._modelserver_args(), self._modelserver_env())
        self.dsn = self._database()
        self._prepare_database()
        commands = {
            "auth": (["-m", "services.auth", "serve"], self._auth_env),
            "inference": (["-m", "services.inference"], self._inference_env),
            "catalog": (["-m", "services.catalog", "serve"], self._catalog_env),
            "gateway": (["-m", "services.gateway"], self._gateway_env),
        }
        for service, (args, env) in commands.items():
            for replica, port in enumerate(self._ports[service]):
                self._launch(_name(service, replica), args, env(port) | self.options.extra_env.get(service, {}))
        self._wait_ready(deadline)
        if self.options.anonymous_mode:
            self._ensure_anonymous_user()

    # ---- ports and addresses ----

    def _assign_ports(self, ports: Ports) -> None:
        def pick(port: int) -> int:
            return port or free_port(self.options.host)

        for name in ("auth", "modelserver", *REPLICATED):
            count = self.options.replicas.get(name, 1) if name in REPLICATED else 1
            first = getattr(ports, name)
            self._ports[name] = [pick(first)] + [free_port(self.options.host) for _ in range(count - 1)]
            self.addresses[name] = [f"{self.options.host}:{port}" for port in self._ports[name]]
        if self.options.modelserver_addr:
            self.addresses["modelserver"] = [self.options.modelserver_addr]
        self._metrics = {name: pick(port) for name, port in ports.metrics.items()}
        self.gateway_urls = [f"http://{self.options.host}:{port}" for port in self._ports["gateway"]]

    def _joined(self, name: str) -> str:
        return ",".join(self.addresses[name])

    # ---- database and one-shot commands ----

    def _database(self) -> str:
        if self.options.postgres_dsn:
            return self.options.postgres_dsn
        self._postgres = EmbeddedPostgres(self.base_dir / "postgres")
        return ensure_database(self._postgres.start(), DATABASE)

    def _prepare_database(self) -> None:
        env = {"TAGSMITH_POSTGRES_DSN": self.dsn, "TAGSMITH_LOG_FORMAT": self.options.log_format}
        logs = self.base_dir / "logs"
        run_command("auth-migrate", ["-m", "services.auth", "migrate"], env=env, log_dir=logs, sink=self.options.sink)
        run_command(
            "catalog-migrate", ["-m", "services.catalog", "migrate"], env=env, log_dir=logs, sink=self.options.sink
        )
        account_env = env | {"TAGSMITH_SERVICE_PASSWORD": self._secret("catalog-service-password")}
        run_command(
            "service-account",
            ["-m", "services.auth", "create-service-account", SERVICE_ACCOUNT],
            env=account_env,
            log_dir=logs,
            sink=self.options.sink,
        )

    def _secret(self, name: str) -> str:
        """A password generated on first use and kept, readable by the owner only, under base_dir/secrets."""
        directory = self.base_dir / "secrets"
        directory.mkdir(mode=0o700, exist_ok=True)
        path = directory / name
        if not path.exists():
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(secrets.token_urlsafe(24))
        return path.read_text().strip()

    def _ensure_anonymous_user(self) -> None:
        # Imported here so the launcher itself runs before gen/ is on the path; only its children need it.
        from tagsmith.auth.v1 import auth_pb2, auth_pb2_grpc

        with grpc.insecure_channel(self.addresses["auth"][0]) as channel:
            request = auth_pb2.RegisterRequest(username=ANONYMOUS_USER, password=self.anonymous_password)
            try:
                auth_pb2_grpc.AuthServiceStub(channel).Register(request, timeout=10)
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
                    raise

    # ---- each service's command line and environment ----

    def _common_env(self, name: str, port: int) -> dict[str, str]:
        options = self.options
        return {
            "TAGSMITH_HOST": options.host,
            "TAGSMITH_PORT": str(port),
            "TAGSMITH_LOG_FORMAT": options.log_format,
            "TAGSMITH_LOG_LEVEL": options.log_level,
            "TAGSMITH_GRACE_SECONDS": str(max(0.0, options.grace_seconds - 2)),
            "TAGSMITH_AUTH_ADDR": self.addresses["auth"][0],
        }

    def _metrics_env(self, name: str, port: int) -> dict[str, str]:
        first = port == self._ports[name][0]
        return {"TAGSMITH_METRICS_PORT": str(self._metrics[name] if first else free_port(self.options.host))}

    def _modelserver_args(self) -> list[str]:
        return [
            "-m", "services.modelserver",
            "--host", self.options.host,
            "--port", str(self._ports["modelserver"][0]),
            "--metrics_port", str(self._metrics["modelserver"]),
            "--model_config_file", str(self._write_model_config()),
        ]  # fmt: skip

    def _write_model_config(self) -> Path:
        """Both models (the classifier and the face detector) listed in one config file, as TF Serving is given."""
        base = self.options.model_base_path.resolve()
        path = self.base_dir / "models.config"
        path.write_text(model_config_text({name: base / name for name in SERVED_MODELS}))
        return path

    def _modelserver_env(self) -> dict[str, str]:
        options = self.options
        env = {"TAGSMITH_LOG_FORMAT": options.log_format, "TAGSMITH_LOG_LEVEL": options.log_level}
        env["TAGSMITH_GRACE_SECONDS"] = str(max(0.0, options.grace_seconds - 2))
        return env | options.extra_env.get("modelserver", {})

    def _auth_env(self, port: int) -> dict[str, str]:
        return (
            self._common_env("auth", port)
            | self._metrics_env("auth", port)
            | {
                "TAGSMITH_POSTGRES_DSN": self.dsn,
                "TAGSMITH_DATA_DIR": str(self.base_dir / "auth"),
                "TAGSMITH_TRUST_FORWARDED_FOR": "true",
            }
        )

    def _inference_env(self, port: int) -> dict[str, str]:
        return (
            self._common_env("inference", port)
            | self._metrics_env("inference", port)
            | {
                "TAGSMITH_TFSERVING_ADDR": self.addresses["modelserver"][0],
            }
        )

    def _catalog_env(self, port: int) -> dict[str, str]:
        return (
            self._common_env("catalog", port)
            | self._metrics_env("catalog", port)
            | {
                "TAGSMITH_POSTGRES_DSN": self.dsn,
                "TAGSMITH_INFERENCE_ADDR": self._joined("inference"),
                "TAGSMITH_BLOB_DIR": str(self.base_dir / "blobs"),
                "TAGSMITH_SERVICE_USERNAME": SERVICE_ACCOUNT,
                "TAGSMITH_SERVICE_PASSWORD": self._secret("catalog-service-password"),
            }
        )

    def _gateway_env(self, port: int) -> dict[str, str]:
        env = self._common_env("gateway", port) | {
            "TAGSMITH_CATALOG_ADDR": self._joined("catalog"),
            "TAGSMITH_INFERENCE_ADDR": self._joined("inference"),
        }
        if self.options.anonymous_mode:
            self.anonymous_password = self._secret("anonymous-password")
            env |= {
                "TAGSMITH_ANONYMOUS_MODE": "true",
                "TAGSMITH_ANONYMOUS_USERNAME": ANONYMOUS_USER,
                "TAGSMITH_ANONYMOUS_PASSWORD": self.anonymous_password,
            }
        return env

    # ---- lifecycle ----

    def _launch(self, name: str, args: list[str], env: dict[str, str]) -> None:
        child = Child(name, args, env=env, log_dir=self.base_dir / "logs", sink=self.options.sink)
        self.children.append(child.start())

    def _ready_check(self, name: str):
        service, replica = name.split("-")[0], _replica(name)
        if service == "gateway":
            url = self.gateway_urls[replica] + "/readyz"
            return lambda: http_ready(url)
        address = self.addresses[service][replica]
        return lambda: grpc_serving(address)

    def _wait_ready(self, deadline: float) -> None:
        for child in self.children:
            alive = lambda c=child: c.exit_code() is None  # noqa: E731
            if not wait_until(self._ready_check(child.name), deadline=deadline, alive=alive):
                raise StackError(f"{child.name} did not become ready (exit code {child.exit_code()}):\n{child.tail()}")

    def stop(self) -> None:
        """SIGTERM to every service, a grace period, SIGKILL for stragglers; then PostgreSQL. Safe to call twice."""
        for child in reversed(self.children):
            child.terminate()
        deadline = time.monotonic() + self.options.grace_seconds
        for child in reversed(self.children):
            child.wait(deadline)
        self.children = []
        if self._postgres is not None:
            self._postgres.stop()
            self._postgres = None

    def __enter__(self) -> "Stack":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _name(service: str, replica: int) -> str:
    return service if replica == 0 else f"{service}-{replica + 1}"


def _replica(name: str) -> int:
    head, _, tail = name.rpartition("-")
    return int(tail) - 1 if head and tail.isdigit() else 0
