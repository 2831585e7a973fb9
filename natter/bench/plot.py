"""The PNG of one or more result files (needs matplotlib: the ``bench`` extra).

One row per document (a ``run`` result or a ``compare`` document), two panels per row chosen by
the scenario: fanout/rooms show latency percentiles and server CPU per 1000 deliveries per
target; saturation shows p99 and delivered/s against the offered rate; idle shows KiB per
connection; connect shows connects/s and connect latency.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from natter.bench.report import target_label
from natter.bench.stats import dig

COLORS = {"natter": "#1f77b4", "fastapi": "#2ca02c", "socketio": "#d62728"}


def _results(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    if "results" in document:
        return dict(document["results"])
    return {document["target"]: document}


def _title(document: dict[str, Any]) -> str:
    results = _results(document)
    first = next(iter(results.values()))
    params = first.get("params", {})
    scenario = first["scenario"]
    if scenario == "saturation":
        title = (
            f"saturation: {params.get('members')} members, from {params.get('rate'):g} msg/s "
            f"x{params.get('step_factor'):g} per step"
        )
        if "results" not in document and first["target"] == "natter":  # one natter run on its own
            gateways = int(params.get("gateways", 1))
            title += f", natter alone, {gateways} gateway{'s' if gateways > 1 else ''}"
        return title
    if scenario == "fanout":
        return f"fanout: {params.get('members')} members, {params.get('rate'):g} msg/s"
    if scenario == "rooms":
        return f"rooms: {params.get('rooms')} x {params.get('room_size')}, {params.get('rate'):g} msg/s each"
    if scenario == "idle":
        return f"idle: {params.get('connections')} connections"
    return f"connect: {params.get('churn_concurrency')} concurrent loops"


def _bars(ax: Axes, names: list[str], series: dict[str, list[float | None]], ylabel: str, log: bool) -> None:
    width = 0.8 / max(1, len(names))
    groups = list(series)
    for i, name in enumerate(names):
        xs = [g + i * width for g in range(len(groups))]
        ys = [series[group][i] or 0.0 for group in groups]
        ax.bar(xs, ys, width, label=name, color=COLORS.get(name))
    ax.set_xticks([g + width * (len(names) - 1) / 2 for g in range(len(groups))], groups)
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.legend(fontsize="small")
    ax.grid(axis="y", alpha=0.3)


def _row(axes: tuple[Axes, Axes], document: dict[str, Any]) -> None:
    results = _results(document)
    names = list(results)
    summaries = {name: results[name].get("summary", {}) for name in names}
    scenario = next(iter(results.values()))["scenario"]
    left, right = axes
    left.set_title(_title(document), fontsize="medium")
    if scenario in ("fanout", "rooms"):
        series = {
            q: [dig(summaries[n], f"latency_ms.{q}") for n in names] for q in ("p50", "p90", "p99", "max")
        }
        _bars(left, names, series, "send-to-delivery latency, ms (log)", log=True)
        cost = {
            "server CPU ms / 1k deliveries": [
                dig(summaries[n], "server_cpu_ms_per_1k_deliveries") for n in names
            ]
        }
        _bars(right, names, cost, "CPU ms per 1000 deliveries", log=False)
        right.set_title("server cost (all server processes)", fontsize="medium")
    elif scenario == "saturation":
        for name in names:
            steps = results[name].get("steps", [])
            members = results[name].get("params", {}).get("members", 1)
            offered = [s["rate"] * members for s in steps]
            left.plot(
                offered,
                [s["latency_ms"]["p99"] or 0 for s in steps],
                "o-",
                label=target_label(results[name]),
                color=COLORS.get(name),
            )
            right.plot(
                offered,
                [s["deliveries_per_s"] for s in steps],
                "o-",
                label=target_label(results[name]),
                color=COLORS.get(name),
            )
        limit = next(iter(results.values())).get("params", {}).get("p99_limit_ms", 100)
        left.axhline(limit, color="grey", linestyle="--", linewidth=1)
        left.set_yscale("log")
        left.set_xlabel("offered deliveries/s")
        left.set_ylabel("p99 latency, ms (log)")
        right.set_xlabel("offered deliveries/s")
        right.set_ylabel("delivered/s")
        right.set_title("throughput per step", fontsize="medium")
        for ax in (left, right):
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
    elif scenario == "idle":
        series = {
            "socket process": [dig(summaries[n], "per_connection_kib") for n in names],
            "all processes": [dig(summaries[n], "all_processes_per_connection_kib") for n in names],
        }
        _bars(left, names, series, "RSS KiB per connection", log=False)
        _bars(
            right,
            names,
            {"connect all": [dig(summaries[n], "connect_seconds") for n in names]},
            "seconds",
            False,
        )
        right.set_title("time to open and authenticate all", fontsize="medium")
    else:
        _bars(
            left,
            names,
            {"connects/s": [dig(summaries[n], "connects_per_s") for n in names]},
            "connects/s",
            False,
        )
        series = {q: [dig(summaries[n], f"latency_ms.{q}") for n in names] for q in ("p50", "p99")}
        _bars(right, names, series, "connect+auth latency, ms", log=False)
        right.set_title("connect latency", fontsize="medium")


def plot_documents(documents: list[dict[str, Any]], out: Path) -> None:
    """Write one PNG with a row of two panels per document."""
    rows = max(1, len(documents))
    fig, axes = plt.subplots(rows, 2, figsize=(12, 3.6 * rows), squeeze=False)
    for row, document in enumerate(documents):
        _row((axes[row][0], axes[row][1]), document)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
