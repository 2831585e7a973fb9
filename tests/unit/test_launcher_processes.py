"""natter.launcher and the ``natter up`` supervisor with real (tiny Python) child processes:
restart with backoff, stop order, SIGKILL escalation, no leaked file descriptors, children that
die with their parent. No NATS, no services: these are the mechanics under ``natter up``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from natter.launcher import Child, ManagedProcess, Plan, Supervisor, stop_together

#: A child that records its pid when ready and its label when it gets SIGTERM (or ignores it).
CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    label, out, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    def on_term(signum, frame):
        with open(out, "a") as f:
            f.write(label + "\\n")
        if mode != "stubborn":
            sys.exit(0)
    signal.signal(signal.SIGTERM, on_term)
    with open(out + "." + label + ".ready", "w") as f:
        f.write(str(os.getpid()))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.05)
    """
)


def _child(tmp_path: Path, label: str, mode: str = "polite") -> ManagedProcess:
    script = tmp_path / "child.py"
    if not script.exists():
        script.write_text(CHILD)
    out = tmp_path / "terms.txt"
    return ManagedProcess(
        name=label,
        argv=[sys.executable, str(script), label, str(out), mode],
        env=dict(os.environ),
        log_path=tmp_path / "logs" / f"{label}.log",
    )


def _wait_ready(tmp_path: Path, *labels: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    for label in labels:
        marker = tmp_path / f"terms.txt.{label}.ready"
        while not marker.exists() or not marker.read_text():
            assert time.monotonic() < deadline, f"{label} never became ready"
            time.sleep(0.02)


def _open_files() -> set[str]:
    """Paths this process has open (Linux ``/proc/self/fd``)."""
    paths = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            paths.add(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # the fd of the listing itself, closed by now
            pass
    return paths


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (an orphan's reaper may be slow)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _running(pid):
            return True
        time.sleep(0.05)
    return False


def test_start_leaves_no_log_file_descriptor_open_in_the_parent(tmp_path: Path) -> None:
    process = _child(tmp_path, "fd").start()
    try:
        log = str(tmp_path / "logs" / "fd.log")
        assert log not in _open_files()
        assert Path(log).exists()
    finally:
        process.stop(grace=5)


def test_stop_together_escalates_to_sigkill_with_one_shared_grace(tmp_path: Path) -> None:
    stubborn = [_child(tmp_path, f"stubborn-{i}", "stubborn").start() for i in range(2)]
    polite = _child(tmp_path, "polite").start()
    _wait_ready(tmp_path, "stubborn-0", "stubborn-1", "polite")
    started = time.monotonic()
    stop_together([*stubborn, polite], grace=1.5)
    elapsed = time.monotonic() - started
    assert elapsed < 2.9, f"graces ran one after the other ({elapsed:.1f}s)"
    assert [p.proc.returncode for p in stubborn if p.proc] == [-signal.SIGKILL, -signal.SIGKILL]
    assert polite.proc is not None and polite.proc.returncode == 0
    terms = (tmp_path / "terms.txt").read_text().split()
    assert sorted(terms) == ["polite", "stubborn-0", "stubborn-1"]  # everyone got SIGTERM first


def test_supervisor_stops_gateways_then_services_then_nats(tmp_path: Path) -> None:
    plan = Plan(
        nats_url="nats://127.0.0.1:1",
        nats=[Child("nats", "nats", _child(tmp_path, "nats"))],
        services=[Child("auth-0", "service", _child(tmp_path, "auth-0"))],
        gateways=[Child("gateway-0", "gateway", _child(tmp_path, "gateway-0"))],
    )
    pid_file = tmp_path / "pids.json"
    supervisor = Supervisor(plan, pid_file)
    supervisor.start(plan.children)
    _wait_ready(tmp_path, "nats", "auth-0", "gateway-0")
    recorded = json.loads(pid_file.read_text())
    assert recorded["natter_up"] == os.getpid()
    assert recorded["processes"] == {c.label: c.process.pid for c in plan.children}
    supervisor.stop_all(grace=5)
    assert (tmp_path / "terms.txt").read_text().split() == ["gateway-0", "auth-0", "nats"]
    assert not pid_file.exists()
    assert all(not c.process.alive() for c in plan.children)


def test_supervisor_restarts_a_dead_child_after_its_backoff(tmp_path: Path) -> None:
    dying = ManagedProcess(
        name="chat-0",
        argv=[sys.executable, "-c", "import sys; sys.exit(3)"],
        env=dict(os.environ),
        log_path=tmp_path / "chat-0.log",
    )
    child = Child("chat-0", "service", dying)
    pid_file = tmp_path / "pids.json"
    supervisor = Supervisor(Plan(nats_url="nats://127.0.0.1:1", services=[child]), pid_file)
    supervisor.start([child])
    first_pid = dying.pid
    assert dying.proc is not None
    dying.proc.wait(timeout=15)

    now = time.monotonic()
    supervisor.tick(now)
    assert child.failures == 1
    assert child.restart_at == now + 0.5
    supervisor.tick(now + 0.4)
    assert dying.pid == first_pid, "restarted before its backoff"
    supervisor.tick(now + 0.6)
    assert dying.pid != first_pid
    assert json.loads(pid_file.read_text())["processes"]["chat-0"] == dying.pid

    dying.proc.wait(timeout=15)
    later = time.monotonic()
    supervisor.tick(later)
    assert child.failures == 2
    assert child.restart_at == later + 1.0  # the backoff doubled

    supervisor.stopping = True
    second_pid = dying.pid
    supervisor.tick(later + 5)
    assert dying.pid == second_pid, "restarted while stopping"


def test_die_with_parent_children_go_when_their_parent_is_killed(tmp_path: Path) -> None:
    pid_out = tmp_path / "child.pid"
    parent_script = textwrap.dedent(
        f"""
        import os, sys, time
        from natter.launcher import ManagedProcess
        child = ManagedProcess(
            name="sleeper",
            argv=[sys.executable, "-c", "import time; time.sleep(60)"],
            env=dict(os.environ),
            die_with_parent=True,
        ).start()
        with open({str(pid_out)!r}, "w") as f:
            f.write(str(child.pid))
        time.sleep(60)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_script], start_new_session=True)
    try:
        deadline = time.monotonic() + 15
        while not pid_out.exists() or not pid_out.read_text():
            assert time.monotonic() < deadline, "parent never started its child"
            assert parent.poll() is None, "parent died"
            time.sleep(0.05)
        child_pid = int(pid_out.read_text())
        assert _running(child_pid)  # alive while the parent is
        parent.kill()
        parent.wait(timeout=10)
        assert _wait_gone(child_pid), "child outlived its SIGKILLed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(timeout=10)
