"""Topologies for the fault tests and the per-fault results table.

Fixtures:

- ``topology``: a factory ``make(gateways=, chat=, auth=, notify=, env=) -> Topology`` on top of
  ``stack_factory`` (own nats-server, so kills cannot disturb other tests); it returns once every
  replica answers ``$SRV.PING`` and every gateway is healthy. Synchronous: call it from async
  tests through ``asyncio.to_thread``.
- ``cluster_topology``: the same on a 3-node JetStream cluster (routes between the nodes,
  ``sync_interval: always``, ``NATTER_STREAM_REPLICAS=3``, every process given all three URLs),
  as ``natter up --nats-cluster 3`` runs it.
- ``fault_results``: records one row per fault (sent, acked, lost, duplicated, recovery seconds
  and details) into a JSON file (``$NATTER_FAULT_RESULTS`` or ``<pytest basetemp>/fault-results.json``);
  ``pytest_terminal_summary`` prints the table at the end of the run.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import pytest

from natter.credentials import NatsCredentials
from natter.launcher import free_port, nats_server_process, provision, stop_together, wait_for_port
from shared.nats_auth import OPERATOR
from tests.conftest import SERVICE_NAMES, NatsServer, Stack

#: Settings every fault topology runs with (the reasons are in the comments).
FAST_ENV: dict[str, str] = {
    # A dead gateway's presence keys are swept 1 s after its heartbeat entry expired (the
    # natter_gateways bucket TTL is a fixed 30 s), so its users' user_left come at ~31-32 s.
    "NATTER_GATEWAY_HEARTBEAT_INTERVAL": "1",
    "NATTER_CHAT_JANITOR_INTERVAL_SECONDS": "1",
    "NATTER_CHAT_JANITOR_GRACE_SECONDS": "1",
    # Mention events a killed notify replica had fetched but not acked come back after 2 s.
    "NATTER_NOTIFY_ACK_WAIT": "2",
    "NATTER_NOTIFY_FETCH_TIMEOUT": "1",
}

RESULTS_KEY = pytest.StashKey[list[dict[str, Any]]]()
NOTES_KEY = pytest.StashKey[list[dict[str, Any]]]()
RESULTS_PATH_KEY = pytest.StashKey[Path]()
RESULT_COLUMNS = ("fault", "sent", "acked", "lost", "duplicated", "recovery_s")


# --- waiting for replicas ---------------------------------------------------------------------


async def _count_replicas(servers: list[str], counts: dict[str, int], timeout: float) -> None:
    nc = await nats.connect(servers=servers, connect_timeout=2)
    try:
        deadline = time.monotonic() + timeout
        while True:
            missing: dict[str, int] = {}
            for name, wanted in counts.items():
                inbox = nc.new_inbox()
                sub = await nc.subscribe(inbox)
                await nc.publish(f"$SRV.PING.{name}", b"", reply=inbox)
                ids: set[str] = set()
                try:
                    while len(ids) < wanted:
                        msg = await sub.next_msg(timeout=0.3)
                        if msg.data:  # an empty message is a "no responders" status
                            ids.add(str(json.loads(msg.data).get("id")))
                except (TimeoutError, nats.errors.TimeoutError):
                    pass
                finally:
                    await sub.unsubscribe()
                if len(ids) < wanted:
                    missing[name] = wanted - len(ids)
            if not missing:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"replicas not answering $SRV.PING: {missing}")
            await asyncio.sleep(0.2)
    finally:
        await nc.close()


def _run_async(coro: Any) -> Any:
    """Run ``coro`` on its own event loop in a worker thread (works from async tests too)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def wait_replicas(servers: list[str], counts: dict[str, int], timeout: float = 45.0) -> None:
    """Block until ``counts[name]`` distinct replicas of each service answer ``$SRV.PING.<name>``.

    Raises:
        TimeoutError: not all of them within ``timeout`` seconds.
    """
    _run_async(_count_replicas(servers, counts, timeout))


# --- topologies -------------------------------------------------------------------------------


@dataclass
class NatsCluster:
    """Three nats-server processes routed into one JetStream cluster (``natter-nats-<i>``)."""

    nodes: list[NatsServer]
    names: list[str]

    @property
    def url(self) -> str:
        """All client URLs with the operator's login, comma separated."""
        return ",".join(node.url for node in self.nodes)

    @property
    def client_url(self) -> str:
        """All client URLs without a login (what each process's ``NATS_URL`` gets)."""
        return ",".join(node.client_url for node in self.nodes)

    @property
    def credentials(self) -> NatsCredentials:
        """The logins every node accepts (one authorization block for the whole cluster)."""
        return self.nodes[0].credentials

    @property
    def servers(self) -> list[str]:
        return [node.url for node in self.nodes]

    def node_named(self, server_name: str) -> NatsServer:
        return self.nodes[self.names.index(server_name)]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@dataclass
