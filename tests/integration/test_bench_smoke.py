"""``natter bench run`` end to end, as an operator runs it: a subprocess that starts its own
natter stack (nats-server, auth, chat, notify, one gateway), load-generator processes with real
WebSockets, and writes a result JSON. This checks the tool works and accounts correctly; it
never asserts speed (benchmarks report numbers, tests assert behaviour)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from natter.bench.report import METRICS

RUN_TIMEOUT = 150


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _bench_run(out: Path, *options: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """``natter bench run --no-plot --out <out> <options>`` in a subprocess; its output and result."""
    argv = [sys.executable, "-m", "natter", "bench", "run", "--no-plot", "--out", str(out), *options]
    completed = subprocess.run(
        argv, capture_output=True, text=True, timeout=RUN_TIMEOUT, cwd=Path(__file__).resolve().parents[2]
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed, json.loads(out.read_text())


def test_fanout_smoke_run_writes_well_formed_json(tmp_path: Path) -> None:
    completed, result = _bench_run(
        tmp_path / "r.json", "--scenario", "fanout", "--members", "20", "--duration", "3", "--rate", "20",
        "--target", "natter",
    )  # fmt: skip

    assert result["schema"] == "natter-bench/1"
    assert result["scenario"] == "fanout" and result["target"] == "natter"
    for key in ("params", "machine", "setup", "steps", "summary", "loadgen", "target_processes"):
        assert key in result, key
    assert set(result["target_processes"]) == {"gateway", "auth", "chat", "notify", "nats"}
    assert result["setup"]["connected"] == 20 and result["setup"]["failures"] == {}

    # The unmeasured warm-up (2 s by default) is not a step and its messages are not counted.
    assert [step["step"] for step in result["steps"]] == [0]
    assert result["params"]["warmup"] == 2.0

    summary = result["summary"]
    for key in (
        "deliveries",
        "lost",
        "duplicated",
        "expected",
        "latency_ms",
        "deliveries_per_s",
        "server_cpu",
    ):
        assert key in summary, key
    assert summary["sent"] == 60 and summary["acked"] == summary["sent"]  # 3 s x 20 msg/s
    assert summary["deliveries"] > 0
    assert summary["expected"] == summary["acked"] * 20
    assert summary["lost"] == 0
    assert summary["duplicated"] == 0
    latency = summary["latency_ms"]
    assert latency["count"] == summary["deliveries"]
    assert 0 <= latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    assert set(summary["server_cpu"]["processes"]) <= set(result["target_processes"])
    # NATS messages per stored message, from nats-server's /varz: at least the send request,
    # the stored entry and the room delivery
    assert summary["nats_msgs_per_message"]["in"] >= 3
    # every natter process's garbage collections over the phase, from its own /metrics
    assert set(summary["gc_pauses"]) == {"gateway", "auth", "chat", "notify"}
    for metric in METRICS["fanout"]:
        assert metric.label in completed.stdout

    # The run stopped everything it started.
    pids = list(result["target_processes"].values()) + list(result["loadgen"]["pids"].values())
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in pids if _alive(pid)]


def test_two_gateways_share_the_sockets_and_every_member_gets_every_message(tmp_path: Path) -> None:
    """``--gateways 2``: worker i connects to gateway i mod 2, so the room spans both gateways
    and the sender's messages reach the other gateway's sockets through NATS."""
    _, result = _bench_run(
        tmp_path / "r2.json", "--scenario", "fanout", "--members", "20", "--duration", "2", "--rate", "10",
        "--warmup", "0.5", "--gateways", "2",
    )  # fmt: skip
    assert {"gateway", "gateway-2"} <= set(result["target_processes"])
    urls = result["loadgen"]["urls"]
    assert len(urls) == 2 and len(set(urls.values())) == 2  # one worker per gateway
    summary = result["summary"]
    assert summary["acked"] == summary["sent"] == 20
    assert summary["expected"] == summary["acked"] * 20
    assert summary["deliveries"] == summary["expected"]
    assert summary["lost"] == 0 and summary["duplicated"] == 0


def test_bad_option_is_refused_before_starting_anything() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "natter", "bench", "run", "--scenario", "fanout", "--duration", "100000"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 2
    assert "--duration must be" in completed.stderr


def test_history_scenario_reads_materialised_pages(tmp_path: Path) -> None:
    """``natter bench history``: a seeded room with reactions and edits, concurrent readers; every
    answer a full page of materialised messages, and the numbers it prints are the ones it saves."""
    out = tmp_path / "history.json"
    argv = [sys.executable, "-m", "natter", "bench", "history", "--messages", "120", "--clients", "3",
            "--duration", "2", "--out", str(out)]  # fmt: skip
    completed = subprocess.run(
        argv, capture_output=True, text=True, timeout=RUN_TIMEOUT, cwd=Path(__file__).resolve().parents[2]
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(out.read_text())
    assert json.loads(completed.stdout) == result
    assert result["scenario"] == "history" and result["bad_answers"] == 0
    assert result["pages"] > 10 and result["pages_per_s"] > 0
    assert result["room_last_seq"] > result["messages"]  # reactions and edits took seqs too
    assert 0 < result["p50_ms"] <= result["p99_ms"] <= result["max_ms"]
