"""Result files and tables: writing JSON, the metrics shown per scenario, and natter's ratios
to the references (``natter value / reference value``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from natter.bench.stats import dig, ratio

COMPARE_SCHEMA = "natter-bench-compare/1"


@dataclass(frozen=True)
class Metric:
    """One row of a table: ``label``, where it is in a result (``summary.<path>``), and whether
    higher is better (for reading the ratio)."""

    label: str
    path: str
    higher_is_better: bool


_MESSAGING = [
    Metric("deliveries/s", "deliveries_per_s", True),
    Metric("latency p50 ms", "latency_ms.p50", False),
    Metric("latency p90 ms", "latency_ms.p90", False),
    Metric("latency p99 ms", "latency_ms.p99", False),
    Metric("latency max ms", "latency_ms.max", False),
    Metric("lost", "lost", False),
    Metric("duplicated", "duplicated", False),
    Metric("server CPU %", "server_cpu.total_pct", False),
    Metric("server CPU ms / 1k deliveries", "server_cpu_ms_per_1k_deliveries", False),
    Metric("NATS msgs in / stored message", "nats_msgs_per_message.in", False),
    Metric("load generator CPU %", "loadgen_cpu.total_pct", False),
    Metric("other CPU % on the machine", "other_cpu_pct", False),
]
METRICS: dict[str, list[Metric]] = {
    "fanout": _MESSAGING,
    "rooms": _MESSAGING,
    "saturation": [
        Metric("max rate with p99 <= limit, msg/s", "max_ok_rate", True),
        Metric("deliveries/s at that rate", "max_ok_deliveries_per_s", True),
        Metric("latency p99 ms at that rate", "latency_ms.p99", False),
        Metric("server CPU ms / 1k deliveries", "server_cpu_ms_per_1k_deliveries", False),
        Metric("first failing rate, msg/s", "first_failed_rate", True),
    ],
    "idle": [
        Metric("connections", "connections", True),
        Metric("KiB per connection (socket process)", "per_connection_kib", False),
        Metric("KiB per connection (all processes)", "all_processes_per_connection_kib", False),
        Metric("seconds to connect all", "connect_seconds", False),
        Metric("idle server CPU %", "idle_server_cpu.total_pct", False),
    ],
    "connect": [
        Metric("connects/s", "connects_per_s", True),
        Metric("connect latency p50 ms", "latency_ms.p50", False),
        Metric("connect latency p99 ms", "latency_ms.p99", False),
        Metric("server CPU ms / connect", "server_cpu_ms_per_connect", False),
        Metric("NATS msgs in / connect", "nats_msgs_per_connect.in", False),
        Metric("server CPU %", "server_cpu.total_pct", False),
        Metric("other CPU % on the machine", "other_cpu_pct", False),
    ],
}


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON (parent dirs created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def fmt(value: Any) -> str:
    """A metric value for a table: ``-`` for None, thousands separators, 3 significant digits
    below 100."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def target_label(result: dict[str, Any]) -> str:
    """The target's name for a reader: ``natter``, ``natter (2 gateways)``, ``fastapi``."""
    gateways = int(result.get("params", {}).get("gateways", 1))
    return f"{result['target']} ({gateways} gateways)" if gateways > 1 else str(result["target"])


def run_table(result: dict[str, Any]) -> Table:
    """A table of one run's summary metrics."""
    table = Table(title=f"{result['scenario']} on {target_label(result)}", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    summary = result.get("summary", {})
    for metric in METRICS[result["scenario"]]:
        table.add_row(metric.label, fmt(dig(summary, metric.path)))
    if result["scenario"] == "saturation":
        for step in result.get("steps", []):
            table.add_row(
                f"  step {step['rate']:g} msg/s",
                f"p99 {fmt(step['latency_ms']['p99'])} ms, "
                f"{fmt(step['deliveries_per_s'])}/s, {step['verdict']}",
            )
    return table


def compare_ratios(
    results: dict[str, dict[str, Any]], base: str = "natter"
) -> dict[str, dict[str, float | None]]:
    """``{reference: {metric label: natter / reference}}`` for every metric of the scenario."""
    if base not in results:
        return {}
    scenario = results[base]["scenario"]
    ours = results[base].get("summary", {})
    out: dict[str, dict[str, float | None]] = {}
    for name, result in results.items():
        if name == base:
            continue
        theirs = result.get("summary", {})
        out[name] = {m.label: ratio(dig(ours, m.path), dig(theirs, m.path)) for m in METRICS[scenario]}
    return out


def compare_document(
    results: dict[str, dict[str, Any]], params: dict[str, Any], floor: dict[str, float] | None = None
) -> dict[str, Any]:
    """The JSON written by ``natter bench compare``; with ``floor`` (rooms: the JetStream floor
    measured in the same run, :func:`natter.bench.floor.floor`) also ``floor`` and
    ``ratios["jetstream_floor"]["latency p99 ms"]`` = natter's p99 / the floor's."""
    first = next(iter(results.values()))
    document = {
        "schema": COMPARE_SCHEMA,
        "scenario": first["scenario"],
        "params": params,
        "machine": first.get("machine"),
        "results": results,
        "ratios": compare_ratios(results),
    }
    if floor is not None:
        document["floor"] = floor
        ours = dig(results.get("natter", {}).get("summary", {}), "latency_ms.p99")
        document["ratios"]["jetstream_floor"] = {"latency p99 ms": ratio(ours, floor["p99_ms"])}
    return document


def compare_table(document: dict[str, Any]) -> Table:
    """Metrics side by side with natter's ratio to each reference."""
    results: dict[str, dict[str, Any]] = document["results"]
    scenario = document["scenario"]
    table = Table(
        title=f"{scenario}: natter vs references (ratio = natter / reference)", title_justify="left"
    )
    table.add_column("metric")
    for name in results:
        table.add_column(target_label(results[name]), justify="right")
    refs = [name for name in results if name != "natter"] if "natter" in results else []
    for ref in refs:
        table.add_column(f"natter/{ref}", justify="right")
    for metric in METRICS[scenario]:
        row = [metric.label]
        row += [fmt(dig(results[name].get("summary", {}), metric.path)) for name in results]
        row += [fmt(document["ratios"].get(ref, {}).get(metric.label)) for ref in refs]
        table.add_row(*row)
    floor = document.get("floor")
    if floor is not None:
        p99 = document["ratios"]["jetstream_floor"]["latency p99 ms"]
        table.add_row(
            f"JetStream floor p99 ms ({floor['streams']} streams, {fmt(floor['rate'])} msg/s)",
            fmt(floor["p99_ms"]),
            *[""] * (len(results) - 1 + len(refs)),
        )
        table.add_row("natter p99 / floor p99", fmt(p99), *[""] * (len(results) - 1 + len(refs)))
    return table
