"""The operator's command line, run as an operator runs it: ``python -m natter ...`` subprocesses,
a real embedded nats-server, the real services and gateways.

How the tests see ``natter up``'s children: while it runs, ``natter up`` keeps
``<data-dir>/pids.json`` = ``{"natter_up": pid, "processes": {label: pid}}`` (rewritten on each
restart, removed on exit). Every child leads its own process group, so after ``natter up`` exits
the tests scan ``/proc/*/stat`` for any live process in one of those groups, or whose parent is
``natter up``: there must be none.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import nats
import pytest
from nats.js.api import StreamConfig

from natter.credentials import CREDENTIALS_FILE, NatsCredentials
from natter.launcher import free_port, nats_server_process, service_process, wait_for_port
from natter.up import port_is_free
from shared import __version__, subjects
from shared.nats_auth import OPERATOR
from shared.room_shards import stream_name
from tests.conftest import NatsServer as NatsServerFixture
from tests.conftest import wait_http_healthy

#: Settings that choose the CLI's NATS login; tests set them explicitly or not at all.
LOGIN_ENV = ("NATTER_NATS_USER", "NATTER_NATS_PASSWORD", "NATTER_DATA_DIR")
READY_TIMEOUT = 90.0
STOP_TIMEOUT = 20.0


def free_port_range(count: int) -> int:
    """A port ``p`` such that ``p .. p+count-1`` were all free a moment ago."""
    for _ in range(200):
        first = free_port()
        if first + count - 1 <= 65535 and all(port_is_free("127.0.0.1", first + i) for i in range(1, count)):
            return first
    raise RuntimeError(f"no {count} consecutive free ports")


def live_processes() -> list[tuple[int, int, int, str]]:
    """``(pid, ppid, pgid, state)`` of every process that is not a zombie (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        state, ppid, pgid = fields[0], int(fields[1]), int(fields[2])
        if state != "Z":
            found.append((int(entry.name), ppid, pgid, state))
    return found


@dataclass
class UpRun:
    """One ``natter up`` subprocess with its ports, data dir and captured output."""

    proc: subprocess.Popen[bytes]
    data_dir: Path
    port: int
    nats_port: int
    stdout_path: Path
    stderr_path: Path

    @property
    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.nats_port}"

    def operator_url(self, port: int | None = None) -> str:
        """The NATS URL with the operator's login ``natter up`` generated into its data dir."""
        credentials = NatsCredentials.load(self.data_dir / CREDENTIALS_FILE)
        assert credentials is not None, "natter up wrote no NATS credentials"
        return credentials.url(OPERATOR, f"nats://127.0.0.1:{port or self.nats_port}")

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def pids(self) -> dict[str, int]:
        data = json.loads((self.data_dir / "pids.json").read_text())
        assert data["natter_up"] == self.proc.pid
        return {label: int(pid) for label, pid in data["processes"].items()}

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Until ``natter up`` printed that it is ready (it checked NATS, services, /health)."""
        deadline = time.monotonic() + timeout
        while "Press Ctrl-C to stop" not in self.stdout():
            if self.proc.poll() is not None:
                pytest.fail(f"natter up exited {self.proc.returncode}:\n{self.stdout()}\n{self.stderr()}")
            if time.monotonic() > deadline:
                pytest.fail(f"natter up not ready after {timeout}s:\n{self.stdout()}\n{self.stderr()}")
            time.sleep(0.1)

    def stop(self, sig: int = signal.SIGINT, timeout: float = STOP_TIMEOUT) -> int:
        """Send ``sig`` and return the exit code (fails the test if it takes over ``timeout``)."""
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"natter up still running {timeout}s after {sig!r}:\n{self.stderr()}")

    def assert_nothing_left(self, children: dict[str, int]) -> None:
        groups = set(children.values())
        left = [p for p in live_processes() if p[2] in groups or p[1] == self.proc.pid]
        assert left == [], f"processes left behind (pid, ppid, pgid, state): {left}"


#: ``natter_up(*extra_args, gateways=N)`` starts one ``natter up``.
StartUp = Callable[..., UpRun]


def service_token(
    nats_url: str,
    *args: str,
    data_dir: Path | None,
    timeout: float = 30.0,
    env: dict[str, str] | None = None,
    command: str = "service-token",
) -> subprocess.CompletedProcess[str]:
    """``natter service-token ARGS [--data-dir DATA_DIR]`` against ``nats_url`` (``env`` on top
    of this process's environment without its NATS login settings)."""
    inherited = {k: v for k, v in os.environ.items() if k not in LOGIN_ENV}
    env = {**inherited, "NATS_URL": nats_url, **(env or {})}
    where = ["--data-dir", str(data_dir)] if data_dir is not None else []
    return subprocess.run(
        [sys.executable, "-m", "natter", command, *args, *where],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def credentials_env(run: UpRun, tier: str) -> dict[str, str]:
    """``NATTER_NATS_USER`` / ``NATTER_NATS_PASSWORD`` of ``tier`` from ``natter up``'s data dir."""
    credentials = NatsCredentials.load(run.data_dir / CREDENTIALS_FILE)
    assert credentials is not None
    return credentials.env(tier)


def jwt_claims(token: str) -> dict[str, object]:
    """The (unverified) payload of a compact JWS."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


@pytest.fixture
def natter_up(tmp_path: Path) -> Iterator[StartUp]:
    """Start ``python -m natter up ...`` on free ports; whatever a test leaves running is killed."""
    runs: list[UpRun] = []

    def start(*args: str, gateways: int = 1) -> UpRun:
        data_dir = tmp_path / f"natter-{len(runs)}"
        port = free_port_range(gateways)
        nats_port = free_port()
        stdout_path = tmp_path / f"up-{len(runs)}.out"
        stderr_path = tmp_path / f"up-{len(runs)}.err"
        env = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
        env["COLUMNS"] = "200"
        argv = [sys.executable, "-m", "natter", "up", "--port", str(port), "--nats-port", str(nats_port)]
        argv += ["--data-dir", str(data_dir), "--gateways", str(gateways), *args]
        with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
            proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env, start_new_session=True)
        run = UpRun(proc, data_dir, port, nats_port, stdout_path, stderr_path)
        runs.append(run)
        return run

    yield start
    for run in runs:
        if run.proc.poll() is None:
            children = {}
            try:
                children = run.pids()
            except (OSError, ValueError, AssertionError):
                pass
            run.proc.send_signal(signal.SIGTERM)
            try:
                run.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                run.proc.kill()
                run.proc.wait(timeout=10)
            for pid in children.values():
                try:
                    os.killpg(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


def test_up_serves_mints_a_service_token_and_stops_cleanly_on_ctrl_c(natter_up: StartUp) -> None:
    run = natter_up()
    run.wait_ready()
    base = f"http://127.0.0.1:{run.port}"

    health = httpx.get(f"{base}/health", timeout=5)
    assert health.status_code == 200
    assert health.json()["status"] == "healthy"
    children = run.pids()
    assert set(children) == {"nats", "auth-0", "chat-0", "notify-0", "gateway-0"}
    for label in children:
        assert (run.data_dir / "logs" / f"{label}.log").exists()
    assert (run.data_dir / "nats" / "jetstream").is_dir()
    out = run.stdout()
    assert base in out and str(children["gateway-0"]) in out and "ready" in out

    minted = service_token(run.nats_url, "ci", data_dir=run.data_dir)
    assert minted.returncode == 0, minted.stderr
    token = minted.stdout.strip()
    assert minted.stdout == token + "\n", "stdout must hold only the token"
    assert len(token.split(".")) == 3 and all(token.split("."))
    claims = jwt_claims(token)
    assert claims["sub"] == "svc-ci"
    assert claims["role"] == "service"
    broadcast = httpx.post(
        f"{base}/api/notifications/broadcast",
        json={"title": "deploy", "message": "done", "notification_type": "info"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert broadcast.status_code == 202, broadcast.text

    # The operator's credentials are found through $NATTER_DATA_DIR too; without them NATS
    # refuses the CLI (only the operator may ask auth.service_token).
    via_env = service_token(run.nats_url, "ci2", data_dir=None, env={"NATTER_DATA_DIR": str(run.data_dir)})
    assert via_env.returncode == 0 and jwt_claims(via_env.stdout.strip())["sub"] == "svc-ci2", via_env.stderr
    refused = service_token(run.nats_url, "ci3", data_dir=run.data_dir.parent / "elsewhere")
    assert refused.returncode == 1 and refused.stdout == ""
    assert "anonymous" in refused.stderr and "--data-dir" in refused.stderr, refused.stderr
    as_gateway = service_token(
        run.nats_url, "ci4", data_dir=None, env=credentials_env(run, "gateway"), timeout=60
    )
    assert as_gateway.returncode == 1 and as_gateway.stdout == "", as_gateway.stderr
    # No NATTER_CHAT_ATTACHMENTS_MAX_BYTES: natter up caps the attachments at a quarter of the
    # disk under its data dir (docs/security.md), so uploads cannot take the room logs' storage.
    attachments = asyncio.run(_stream_config(run.operator_url(), subjects.OBJ_ATTACHMENTS_STREAM))
    free = shutil.disk_usage(run.data_dir).free
    assert attachments.max_bytes is not None and 0.2 * free < attachments.max_bytes < 0.3 * free
    assert "attachments may hold" in run.stderr() + run.stdout()
    provisioned = service_token(run.nats_url, data_dir=run.data_dir, command="provision")
    assert provisioned.returncode == 0 and "ROOMS_0" in provisioned.stdout, provisioned.stderr
    # `natter provision` where it cannot see the NATS store leaves the files unbounded, and says
    # so; shown the store (compose mounts it read-only) it caps them as natter up does.
    assert "NATTER_CHAT_ATTACHMENTS_MAX_BYTES" in provisioned.stderr, provisioned.stderr
    store = str(run.data_dir / "nats")
    shown = service_token(run.nats_url, "--nats-store-dir", store, data_dir=run.data_dir, command="provision")
    assert shown.returncode == 0 and "attachments may hold" in shown.stderr, shown.stderr
    attachments = asyncio.run(_stream_config(run.operator_url(), subjects.OBJ_ATTACHMENTS_STREAM))
    assert attachments.max_bytes is not None and 0.2 * free < attachments.max_bytes < 0.3 * free

    assert run.stop(signal.SIGINT) == 0
    run.assert_nothing_left(children)
    assert not (run.data_dir / "pids.json").exists()
    assert "stopped" in run.stdout()


def test_up_with_two_gateways_serves_consecutive_ports_and_stops_on_sigterm(natter_up: StartUp) -> None:
    run = natter_up(gateways=2)
    run.wait_ready()
    for port in (run.port, run.port + 1):
        response = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
        assert response.status_code == 200, (port, response.text)
    children = run.pids()
    assert {"gateway-0", "gateway-1"} <= set(children)
    assert run.stop(signal.SIGTERM) == 0
    run.assert_nothing_left(children)


@pytest.mark.slow
def test_up_restarts_a_service_killed_with_sigkill(natter_up: StartUp) -> None:
    run = natter_up()
    run.wait_ready()
    before = run.pids()
    os.killpg(before["auth-0"], signal.SIGKILL)

    deadline = time.monotonic() + 30
    while True:
        after = run.pids()
        if after["auth-0"] != before["auth-0"]:
            break
        assert time.monotonic() < deadline, "auth-0 was not restarted"
        time.sleep(0.1)
    assert {k: v for k, v in after.items() if k != "auth-0"} == {
        k: v for k, v in before.items() if k != "auth-0"
    }
    while True:  # the new replica answers once it registered its endpoints
        minted = service_token(run.nats_url, "healed", data_dir=run.data_dir)
        if minted.returncode == 0:
            break
        assert time.monotonic() < deadline, minted.stderr
        time.sleep(0.2)
    assert jwt_claims(minted.stdout.strip())["sub"] == "svc-healed"
    assert "auth-0" in run.stderr() and "SIGKILL" in run.stderr()

    assert run.stop(signal.SIGINT) == 0
    run.assert_nothing_left({**before, **after})


async def _stream_config(nats_url: str, stream: str) -> StreamConfig:
    nc = await nats.connect(nats_url, connect_timeout=5, allow_reconnect=False)
    try:
        return (await nc.jetstream(timeout=5).stream_info(stream)).config
    finally:
        await nc.close()


def _stream_replicas(nats_url: str, stream: str) -> int | None:
    return asyncio.run(_stream_config(nats_url, stream)).num_replicas


async def _shard_leaders(nats_url: str) -> list[str]:
    """The leader of each room log shard stream, in shard order."""
    nc = await nats.connect(nats_url, connect_timeout=5, allow_reconnect=False)
    try:
        js = nc.jetstream(timeout=5)
        count = int((await js.stream_info(stream_name(0))).config.metadata["natter_room_shards"])
        leaders = []
        for shard in range(count):
            cluster = (await js.stream_info(stream_name(shard))).cluster
            assert cluster is not None and cluster.leader
            leaders.append(cluster.leader)
        return leaders
    finally:
        await nc.close()


@pytest.mark.slow
def test_up_nats_cluster_runs_three_nodes_with_replicated_streams(natter_up: StartUp) -> None:
    run = natter_up("--nats-cluster", "3")
    run.wait_ready()
    children = run.pids()
    assert {"nats-0", "nats-1", "nats-2"} <= set(children)
    assert "nats" not in children
    for index in range(3):
        assert (run.data_dir / "nats-cluster" / f"node-{index}" / "jetstream").is_dir()
    # every node accepts clients; the services' streams are replicated on three of them
    for port in (run.nats_port, run.nats_port + 1, run.nats_port + 2):
        assert _stream_replicas(run.operator_url(port), stream_name(0)) == 3
    # attachments are replicated like the room logs (issue 13 item 1)
    assert _stream_replicas(run.operator_url(run.nats_port), subjects.OBJ_ATTACHMENTS_STREAM) == 3
    # the room log shards are led by different nodes (4 shards on 3 nodes: every node leads one)
    leaders = asyncio.run(_shard_leaders(run.operator_url(run.nats_port)))
    assert len(leaders) == 4 and len(set(leaders)) == 3, leaders
    minted = service_token(f"nats://127.0.0.1:{run.nats_port + 2}", "cluster", data_dir=run.data_dir)
    assert minted.returncode == 0, minted.stderr
    assert run.stop(signal.SIGINT) == 0
    run.assert_nothing_left(children)


def test_up_refuses_a_busy_nats_port_and_says_how_to_pick_another(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        nats_port = busy.getsockname()[1]
        data_dir = tmp_path / "natter"
        env = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
        argv = [sys.executable, "-m", "natter", "up", "--nats-port", str(nats_port)]
        argv += ["--port", str(free_port()), "--data-dir", str(data_dir)]
        result = subprocess.run(
            argv,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert result.returncode == 1
    assert str(nats_port) in result.stderr and "--nats-port" in result.stderr
    assert not (data_dir / "pids.json").exists()
    assert not (data_dir / "logs").exists(), "nothing may have been started"


def test_up_rejects_an_unsupported_cluster_size(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "natter", "up", "--nats-cluster", "2", "--data-dir", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "--nats-cluster" in result.stderr
    assert not (tmp_path / "d").exists()


def test_service_token_reports_an_unreachable_nats(tmp_path: Path) -> None:
    result = service_token(f"nats://127.0.0.1:{free_port()}", "ci", data_dir=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert "cannot reach NATS" in result.stderr


def test_service_token_reports_an_auth_service_that_does_not_answer(tmp_path: Path) -> None:
    port = free_port()
    server = nats_server_process(port=port, store_dir=tmp_path / "store", log_path=tmp_path / "nats.log")
    server.start()
    try:
        wait_for_port(port)
        started = time.monotonic()
        result = service_token(f"nats://127.0.0.1:{port}", "ci", data_dir=tmp_path)
        assert time.monotonic() - started < 20
    finally:
        server.stop(grace=5)
    assert result.returncode == 1
    assert result.stdout == ""
    assert "auth service did not answer" in result.stderr


def test_service_token_rejects_a_bad_name_before_asking() -> None:
    result = service_token(f"nats://127.0.0.1:{free_port()}", "no spaces!", data_dir=Path("unused"))
    assert result.returncode == 2
    assert result.stdout == ""
    assert "name" in result.stderr


def test_version_prints_the_package_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "natter", "version"], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0
    assert result.stdout.strip() == f"natter {__version__}"


#: What a service process must not load (issue 12 item 6): the operator tooling's weight.
CLI_ONLY_MODULES = ("natter.bench", "natter.launcher", "natter.up", "natter.cli", "typer", "rich")


@pytest.mark.parametrize("service", ["gateway", "chat"])
def test_service_processes_start_without_the_cli_the_launcher_or_the_bench_tool(
    nats_server: NatsServerFixture, tmp_path: Path, service: str
) -> None:
    """``python -m natter <service>`` as compose runs it: it gets ready (the gateway answers
    /health; chat answers ``$SRV.PING``) having imported none of :data:`CLI_ONLY_MODULES`
    (``-X importtime`` lists every module the process imported)."""
    port = free_port()
    process = service_process(
        service,
        nats_url=nats_server.client_url,
        port=port,
        log_path=tmp_path / f"{service}.log",
        credentials=nats_server.credentials,
    )
    process.argv[1:1] = ["-X", "importtime"]
    log = tmp_path / f"{service}.log"
    process.start()
    try:
        if service == "gateway":
            wait_http_healthy(f"http://127.0.0.1:{port}", timeout=READY_TIMEOUT)
        else:  # this replica's own line: the session's chat replicas answer $SRV.PING too
            deadline = time.monotonic() + READY_TIMEOUT
            while "service=chat ready" not in log.read_text(errors="replace"):
                assert process.alive() and time.monotonic() < deadline, log.read_text()[-2000:]
                time.sleep(0.05)
    finally:
        process.stop(grace=10)
    modules = {
        line.rsplit("|", 1)[1].strip()
        for line in log.read_text(errors="replace").splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert f"{service}_service.main" in modules or "gateway.main" in modules, sorted(modules)[:20]
    loaded = sorted(m for m in modules if m.startswith(CLI_ONLY_MODULES))
    assert loaded == [], loaded


def test_service_commands_keep_their_help_and_refuse_unknown_options() -> None:
    helped = subprocess.run(
        [sys.executable, "-m", "natter", "gateway", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert helped.returncode == 0 and "--port" in helped.stdout
    refused = subprocess.run(
        [sys.executable, "-m", "natter", "chat", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert refused.returncode == 2 and "unrecognized arguments: --port" in refused.stderr
