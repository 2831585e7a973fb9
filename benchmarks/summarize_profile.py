"""Summarise py-spy collapsed stacks (``py-spy record --format raw``): the functions where the
sampled process spent its time, by self time (the innermost frame) and inclusive time (anywhere on
the stack), and by module.

Usage: ``python benchmarks/summarize_profile.py stacks.txt [--top 25]``
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

FRAME_RE = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]+)(?::\d+)?\)$")


def frame_name(frame: str) -> tuple[str, str]:
    """``("func (short/path.py)", "module path")`` of one collapsed frame."""
    match = FRAME_RE.match(frame.strip())
    if match is None:
        return frame.strip(), frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{match['func']} ({path})", path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stacks", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--samples-per-second", type=float, default=0)
    parser.add_argument("--seconds", type=float, default=0)
    args = parser.parse_args()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    modules: Counter[str] = Counter()
    total = 0
    for line in args.stacks.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame_name(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        self_time[frames[-1][0]] += count
        modules[frames[-1][1]] += count
        for name in {name for name, _ in frames}:
            inclusive[name] += count
    lines = [f"samples on CPU: {total}"]
    if args.samples_per_second and args.seconds:
        busy = 100 * total / (args.samples_per_second * args.seconds)
        lines.append(f"~{busy:.0f}% of one core busy in the sampled interval")
    for title, counter in (("self", self_time), ("inclusive", inclusive), ("self by file", modules)):
        lines.append(f"\n{title}:")
        for name, count in counter.most_common(args.top):
            lines.append(f"  {100 * count / max(1, total):5.1f}%  {name}")
    print("\n".join(lines))  # noqa: T201 - a command-line report


if __name__ == "__main__":
    main()