class Topology:
    """A running isolated stack: NATS (one node or a cluster), replicas and gateways."""

    stack: Stack
    cluster: NatsCluster | None = None
    counts: dict[str, int] = field(default_factory=dict)
    #: Services that exited while starting and were started again (see :func:`_scale`).
    startup_restarts: int = 0

    @property
    def servers(self) -> list[str]:
        """NATS client URLs (one, or the three cluster nodes)."""
        return self.cluster.servers if self.cluster else [self.stack.nats.url]

    def ws_url(self, index: int = 0) -> str:
        return f"ws://127.0.0.1:{self.stack.gateway_ports[index]}/ws"

    def http_url(self, index: int = 0) -> str:
        return f"http://127.0.0.1:{self.stack.gateway_ports[index]}"

    @property
    def ws_urls(self) -> list[str]:
        return [self.ws_url(i) for i in range(len(self.stack.gateway_ports))]

    @property
    def http_urls(self) -> list[str]:
        return [self.http_url(i) for i in range(len(self.stack.gateway_ports))]

    def wait_replicas(self, timeout: float = 45.0) -> None:
        """Wait until every replica of :attr:`counts` answers (after a restart, for example)."""
        wait_replicas(self.servers, self.counts, timeout)


def _scale(stack: Stack, *, gateways: int, counts: dict[str, int], servers: list[str]) -> int:
    """Add replicas beyond the first of each service and gateways beyond the first.

    Like ``natter up``'s supervisor (and compose's ``restart: unless-stopped``), a service that
    exits while starting is started again: on a freshly formed cluster a JetStream API call in a
    service's setup can time out, and the service then exits. Returns how many restarts it took.
    """
    for name in SERVICE_NAMES:
        for index in range(1, counts[name]):
            stack.start_service(name, index)
    restarts = 0
    deadline = time.monotonic() + 60
    while True:
        try:
            wait_replicas(servers, counts, timeout=3)
            break
        except TimeoutError:
            if time.monotonic() > deadline:
                raise
        for process in stack.services.values():
            if not process.alive() and restarts < 6:
                restarts += 1
                process.start()
    while len(stack.gateways) < gateways:
        stack.start_gateway()
    return restarts


TopologyFactory = Callable[..., Topology]


def _stop_quickly(topologies: list[Topology]) -> None:
    """SIGKILL every gateway and service of ``topologies`` (they are disposable: state lives in
    the test's tmp dir), so that the ``Stack.stop`` that follows has nothing left to wait for.

    Why not SIGTERM: processes started from an ``asyncio.to_thread`` worker carry
    ``PR_SET_PDEATHSIG``, which Linux ties to the *thread* that forked them; when pytest-asyncio
    shuts the loop's executor down they all get SIGTERM at once, nats-server included, and a
    gateway's graceful stop then waits ~2 s for a NATS that is already gone.
    """
    for topo in topologies:
        for process in [*topo.stack.gateways, *topo.stack.services.values()]:
            process.kill()


@pytest.fixture
def topology(stack_factory: Callable[[dict[str, str] | None], Stack]) -> Iterator[TopologyFactory]:
    """``make(gateways=1, chat=1, auth=1, notify=1, env=None)``: an isolated stack on one
    nats-server with :data:`FAST_ENV` (+ ``env``); torn down by ``stack_factory``."""
    made: list[Topology] = []

    def make(
        *, gateways: int = 1, chat: int = 1, auth: int = 1, notify: int = 1, env: dict[str, str] | None = None
    ) -> Topology:
        stack = stack_factory({**FAST_ENV, **(env or {})})
        counts = {"auth": auth, "chat": chat, "notify": notify}
        topo = Topology(stack=stack, counts=counts)
        made.append(topo)
        topo.startup_restarts = _scale(stack, gateways=gateways, counts=counts, servers=[stack.nats.url])
        return topo

    yield make
    _stop_quickly(made)


async def _jetstream_ready(servers: list[str], timeout: float) -> None:
    """Wait until the cluster has a meta leader and can place a 3-replica stream."""
    nc = await nats.connect(servers=servers, connect_timeout=2)
    try:
        js = nc.jetstream(timeout=2)
        deadline = time.monotonic() + timeout
        while True:
            try:
                await js.add_stream(name="PROBE_R3", subjects=["probe.r3"], num_replicas=3)
                await js.delete_stream("PROBE_R3")
                return
            except Exception as error:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"JetStream cluster not ready: {error!r}") from error
                await asyncio.sleep(0.3)
    finally:
        await nc.close()


