"""Starting, provisioning and stopping what is measured.

- natter: its own isolated stack on free loopback ports, with a temp data dir: a nats-server
  (JetStream, file storage; ``sync_interval: always`` as ``natter up`` runs it, unless
  ``--no-nats-sync``), one auth, chat and notify process and one gateway (``--gateways N``:
  N gateways on their own ports, as an operator scales them out), all started with
  :mod:`natter.launcher` exactly as ``natter up`` starts them. Users are registered and logged in
  once through the HTTP API (argon2 is slow on purpose), and their tokens are shared by many
  sockets. Benchmark-only settings, passed as environment variables: the per-socket rate limit is
  raised (``NATTER_GATEWAY_RATE_PER_SECOND``/``RATE_BURST`` = 100000) so that one sender socket
  can send hundreds of messages per second, access tokens live an hour
  (``NATTER_AUTH_ACCESS_TTL_SECONDS=3600``) so that long runs do not see them expire, and the
  cap on unauthenticated sockets per client address (50 by default, an edge defence against one
  host holding many idle handshakes) is lifted to the gateway-wide cap, because every load
  generator socket comes from 127.0.0.1 and ``--connect-concurrency`` opens up to 1000 at once;
  for the same reason the registration bucket per address (``NATTER_AUTH_REGISTER_BURST``, 100
  by default) is raised, so that ``--users 1000`` can register its accounts.
- the references in ``benchmarks/reference/`` under uvicorn, one process each; they accept any
  token (there is no JWT to check).

Every process runs in its own process group and is stopped with SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from natter.bench.spec import TargetKind
from natter.credentials import NatsCredentials
from natter.launcher import (
    ManagedProcess,
    free_port,
    nats_server_process,
    provision,
    service_process,
    stop_together,
    wait_for_port,
    wait_services,
)
from shared.nats_auth import OPERATOR

logger = logging.getLogger(__name__)

#: Where the reference servers live (a source checkout: <repo>/benchmarks/reference).
REFERENCE_DIR = Path(__file__).resolve().parents[2] / "benchmarks" / "reference"
REFERENCE_SCRIPTS = {TargetKind.fastapi: "fastapi_server.py", TargetKind.socketio: "socketio_server.py"}
#: Environment for natter's processes during a benchmark (see the module docstring).
NATTER_BENCH_ENV = {
    "NATTER_GATEWAY_RATE_PER_SECOND": "100000",
    "NATTER_GATEWAY_RATE_BURST": "100000",
    "NATTER_AUTH_ACCESS_TTL_SECONDS": "3600",
    "NATTER_GATEWAY_MAX_PENDING_PER_ADDRESS": "2000",
    "NATTER_AUTH_REGISTER_BURST": "100000",
}
BENCH_PASSWORD = "bench-password-1"
#: Room log shard streams of a benchmarked natter (natter's default, NATTER_CHAT_ROOM_SHARDS);
#: the JetStream floor of a rooms compare uses the same number of streams.
ROOM_SHARDS = 4
READY_TIMEOUT = 60.0


class TargetError(Exception):
    """A target could not be started or provisioned; the text says why (and where the logs are)."""


@dataclass
class RunningTarget:
    """A started target: where to connect, which processes to measure, tokens to use.

    ``url``: ``ws://127.0.0.1:<port>/ws`` (natter, fastapi) or ``http://127.0.0.1:<port>``
    (socketio); ``urls`` has one per process that holds sockets (several natter gateways), the
    first being ``url``. ``main`` is the label of the process that holds the sockets
    (``gateway`` or ``server``): its RSS is what idle connections cost.
    """

    kind: TargetKind
    url: str
    protocol: str
    main: str
    workdir: Path
    tiers: list[list[tuple[str, ManagedProcess]]] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    http_url: str = ""
    urls: list[str] = field(default_factory=list)
    #: nats-server's monitoring endpoint (natter only): ``http://127.0.0.1:<port>``
    nats_monitor_url: str = ""
    #: each natter process's Prometheus endpoint (gc pauses): ``{label: url}``
    metrics_urls: dict[str, str] = field(default_factory=dict)

    def url_for(self, worker: int) -> str:
        """The URL load-generator worker ``worker`` connects to: gateway ``worker mod N``."""
        return self.urls[worker % len(self.urls)] if self.urls else self.url

    def pids(self) -> dict[str, int]:
        """``{label: pid}`` of every process of the target."""
        return {label: process.pid for tier in self.tiers for label, process in tier if process.proc}

    def dead(self) -> list[str]:
        """Labels of processes that exited."""
        return [label for tier in self.tiers for label, process in tier if not process.alive()]

    def stop(self) -> None:
        """Stop the tiers in order (gateway, services, NATS), each within 10 s."""
        for tier in self.tiers:
            stop_together([process for _, process in tier], grace=10.0)

    def log_hint(self) -> str:
        return f"logs in {self.workdir / 'logs'}"


def check_available(kind: TargetKind) -> None:
    """Raise :class:`TargetError` when ``kind`` cannot run here (missing script or package)."""
    if kind is TargetKind.natter:
        return
    script = REFERENCE_DIR / REFERENCE_SCRIPTS[kind]
    if not script.exists():
        raise TargetError(f"{script} not found: the references need a source checkout of natter")
    if kind is TargetKind.socketio:
        for module in ("socketio", "aiohttp"):
            if importlib.util.find_spec(module) is None:
                raise TargetError(
                    f"the socketio target needs python-socketio with its asyncio client "
                    f"({module} is missing): pip install 'natter[bench]'"
                )


def start_target(
    kind: TargetKind, *, workdir: Path, users: int, run_id: str, nats_sync: bool, gateways: int = 1
) -> RunningTarget:
    """Start ``kind`` under ``workdir`` and provision ``users`` tokens (natter: with ``gateways``
    gateway processes).

    Raises:
        TargetError: a process did not come up within :data:`READY_TIMEOUT` seconds.
    """
    check_available(kind)
    if kind is TargetKind.natter:
        return _start_natter(
            workdir=workdir, users=users, run_id=run_id, nats_sync=nats_sync, gateways=gateways
        )
    return _start_reference(kind, workdir=workdir, users=users, run_id=run_id)


def _start_reference(kind: TargetKind, *, workdir: Path, users: int, run_id: str) -> RunningTarget:
    port = free_port()
    script = REFERENCE_DIR / REFERENCE_SCRIPTS[kind]
    process = ManagedProcess(
        name="server",
        argv=[sys.executable, str(script), "--host", "127.0.0.1", "--port", str(port)],
        env=_child_env(),
        log_path=workdir / "logs" / "server.log",
        die_with_parent=True,
    )
    protocol = "socketio" if kind is TargetKind.socketio else "ws"
    url = f"http://127.0.0.1:{port}" if protocol == "socketio" else f"ws://127.0.0.1:{port}/ws"
    target = RunningTarget(
        kind=kind,
        url=url,
        protocol=protocol,
        main="server",
        workdir=workdir,
        tiers=[[("server", process)]],
        http_url=f"http://127.0.0.1:{port}",
    )
    process.start()
    try:
        wait_for_port(port, timeout=READY_TIMEOUT)
    except TimeoutError as error:
        target.stop()
        raise TargetError(f"{kind.value} reference did not listen on {port}; {target.log_hint()}") from error
    target.tokens = [f"bench{run_id}u{i}" for i in range(users)]
    return target


def _child_env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _start_natter(*, workdir: Path, users: int, run_id: str, nats_sync: bool, gateways: int) -> RunningTarget:
    logs = workdir / "logs"
    nats_port = free_port()
    nats_url = f"nats://127.0.0.1:{nats_port}"
    monitor_port = free_port()
    credentials = NatsCredentials.generate()  # as natter up runs it: one login per tier
    nats = nats_server_process(
        port=nats_port,
        store_dir=workdir / "nats",
        log_path=logs / "nats.log",
        sync_always=nats_sync,
        authorization=credentials.authorization(),
        monitor_port=monitor_port,
    )
    metrics_ports = {name: free_port() for name in ("auth", "chat", "notify")}
    services = [
        service_process(
            name,
            nats_url=nats_url,
            env={**NATTER_BENCH_ENV, f"NATTER_{name.upper()}_METRICS_PORT": str(metrics_ports[name])},
            log_path=logs / f"{name}.log",
            credentials=credentials,
        )
        for name in ("auth", "chat", "notify")
    ]
    # Labels: "gateway" (the one idle and connect measure), then "gateway-2", "gateway-3", ...
    front: list[tuple[str, ManagedProcess, int]] = []
    for n in range(1, gateways + 1):
        label, port = ("gateway" if n == 1 else f"gateway-{n}"), free_port()
        process = service_process(
            "gateway",
            nats_url=nats_url,
            env=NATTER_BENCH_ENV,
            port=port,
            log_path=logs / f"{label}.log",
            credentials=credentials,
        )
        front.append((label, process, port))
    for process in (nats, *services, *(p for _, p, _ in front)):
        process.die_with_parent = True
    urls = [f"ws://127.0.0.1:{port}/ws" for _, _, port in front]
    target = RunningTarget(
        kind=TargetKind.natter,
        url=urls[0],
        urls=urls,
        protocol="ws",
        main="gateway",
        workdir=workdir,
        tiers=[
            [(label, p) for label, p, _ in front],
            [(p.name.split("-")[0], p) for p in services],
            [("nats", nats)],
        ],
        http_url=f"http://127.0.0.1:{front[0][2]}",
        nats_monitor_url=f"http://127.0.0.1:{monitor_port}",
        metrics_urls={
            **{label: f"http://127.0.0.1:{port}/metrics" for label, _, port in front},
            **{name: f"http://127.0.0.1:{port}/metrics" for name, port in metrics_ports.items()},
        },
    )
    try:
        nats.start()
        wait_for_port(nats_port, timeout=READY_TIMEOUT)
        provision(nats_url, login=credentials.login(OPERATOR), room_shards=ROOM_SHARDS)
        for process in services:
            process.start()
        _wait_services(credentials.url(OPERATOR, nats_url), ("auth", "chat", "notify"))
        for _, process, _ in front:
            process.start()
        for _, _, port in front:
            _wait_healthy(f"http://127.0.0.1:{port}")
        target.tokens = asyncio.run(register_users(target.http_url, users=users, run_id=run_id))
    except (TimeoutError, OSError, httpx.HTTPError, TargetError) as error:
        target.stop()
        raise TargetError(f"natter did not start: {error}; {target.log_hint()}") from error
    return target


def _wait_services(nats_url: str, names: tuple[str, ...]) -> None:
    wait_services(nats_url, names, READY_TIMEOUT)


def _wait_healthy(base_url: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        try:
            if httpx.get(f"{base_url}/health", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{base_url}/health not healthy after {READY_TIMEOUT:.0f}s")
        time.sleep(0.1)


async def register_users(base_url: str, *, users: int, run_id: str, concurrency: int = 4) -> list[str]:
    """Register and log in ``users`` accounts ``bench_<run_id>_<i>``; return their access tokens.

    Raises:
        TargetError: a registration or login was refused.
    """
    gate = asyncio.Semaphore(concurrency)

    async def one(http: httpx.AsyncClient, i: int) -> str:
        username = f"bench_{run_id}_{i}"
        body = {"username": username, "password": BENCH_PASSWORD}
        async with gate:
            response = await http.post("/api/auth/register", json=body)
            if response.status_code != 201:
                raise TargetError(f"register {username}: HTTP {response.status_code} {response.text[:200]}")
            response = await http.post("/api/auth/login", json=body)
            if response.status_code != 200:
                raise TargetError(f"login {username}: HTTP {response.status_code} {response.text[:200]}")
            return str(response.json()["access_token"])

    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        return list(await asyncio.gather(*(one(http, i) for i in range(users))))


def remove_workdir(path: Path) -> None:
    """Delete a run's temp dir (NATS store and logs)."""
    shutil.rmtree(path, ignore_errors=True)
