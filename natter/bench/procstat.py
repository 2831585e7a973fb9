"""CPU time and resident memory of processes, read from Linux ``/proc`` (proc(5)).

``/proc/<pid>/stat`` fields 14 and 15 are ``utime`` and ``stime`` in clock ticks
(``SC_CLK_TCK``), summed over all threads of the process; ``/proc/<pid>/status`` ``VmRSS``
is the resident set in KiB.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from natter.bench.stats import cpu_percent

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def parse_cpu_ticks(stat_text: str) -> int:
    """``utime + stime`` from the text of ``/proc/<pid>/stat``.

    The command name (field 2) may hold spaces and parentheses, so fields are counted after
    the last ``)``. Raises ``ValueError`` on malformed text.
    """
    end = stat_text.rindex(")")
    fields = stat_text[end + 2 :].split()
    # After ")" come field 3 (state) onwards: utime is field 14 -> index 11, stime index 12.
    return int(fields[11]) + int(fields[12])


def parse_vmrss_kib(status_text: str) -> int | None:
    """``VmRSS`` in KiB from the text of ``/proc/<pid>/status``; None when absent (zombie)."""
    for line in status_text.splitlines():
        if line.startswith("VmRSS:"):
            parts = line.split()
            return int(parts[1])
    return None


def read_cpu_ticks(pid: int) -> int | None:
    """Clock ticks of CPU the process used so far; None when it is gone."""
    try:
        return parse_cpu_ticks(Path(f"/proc/{pid}/stat").read_text())
    except (OSError, ValueError, IndexError):
        return None


def read_rss_kib(pid: int) -> int | None:
    """The process's resident set in KiB; None when it is gone."""
    try:
        return parse_vmrss_kib(Path(f"/proc/{pid}/status").read_text())
    except OSError:
        return None


def read_rss(pids: Mapping[str, int]) -> dict[str, int | None]:
    """``{label: VmRSS KiB}`` for each process."""
    return {label: read_rss_kib(pid) for label, pid in pids.items()}


class CpuMeter:
    """CPU use of labelled processes between :meth:`start` and :meth:`stop`.

    Args:
        pids: ``{label: pid}``.
    """

    def __init__(self, pids: Mapping[str, int]) -> None:
        self.pids = dict(pids)
        self._start: dict[str, int | None] = {}
        self._t0 = 0.0

    def start(self) -> None:
        """Take the first snapshot."""
        self._t0 = time.monotonic()
        self._start = {label: read_cpu_ticks(pid) for label, pid in self.pids.items()}

    def stop(self) -> dict[str, Any]:
        """``{"wall_s", "total_pct", "cpu_s", "processes": {label: pct}}`` since :meth:`start`.

        Percent of one core; a process that vanished in between is left out.
        """
        wall = time.monotonic() - self._t0
        per: dict[str, float] = {}
        total_ticks = 0
        for label, pid in self.pids.items():
            before, after = self._start.get(label), read_cpu_ticks(pid)
            if before is None or after is None:
                continue
            per[label] = cpu_percent(after - before, CLOCK_TICKS, wall)
            total_ticks += after - before
        return {
            "wall_s": round(wall, 3),
            "cpu_s": round(total_ticks / CLOCK_TICKS, 3),
            "total_pct": cpu_percent(total_ticks, CLOCK_TICKS, wall),
            "processes": per,
        }


def parse_machine_ticks(stat_text: str) -> tuple[int, int]:
    """``(busy, total)`` clock ticks of all CPUs from the text of ``/proc/stat`` (its ``cpu``
    line: user nice system idle iowait irq softirq steal ...; idle and iowait are not busy)."""
    for line in stat_text.splitlines():
        if line.startswith("cpu "):
            values = [int(v) for v in line.split()[1:]]
            total = sum(values[:8])
            idle = values[3] + (values[4] if len(values) > 4 else 0)
            return total - idle, total
    raise ValueError("no cpu line in /proc/stat")


def read_machine_ticks() -> tuple[int, int] | None:
    """:func:`parse_machine_ticks` of this machine; None without ``/proc``."""
    try:
        return parse_machine_ticks(Path("/proc/stat").read_text())
    except (OSError, ValueError):
        return None


def wait_for_quiet(max_wait: float, *, threshold_pct: float = 30.0, window: float = 1.0) -> dict[str, float]:
    """Wait (at most ``max_wait`` seconds) until the machine is busy less than ``threshold_pct``
    of one core over ``window`` seconds, so a run does not start while other work hogs the CPU.

    Returns ``{"waited_s", "busy_pct"}`` (the last measured window).
    """
    started = time.monotonic()
    meter = MachineCpuMeter()
    busy = 0.0
    while True:
        meter.start()
        time.sleep(window)
        busy = meter.stop() or 0.0
        if busy < threshold_pct or time.monotonic() - started >= max_wait:
            return {"waited_s": round(time.monotonic() - started, 1), "busy_pct": busy}


class MachineCpuMeter:
    """Busy CPU of the whole machine between :meth:`start` and :meth:`stop`, in percent of one
    core (2 busy cores = 200), to tell how much *other* work ran during a measurement."""

    def __init__(self) -> None:
        self._start: tuple[int, int] | None = None
        self._t0 = 0.0

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._start = read_machine_ticks()

    def stop(self) -> float | None:
        """Percent of one core the machine was busy (None without ``/proc``)."""
        end = read_machine_ticks()
        if self._start is None or end is None:
            return None
        return cpu_percent(end[0] - self._start[0], CLOCK_TICKS, time.monotonic() - self._t0)