@pytest.fixture
def cluster_topology(tmp_path: Path) -> Iterator[TopologyFactory]:
    """``make(gateways=1, chat=1, auth=1, notify=1, env=None)`` on a fresh 3-node NATS cluster
    (``sync_interval: always``, ``NATTER_STREAM_REPLICAS=3``); stopped after the test."""
    made: list[Topology] = []

    def make(
        *, gateways: int = 1, chat: int = 1, auth: int = 1, notify: int = 1, env: dict[str, str] | None = None
    ) -> Topology:
        client_ports = [free_port() for _ in range(3)]
        route_ports = [free_port() for _ in range(3)]
        names = [f"natter-nats-{i}" for i in range(3)]
        credentials = NatsCredentials.generate()
        nodes = []
        for index, (port, route) in enumerate(zip(client_ports, route_ports, strict=True)):
            process = nats_server_process(
                port=port,
                store_dir=tmp_path / f"nats-node-{index}",
                name=names[index],
                cluster_port=route,
                routes=[f"nats://127.0.0.1:{other}" for other in route_ports if other != route],
                log_path=tmp_path / f"nats-node-{index}.log",
                sync_always=True,
                authorization=credentials.authorization(),
            )
            process.die_with_parent = True
            store = tmp_path / f"nats-node-{index}"
            nodes.append(NatsServer(process=process, port=port, store_dir=store, credentials=credentials))
        cluster = NatsCluster(nodes=nodes, names=names)
        stack = Stack(
            nats=cluster,  # type: ignore[arg-type]  # duck-typed: .url, .client_url, .credentials
            tmp=tmp_path / "stack",
            env={**FAST_ENV, "NATTER_STREAM_REPLICAS": "3", **(env or {})},
        )
        topo = Topology(stack=stack, cluster=cluster, counts={"auth": auth, "chat": chat, "notify": notify})
        made.append(topo)
        for node in nodes:
            node.process.start()
        for node in nodes:
            wait_for_port(node.port)
        _run_async(_jetstream_ready(cluster.servers, 60.0))
        provision(cluster.client_url, login=credentials.login(OPERATOR), replicas=3)
        for name in SERVICE_NAMES:
            stack.start_service(name, 0)
        topo.startup_restarts = _scale(stack, gateways=gateways, counts=topo.counts, servers=cluster.servers)
        return topo

    yield make
    _stop_quickly(made)
    for topo in made:
        topo.stack.stop()
        assert topo.cluster is not None
        stop_together([node.process for node in topo.cluster.nodes])


# --- results ----------------------------------------------------------------------------------


def _rows(config: pytest.Config) -> list[dict[str, Any]]:
    return config.stash.setdefault(RESULTS_KEY, [])


def _notes(config: pytest.Config) -> list[dict[str, Any]]:
    return config.stash.setdefault(NOTES_KEY, [])


class FaultResults:
    """Rows of the results table and other measurements; each change rewrites the JSON file."""

    def __init__(self, rows: list[dict[str, Any]], notes: list[dict[str, Any]], path: Path) -> None:
        self.rows = rows
        self.notes = notes
        self.path = path

    def record(self, row: dict[str, Any]) -> None:
        """Add (or replace) one fault's row: at least the keys of :data:`RESULT_COLUMNS`."""
        missing = [key for key in RESULT_COLUMNS if key not in row]
        assert not missing, f"result row lacks {missing}"
        self.rows[:] = [r for r in self.rows if r["fault"] != row["fault"]] + [row]
        self._write()

    def note(self, name: str, value: float, unit: str) -> None:
        """Record one other measurement (a latency, a time to close...)."""
        self.notes[:] = [n for n in self.notes if n["name"] != name] + [
            {"name": name, "value": value, "unit": unit}
        ]
        self._write()

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "schema": "natter-fault-results/1",
            "machine": _machine(),
            "faults": self.rows,
            "measurements": self.notes,
        }
        self.path.write_text(json.dumps(document, indent=2, default=str) + "\n")


def _machine() -> dict[str, Any]:
    return {"nproc": os.cpu_count(), "loadavg": [round(x, 2) for x in os.getloadavg()]}


@pytest.fixture
def fault_results(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> FaultResults:
    config = request.config
    if RESULTS_PATH_KEY not in config.stash:
        env_path = os.environ.get("NATTER_FAULT_RESULTS")
        config.stash[RESULTS_PATH_KEY] = (
            Path(env_path) if env_path else tmp_path_factory.getbasetemp() / "fault-results.json"
        )
    return FaultResults(_rows(config), _notes(config), config.stash[RESULTS_PATH_KEY])


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    rows, notes = _rows(config), _notes(config)
    if not rows and not notes:
        return
    terminalreporter.section("natter fault results (measured from the clients' side)")
    if rows:
        table = [list(RESULT_COLUMNS)] + [[_cell(row.get(key)) for key in RESULT_COLUMNS] for row in rows]
        widths = [max(len(line[i]) for line in table) for i in range(len(RESULT_COLUMNS))]
        for index, line in enumerate(table):
            cells = [line[0].ljust(widths[0])]
            cells += [cell.rjust(width) for cell, width in zip(line[1:], widths[1:], strict=True)]
            terminalreporter.write_line("  ".join(cells))
            if index == 0:
                terminalreporter.write_line("  ".join("-" * width for width in widths))
    for note in notes:
        terminalreporter.write_line(f"{note['name']}: {_cell(note['value'])} {note['unit']}")
    terminalreporter.write_line(f"results: {config.stash.get(RESULTS_PATH_KEY, '?')}")
