"""gRPC server bootstrap: health, reflection, metrics, interceptors, graceful SIGTERM."""

import asyncio
import errno
import gc
import logging
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from wsgiref.simple_server import WSGIServer

import grpc
import uvloop
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, start_http_server

from services.common.channels import MAX_MESSAGE_BYTES, open_channel
from services.common.health import Check, DependencyWatcher
from services.common.interceptors import AuthInterceptor, ObservabilityInterceptor, RpcMetrics
from services.common.settings import ServiceSettings, TokenSettings
from services.common.tokens import auth_verifier

log = logging.getLogger(__name__)


T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on uvloop, for every service and command: it cut the catalog's and inference's CPU per upload
    by 10-15% against the standard loop (measured with `python -m bench e2e`). A port it cannot listen on ends
    the process with one line instead of a traceback."""
    try:
        return uvloop.run(main)
    except CannotListen as exc:
        sys.exit(str(exc))


class CannotListen(Exception):
    """A server cannot listen where its settings say; the message names the address and the setting to change."""

    def __init__(self, host: str, port: int, setting: str) -> None:
        if port_in_use(host, port):
            advice = f"port {port} is in use by another program; set {setting} to another port (0 picks a free one)"
        else:
            advice = f"check TAGSMITH_HOST and {setting}"
        super().__init__(f"cannot listen on {host}:{port}: {advice}")


def port_in_use(host: str, port: int) -> bool:
    """Whether another program listens on host:port, found by binding it as the servers do (SO_REUSEADDR, so a
    closing connection's TIME_WAIT does not count)."""
    address = host.strip("[]")
    try:
        with socket.create_server((address, port), family=socket.AF_INET6 if ":" in address else socket.AF_INET):
            return False
    except OSError as exc:
        return exc.errno == errno.EADDRINUSE


def check_ports_free(settings: ServiceSettings) -> None:
    """Raises CannotListen for a set port (gRPC or metrics) another program holds: a service that loads for long
    calls it first, so it fails at once and not after the load."""
    for port, setting in ((settings.port, "TAGSMITH_PORT"), (settings.metrics_port, "TAGSMITH_METRICS_PORT")):
        if port and port_in_use(settings.host, port):
            raise CannotListen(settings.host, port, setting)


@dataclass
class RunningServer:
    """A started gRPC server with its health service and optional metrics endpoint."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    service_names: Sequence[str]
    metrics_port: int | None = None
    # The server's own Prometheus registry, for service-specific metrics next to the per-RPC ones.
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    # Set when the server watches its dependencies: their last states, for readiness and status pages.
    watcher: DependencyWatcher | None = None
    # The service's servicer, for tests that read its state (inference's batcher statistics).
    servicer: object | None = None
    _on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    _metrics_http: WSGIServer | None = None
    _watching: asyncio.Task[None] | None = None

    def on_stop(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Registers a cleanup (close pools, channels) run after the server stops."""
        self._on_stop.append(callback)

    async def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *self.service_names):
            await self.health.set(name, status)

    async def set_dependency(self, name: str, reachable: bool) -> None:
        """Each watched dependency is also a health service name of its own, for status pages."""
        status = health_pb2.HealthCheckResponse.SERVING if reachable else health_pb2.HealthCheckResponse.NOT_SERVING
        await self.health.set(name, status)

    async def set_ready(self, ready: bool) -> None:
        """Readiness: the named services follow the dependencies; "" stays SERVING while the process lives, since
        it answers liveness probes, and restarting a service does not bring its database back."""
        status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in self.service_names:
            await self.health.set(name, status)

    async def watch(self, dependencies: Mapping[str, Check]) -> None:
        """Readiness follows the dependencies' checks: checked once now, then watched in the background."""
        self.watcher = DependencyWatcher(
            dependencies, on_change=self.set_ready, on_dependency=self.set_dependency, registry=self.registry
        )
        await self.watcher.check_once()
        self._watching = asyncio.create_task(self.watcher.run())

    def serve_metrics(self, *, host: str, port: int) -> None:
        """Publishes the registry over HTTP; port 0 binds a free port, recorded in `metrics_port`."""
        self._metrics_http, _ = start_http_server(port, addr=host, registry=self.registry)
        self.metrics_port = self._metrics_http.server_port

    async def stop(self, grace: float | None = None) -> None:
        """Reports NOT_SERVING, lets in-flight calls finish within `grace`, then runs cleanups."""
        await self.health.enter_graceful_shutdown()
        if self._watching is not None:
            self._watching.cancel()
        await self.server.stop(grace)
        for callback in reversed(self._on_stop):
            await callback()
        if self._metrics_http is not None:
            self._metrics_http.shutdown()


