"""Print the comparison JSONs of ``natter bench compare`` as Markdown tables (for
docs/benchmarks.md): each scenario's metrics on every target and natter's ratio to each reference.

Usage: ``python benchmarks/results_table.py benchmarks/results/fanout-100.json ...``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from natter.bench.report import METRICS, compare_ratios, fmt, target_label
from natter.bench.stats import dig


def table(document: dict[str, Any]) -> str:
    results: dict[str, dict[str, Any]] = document["results"]
    names = list(results)
    refs = [n for n in names if n != "natter"]
    ratios = compare_ratios(results)
    head = ["metric", *(target_label(results[n]) for n in names), *(f"natter/{r}" for r in refs)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for metric in METRICS[document["scenario"]]:
        cells = [metric.label]
        cells += [fmt(dig(results[n].get("summary", {}), metric.path)) for n in names]
        cells += [fmt(ratios.get(r, {}).get(metric.label)) for r in refs]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args()
    for file in args.files:
        document = json.loads(file.read_text())
        print(f"\n### {file.stem}\n\n{table(document)}")  # noqa: T201 - a command-line report


if __name__ == "__main__":
    main()
