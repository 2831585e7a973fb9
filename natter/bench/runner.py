"""One benchmark run: start the target, start the load-generator processes, measure, stop.

The result is a JSON-able dict (docs/benchmarks.md describes every field)::

    {"schema": "natter-bench/1", "scenario", "target", "params", "machine", "run_id",
     "started_at", "loadgen": {"workers", "pids", "urls"}, "setup": {...}, "steps": [...],
     "summary": {...}}

For the messaging scenarios each step is one measured phase; ``summary`` is the (only) step of
``fanout``/``rooms``, and for ``saturation`` the highest step that kept p99 under the limit
without losing a delivery. Every wait is bounded; a worker that stays silent is terminated.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import platform
import secrets
import subprocess
import tempfile
import time
from array import array
from collections.abc import Callable
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from natter.bench.gcpauses import GcPauseMeter
from natter.bench.natstraffic import NatsTrafficMeter, per_unit
from natter.bench.procstat import CpuMeter, MachineCpuMeter, read_rss, wait_for_quiet
from natter.bench.spec import Layout, RunParams, Scenario, build_layout, room_name, saturation_rates
from natter.bench.spec import split_round_robin as split
from natter.bench.stats import (
    expected_deliveries,
    key_sender,
    latency_summary,
    lost_deliveries,
    merge_counts,
)
from natter.bench.targets import RunningTarget, TargetError, remove_workdir, start_target
from natter.bench.worker import WorkerPlan, worker_main

logger = logging.getLogger(__name__)

SCHEMA = "natter-bench/1"
#: Seconds between sending a phase's command and its start (all workers start together).
START_DELAY = 0.5
#: Seconds to wait for acks after the last send of a phase.
ACK_TIMEOUT = 10.0
#: Phase number of the unmeasured warm-up (deliveries of it arriving later count as "late").
WARMUP_PHASE = 999

#: ``progress(description, completed_fraction_or_None)``: what the CLI shows.
Progress = Callable[[str, float | None], None]


class BenchError(Exception):
    """The run could not be carried out (target or worker failure); the text says why."""


def machine_info() -> dict[str, Any]:
    """``{"nproc", "cpu_model", "mem_total_mib", "python", "platform"}`` of this machine."""
    cpu_model = ""
    mem_kib = 0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "mem_total_mib": mem_kib // 1024,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def code_version() -> dict[str, Any]:
    """``{"commit", "dirty"}`` of the source checkout natter runs from (None outside git):
    ``dirty`` lists the changed files of natter's own packages."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        )
        status = subprocess.run(
            [
                "git",
                "status",
                "--porcelain",
                "--",
                "gateway",
                "auth_service",
                "chat_service",
                "notify_service",
                "shared",
            ],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    if commit.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": commit.stdout.strip(), "dirty": [line[3:] for line in status.stdout.splitlines()]}


class Workers:
    """The load-generator processes and their pipes."""

    def __init__(self, plans: list[WorkerPlan]) -> None:
        ctx = mp.get_context("spawn")
        self.pipes: list[Connection] = []
        self.processes: list[Any] = []
        for plan in plans:
            parent, child = ctx.Pipe()
            process = ctx.Process(target=worker_main, args=(child, plan), name=f"bench-worker-{plan.index}")
            process.daemon = True
            process.start()
            child.close()
            self.pipes.append(parent)
            self.processes.append(process)

    def pids(self) -> dict[str, int]:
        return {f"worker-{i}": p.pid for i, p in enumerate(self.processes)}

    def send_all(self, command: tuple[Any, ...]) -> None:
        for pipe in self.pipes:
            pipe.send(command)

    def send(self, index: int, command: tuple[Any, ...]) -> None:
        self.pipes[index].send(command)

    def collect(
        self, expect: str, timeout: float, tick: Callable[[], None] | None = None
    ) -> list[dict[str, Any]]:
        """One ``(expect, payload)`` answer per worker, in worker order.

        Raises:
            BenchError: a worker died, answered something else, or is silent after ``timeout`` s.
        """
        answers: list[dict[str, Any] | None] = [None] * len(self.pipes)
        deadline = time.monotonic() + timeout
        while any(a is None for a in answers):
            if time.monotonic() > deadline:
                raise BenchError(f"load generator silent for {timeout:.0f}s waiting for {expect!r}")
            for i, pipe in enumerate(self.pipes):
                if answers[i] is not None:
                    continue
                if pipe.poll(0.05):
                    try:
                        name, payload = pipe.recv()
                    except (EOFError, OSError) as error:
                        raise BenchError(f"load generator worker {i} died") from error
                    if name != expect:
                        raise BenchError(f"worker {i} answered {name!r}: {payload}")
                    answers[i] = payload
                elif not self.processes[i].is_alive():
                    raise BenchError(f"load generator worker {i} exited (code {self.processes[i].exitcode})")
            if tick is not None:
                tick()
        return [a for a in answers if a is not None]

    def close(self) -> None:
        """Ask every worker to close its sockets; terminate those that do not exit in 20 s."""
        for pipe in self.pipes:
            try:
                pipe.send(("close",))
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + 20
        for process in self.processes:
            process.join(max(0.1, deadline - time.monotonic()))
            if process.is_alive():
                process.terminate()
                process.join(5)
        for pipe in self.pipes:
            pipe.close()


class Meters:
    """CPU of the target's processes, of the load generator and of the whole machine over one
    measured window; ``other_cpu_pct`` is what neither used (other work on the machine)."""

    def __init__(
        self,
        target: dict[str, int],
        loadgen: dict[str, int],
        *,
        nats_monitor_url: str = "",
        metrics_urls: dict[str, str] | None = None,
    ) -> None:
        self.server = CpuMeter(target)
        self.loadgen = CpuMeter(loadgen)
        self.machine = MachineCpuMeter()
        self.nats = NatsTrafficMeter(nats_monitor_url)
        self.gc = GcPauseMeter(metrics_urls or {})

    def start(self) -> None:
        self.gc.start()
        self.nats.start()
        self.machine.start()
        self.server.start()
        self.loadgen.start()

    def stop(self) -> dict[str, Any]:
        """``{"server_cpu", "loadgen_cpu", "machine_cpu_pct", "other_cpu_pct", "nats_traffic",
        "gc_pauses"}`` (the last two: :class:`NatsTrafficMeter`, :class:`GcPauseMeter`; None for
        the references)."""
        server, loadgen, machine = self.server.stop(), self.loadgen.stop(), self.machine.stop()
        traffic = self.nats.stop()
        pauses = self.gc.stop()
        other = None
        if machine is not None:
            other = round(max(0.0, machine - server["total_pct"] - loadgen["total_pct"]), 1)
        return {
            "server_cpu": server,
            "loadgen_cpu": loadgen,
            "machine_cpu_pct": machine,
            "other_cpu_pct": other,
            "nats_traffic": traffic,
            "gc_pauses": pauses,
        }


class Run:
    """One run of ``params`` (scenario x target); :meth:`execute` returns the result dict."""

    def __init__(
        self, params: RunParams, *, progress: Progress | None = None, keep_workdir: bool = False
    ) -> None:
        params.validate()
        self.params = params
        self.progress = progress or (lambda description, fraction: None)
        self.keep_workdir = keep_workdir
        self.run_id = secrets.token_hex(4)
        self.layout: Layout = build_layout(params, self.run_id)
        self.target: RunningTarget | None = None
        self.workers: Workers | None = None
        self.members: dict[str, int] = {}
        self.local_members: list[dict[str, int]] = []

    def _meters(self) -> Meters:
        """Meters of the target's and the load generator's processes (and NATS traffic)."""
        assert self.target is not None and self.workers is not None
        return Meters(
            self.target.pids(),
            self.workers.pids(),
            nats_monitor_url=self.target.nats_monitor_url,
            metrics_urls=self.target.metrics_urls,
        )

    def execute(self) -> dict[str, Any]:
        """Run everything and stop everything (also on errors).

        Raises:
            BenchError: the target or the load generator failed (with the log location).
        """
        params = self.params
        result: dict[str, Any] = {
            "schema": SCHEMA,
            "scenario": params.scenario.value,
            "target": params.target.value,
            "run_id": self.run_id,
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "params": _params_dict(params),
            "machine": machine_info(),
            "code": code_version(),
            "loadavg_at_start": [round(v, 2) for v in os.getloadavg()],
        }
        workdir = Path(tempfile.mkdtemp(prefix=f"natter-bench-{params.target.value}-"))
        failed = True
        try:
            users = max(1, min(params.users, max(params.socket_count(), params.churn_concurrency)))
            self.progress(f"starting {params.target.value}", None)
            try:
                self.target = start_target(
                    params.target,
                    workdir=workdir,
                    users=users,
                    run_id=self.run_id,
                    nats_sync=params.nats_sync_always,
                    gateways=params.gateways,
                )
            except TargetError as error:
                raise BenchError(str(error)) from error
            result["target_processes"] = self.target.pids()
            if params.quiet_wait > 0:
                self.progress("waiting for the machine to be quiet", None)
                result["quiet"] = wait_for_quiet(params.quiet_wait)
            rss_before = read_rss(self.target.pids())
            self._start_workers()
            assert self.workers is not None
            result["loadgen"] = {
                "workers": params.workers,
                "pids": self.workers.pids(),
                "urls": {f"worker-{i}": self.target.url_for(i) for i in range(params.workers)},
            }
            if params.scenario is Scenario.connect:
                result["steps"] = [self._churn()]
                result["summary"] = result["steps"][0]
            else:
                result["setup"] = self._connect()
                if params.scenario is Scenario.idle:
                    result["steps"] = [self._idle(rss_before, result["setup"])]
                    result["summary"] = result["steps"][0]
                else:
                    result["steps"], result["summary"] = self._messaging()
            dead = self.target.dead()
            if dead:
                raise BenchError(f"target process(es) died during the run: {dead}; {self.target.log_hint()}")
            failed = False
            return result
        finally:
            self.progress("stopping", None)
            if self.workers is not None:
                self.workers.close()
            if self.target is not None:
                self.target.stop()
            if failed or self.keep_workdir:
                logger.warning("run files kept in %s", workdir)
            else:
                remove_workdir(workdir)

    # --- workers ---------------------------------------------------------------------------
    def _start_workers(self) -> None:
        assert self.target is not None
        params = self.params
        parts = split(self.layout.sockets, params.workers)
        plans = [
            WorkerPlan(
                index=i,
                protocol=self.target.protocol,
                url=self.target.url_for(i),
                tokens=self.target.tokens,
                sockets=part,
                connect_concurrency=max(1, params.connect_concurrency // params.workers),
            )
            for i, part in enumerate(parts)
        ]
        self.workers = Workers(plans)

    def _connect(self) -> dict[str, Any]:
        assert self.workers is not None
        count = len(self.layout.sockets)
        self.progress(f"connecting {count} sockets", None)
        started = time.monotonic()
        self.workers.send_all(("connect",))
        answers = self.workers.collect("connected", timeout=120 + count / 20)
        self.local_members = [a["members"] for a in answers]
        self.members = merge_counts(self.local_members) if self.local_members else {}
        failures = merge_counts(a["failures"] for a in answers)
        connected = sum(a["connected"] for a in answers)
        setup = {
            "planned": count,
            "connected": connected,
            "failures": failures,
            "seconds": round(time.monotonic() - started, 3),
            "connects_per_s": round(connected / max(1e-9, time.monotonic() - started), 1),
        }
        if connected == 0 and count:
            raise BenchError(f"no socket could connect: {failures}")
        time.sleep(1.0)  # let presence frames of the joins pass before measuring
        return setup

    # --- messaging -------------------------------------------------------------------------
    def _messaging(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        params = self.params
        if params.scenario is Scenario.saturation:
            rates = saturation_rates(params.send_rate, params.step_factor, params.max_steps)
        else:
            rates = [params.send_rate]
        if params.warmup > 0:  # unmeasured: cold paths must not decide a 10-message step's p99
            self._phase(WARMUP_PHASE, rates[0], duration=params.warmup)
        steps: list[dict[str, Any]] = []
        for index, rate in enumerate(rates):
            step = self._phase(index, rate)
            steps.append(step)
            if params.scenario is Scenario.saturation and not step["ok"]:
                break
        if params.scenario is not Scenario.saturation:
            return steps, steps[0]
        passing = [s for s in steps if s["ok"]]
        best = passing[-1] if passing else None
        summary = dict(best or steps[0])
        summary.update(
            {
                "max_ok_rate": best["rate"] if best else None,
                "max_ok_deliveries_per_s": best["deliveries_per_s"] if best else None,
                "first_failed_rate": next((s["rate"] for s in steps if not s["ok"]), None),
                "stopped_because": next((s["verdict"] for s in steps if not s["ok"]), "max steps reached"),
            }
        )
        return steps, summary

    def _phase(self, index: int, rate: float, *, duration: float | None = None) -> dict[str, Any]:
        assert self.workers is not None and self.target is not None
        params = self.params
        duration = params.duration if duration is None else duration
        if index == WARMUP_PHASE:
            label = f"warm-up: {rate:g} msg/s per sender"
        elif params.scenario is Scenario.saturation:
            label = f"step {index + 1}: {rate:g} msg/s per sender"
        else:
            label = f"sending {rate:g} msg/s per sender"
        start_at = time.time() + START_DELAY
        spec = {
            "phase": index,
            "rate": rate,
            "duration": duration,
            "start_at": start_at,
            "ack_timeout": ACK_TIMEOUT,
            "spread": params.scenario is Scenario.rooms,
            "reactions": params.reactions,
        }
        meters = self._meters()
        self.workers.send_all(("phase", spec))
        time.sleep(max(0.0, start_at - time.time()))
        meters.start()

        def tick() -> None:
            elapsed = time.time() - start_at
            self.progress(label, min(1.0, elapsed / duration))

        sent_answers = self.workers.collect("sent", timeout=duration + ACK_TIMEOUT + 60, tick=tick)
        acked: array[int] = array("q")
        errors: dict[str, int] = {}
        lag: array[int] = array("q")
        for answer in sent_answers:
            acked.frombytes(answer["acked"])
            lag.frombytes(answer["lag_ns"])
            for code, count in answer["errors"].items():
                errors[code] = errors.get(code, 0) + count
        acked_per_room: dict[str, int] = {}
        for key in acked:
            room = self.layout.room_of_sender.get(key_sender(key), "")
            acked_per_room[room] = acked_per_room.get(room, 0) + 1
        for i, local in enumerate(self.local_members):
            owed = sum(count * local.get(room, 0) for room, count in acked_per_room.items())
            self.workers.send(i, ("expect", owed, params.grace))
        self.progress(f"{label}: waiting for deliveries", 1.0)
        results = self.workers.collect("result", timeout=params.grace + 60)
        cpu = meters.stop()
        server = cpu["server_cpu"]
        latencies: array[int] = array("q")
        for r in results:
            latencies.frombytes(r["latencies"])
        received = merge_counts(r["per_msg"] for r in results)
        unique = sum(r["unique"] for r in results)
        expected = expected_deliveries(acked, self.layout.room_of_sender, self.members)
        lost = lost_deliveries(acked, received, self.layout.room_of_sender, self.members)
        start_ns = int(start_at * 1e9)
        last_ns = max((r["last_ns"] for r in results), default=0)
        window = max(duration, (last_ns - start_ns) / 1e9) if last_ns else duration
        latency = latency_summary(latencies)
        sent = sum(a["sent"] for a in sent_answers)
        unacked = sum(a["unacked"] for a in sent_answers)
        closed = merge_counts(r["closed"] for r in results)
        step: dict[str, Any] = {
            "step": index,
            "rate": rate,
            "senders": sum(a["senders"] for a in sent_answers),
            "members": sum(self.members.values()),
            "duration_s": duration,
            "sent": sent,
            "sent_per_s": round(sent / duration, 1),
            "reactions_sent": sum(a.get("reactions", 0) for a in sent_answers),
            "acked": len(acked),
            "unacked": unacked,
            "send_errors": errors,
            "sender_lag_ms": latency_summary(lag),
            "expected": expected,
            "deliveries": unique,
            "lost": lost,
            "duplicated": sum(r["duplicates"] for r in results),
            "late": sum(r["late"] for r in results),
            "deliveries_per_s": round(unique / window, 1),
            "latency_ms": latency,
            "closed_sockets": closed,
            **cpu,
            "server_cpu_ms_per_1k_deliveries": round(1e6 * server["cpu_s"] / unique, 2) if unique else None,
            "nats_msgs_per_message": per_unit(cpu["nats_traffic"], len(acked)),
        }
        verdict = _verdict(step, params.p99_limit_ms)
        step["ok"] = verdict == "ok"
        step["verdict"] = verdict
        return step

    # --- idle ------------------------------------------------------------------------------
    def _idle(self, rss_before: dict[str, int | None], setup: dict[str, Any]) -> dict[str, Any]:
        assert self.target is not None and self.workers is not None
        params = self.params
        time.sleep(2.0)
        rss_after = read_rss(self.target.pids())
        meters = self._meters()
        meters.start()
        end = time.monotonic() + params.duration
        while time.monotonic() < end:
            remaining = end - time.monotonic()
            self.progress(f"holding {setup['connected']} idle sockets", 1 - remaining / params.duration)
            time.sleep(min(0.2, max(0.0, remaining)))
        rss_end = read_rss(self.target.pids())
        connected = max(1, int(setup["connected"]))
        main = self.target.main
        per_process = {
            label: {
                "before_kib": rss_before.get(label),
                "after_kib": rss_after.get(label),
                "end_kib": rss_end.get(label),
                "per_connection_kib": _per_conn(rss_before.get(label), rss_after.get(label), connected),
            }
            for label in rss_before
        }
        total_before = sum(v or 0 for v in rss_before.values())
        total_after = sum(v or 0 for v in rss_after.values())
        return {
            "connections": setup["connected"],
            "connect_failures": setup["failures"],
            "connect_seconds": setup["seconds"],
            "rss": per_process,
            "main_process": main,
            "per_connection_kib": per_process[main]["per_connection_kib"],
            "all_processes_per_connection_kib": _per_conn(total_before, total_after, connected),
            **{f"idle_{key}": value for key, value in meters.stop().items()},
            "hold_s": params.duration,
        }

    # --- connect ---------------------------------------------------------------------------
    def _churn(self) -> dict[str, Any]:
        assert self.workers is not None and self.target is not None
        params = self.params
        start_at = time.time() + START_DELAY
        loops = max(1, params.churn_concurrency // params.workers)
        spec: dict[str, Any] = {
            "start_at": start_at,
            "duration": params.duration,
            "concurrency": loops,
            "max_connects": 100_000,
            # one room per loop of every worker (worker w, loop i: rooms[w * loops + i])
            "rooms": (
                [room_name(self.run_id, f"c{n}") for n in range(params.churn_concurrency)]
                if params.connect_join
                else []
            ),
        }
        meters = self._meters()
        self.workers.send_all(("churn", spec))
        time.sleep(max(0.0, start_at - time.time()))
        meters.start()

        def tick() -> None:
            label = (
                "connect, authenticate, join, close"
                if params.connect_join
                else "connect, authenticate, close"
            )
            self.progress(label, min(1.0, (time.time() - start_at) / params.duration))

        answers = self.workers.collect("churned", timeout=params.duration + 60, tick=tick)
        cpu = meters.stop()
        server = cpu["server_cpu"]
        latencies: array[int] = array("q")
        for answer in answers:
            latencies.frombytes(answer["latencies"])
        connects = sum(a["connects"] for a in answers)
        wall = max((a["seconds"] for a in answers), default=params.duration)
        return {
            "connects": connects,
            "failures": merge_counts(a["failures"] for a in answers),
            "duration_s": round(wall, 3),
            "connects_per_s": round(connects / max(wall, 1e-9), 1),
            "latency_ms": latency_summary(latencies),
            "concurrency": loops * params.workers,
            "joined": params.connect_join,
            **cpu,
            "server_cpu_ms_per_connect": round(1e3 * server["cpu_s"] / connects, 3) if connects else None,
            "nats_msgs_per_connect": per_unit(cpu["nats_traffic"], connects),
        }


def _per_conn(before: int | None, after: int | None, connections: int) -> float | None:
    if before is None or after is None:
        return None
    return round((after - before) / connections, 2)


def _verdict(step: dict[str, Any], p99_limit_ms: float) -> str:
    """``ok``, or why a step fails the saturation criteria (p99 over the limit, or a loss)."""
    if step["lost"] > 0:
        return f"lost {step['lost']} deliveries"
    if step["unacked"] > 0 or step["send_errors"]:
        return f"send failures: unacked={step['unacked']} errors={step['send_errors']}"
    p99 = step["latency_ms"]["p99"]
    if p99 is None:
        return "no deliveries"
    if p99 > p99_limit_ms:
        return f"p99 {p99:g} ms > {p99_limit_ms:g} ms"
    return "ok"


def _params_dict(params: RunParams) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for name in params.__dataclass_fields__:
        value = getattr(params, name)
        data[name] = value.value if hasattr(value, "value") else value
    data["rate"] = params.send_rate
    return data