async def start_server(
    settings: ServiceSettings,
    *,
    register: Callable[[grpc.aio.Server], None],
    service_names: Sequence[str],
    interceptors: Iterable[grpc.aio.ServerInterceptor] = (),
    registry: CollectorRegistry | None = None,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
    dependencies: Mapping[str, Check] | None = None,
    servicer: object | None = None,
) -> RunningServer:
    """Builds, binds and starts a server; `register` adds the servicers. Port 0 binds a free port.

    Pass `registry` to publish service-specific metrics beside the per-RPC ones. With `dependencies` (name ->
    check), the named services report NOT_SERVING while any check fails and SERVING again once all pass, and each
    dependency's own state is the health status of its name.
    """
    registry = registry if registry is not None else CollectorRegistry()
    server = grpc.aio.server(
        interceptors=[ObservabilityInterceptor(RpcMetrics(registry)), *interceptors],
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            # Clients re-resolve DNS only when a connection closes: cycling connections lets them find new pods.
            ("grpc.max_connection_age_ms", 300_000),
            ("grpc.max_connection_age_grace_ms", 30_000),
            # gRPC shares a port with any other gRPC server by default: a second copy would start on a port in use
            # and take half of its calls. Off, the bind fails instead.
            ("grpc.so_reuseport", 0),
        ],
    )
    register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection([*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    port = _add_port(server, settings)
    await server.start()
    running = RunningServer(
        server=server,
        port=port,
        health=health_servicer,
        service_names=service_names,
        registry=registry,
        servicer=servicer,
    )
    await running.set_serving(True)
    if dependencies:
        await running.watch(dependencies)
    if settings.metrics_port is not None:
        await _serve_metrics(running, settings)
    log.info("serving on %s:%d", settings.host, port, extra={"metrics_port": running.metrics_port})
    return running


def _add_port(server: grpc.aio.Server, settings: ServiceSettings) -> int:
    """Binds the gRPC port. A port in use is found first: gRPC would log a line of its own and raise a bare error."""
    if settings.port and port_in_use(settings.host, settings.port):
        raise CannotListen(settings.host, settings.port, "TAGSMITH_PORT")
    try:
        return server.add_insecure_port(f"{settings.host}:{settings.port}")
    except RuntimeError:
        raise CannotListen(settings.host, settings.port, "TAGSMITH_PORT") from None


async def _serve_metrics(running: RunningServer, settings: ServiceSettings) -> None:
    """Publishes the metrics; a port in use stops the server and names the setting that moves it."""
    try:
        running.serve_metrics(host=settings.host, port=settings.metrics_port or 0)
    except OSError:
        await running.stop(0)
        raise CannotListen(settings.host, settings.metrics_port or 0, "TAGSMITH_METRICS_PORT") from None


def token_verification(
    settings: TokenSettings, *, open_methods: Iterable[str] = ()
) -> tuple[AuthInterceptor, grpc.aio.Channel]:
    """The auth interceptor for a service that trusts the auth service's published keys.

    Returns the channel used to fetch the keys so the caller can close it on shutdown.
    """
    channel = open_channel(settings.auth_addr, default_timeout=5.0)
    return AuthInterceptor(auth_verifier(settings, channel), open_methods=open_methods), channel


YOUNG_COLLECTION_THRESHOLD = 10_000


def freeze_start_up_objects() -> None:
    """Takes every object alive once a service has started (modules, protobuf descriptors, the vocabulary, pools)
    out of the garbage collector's sight.

    CPython's full collection walks every tracked object; it runs on its own after about a hundred young
    collections, and a page of 50 images makes more than one of those. In the catalog the walk covered some 73k
    start-up objects and took 35-220 ms on the shared 2-core machine, once every 45-60 page requests: the tail of
    list and search (p50 12 ms, p99 45-65 ms at 100k images on a quiet machine). Start-up objects live as long as
    the process, so they are never garbage; frozen, a full collection walks only what was made since, 0.2-1 ms in
    the same runs. Objects freed by reference counting are freed as before.

    No collection first: it would free only what start-up left in cycles, and run once the port is open, a
    collection held the first callers' connection attempts long enough for gRPC's reconnect backoff to make the
    catalog answer them a second and a half late.

    Young collections then wait for YOUNG_COLLECTION_THRESHOLD new objects instead of 700: a page of 50 images makes
    some 8,000 (its rows' labels and tags), so the default ran about ten collections and a full one every few
    pages; fewer cut the catalog's CPU per page by 0.3-0.5 ms (A/B at 100k images, about 5 %). Only garbage in
    reference cycles waits for a collection, so memory use hardly changes.
    """
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *gc.get_threshold()[1:])


async def serve_until_signalled(running: RunningServer, *, grace: float) -> None:
    """Freezes the start-up objects (see freeze_start_up_objects), waits for SIGTERM or SIGINT, then stops
    gracefully."""
    freeze_start_up_objects()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down, grace %.1fs", grace)
    await running.stop(grace)
