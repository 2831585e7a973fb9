"""Downloading attachments: time and gateway memory (PROTOCOL.md section 11, GET /api/attachments/{id}).

Starts natter as ``natter bench`` does (nats-server with ``sync_interval: always``, one process
of each service, one gateway whose attachment limit is ``--max-mib``), uploads one file of
``--mib`` MiB of text to ``general`` as a registered user, then ``--rounds`` times lets
``--clients`` HTTP clients download it at once. Every download is checked byte for byte.
Prints one Markdown row: the file, the clients, the median wall time of a round, MiB/s
delivered, the gateway's resident memory once the upload is done and its peak during the
downloads, and how far the upload itself raised its peak above idle (``VmRSS``, ``VmHWM`` of
``/proc/<pid>/status``, the peak reset before and after the upload; needs permission to write
``/proc/<pid>/clear_refs``, as the process's owner).

    .venv/bin/python benchmarks/attachment_download.py --mib 8 --clients 10 --rounds 3

Loopback only, bounded: every wait has a timeout and every process is stopped at the end
(and with this one, should it die).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from natter.bench.spec import TargetKind
from natter.bench.targets import start_target


def status_kib(pid: int, field: str) -> int:
    """``field`` (``VmRSS``, ``VmHWM``) of ``/proc/<pid>/status`` in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


def reset_peak(pid: int) -> None:
    """Reset ``VmHWM`` of ``pid`` to its current RSS (``clear_refs`` value 5, Linux 4.0+)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


async def run_rounds(
    base: str, token: str, payload: bytes, clients: int, rounds: int, pid: int
) -> tuple[list[float], int, int]:
    """Upload ``payload`` as the user of ``token``, reset the gateway's (``pid``) peak RSS, then
    ``rounds`` rounds of ``clients`` parallel downloads: the wall seconds of each round and the
    gateway's RSS (KiB) once the upload is done, and how far the upload raised its peak RSS (KiB)."""
    async with httpx.AsyncClient(base_url=base, timeout=120) as http:
        headers = {"Authorization": f"Bearer {token}"}
        reset_peak(pid)
        rss_idle = status_kib(pid, "VmRSS")
        uploaded = await http.post(
            "/api/rooms/general/attachments", files={"file": ("big.txt", payload)}, headers=headers
        )
        uploaded.raise_for_status()
        url = f"/api/attachments/{uploaded.json()['attachment_id']}"
        upload_peak = status_kib(pid, "VmHWM") - rss_idle
        reset_peak(pid)  # the upload's own buffers are not the downloads' cost
        rss_uploaded = status_kib(pid, "VmRSS")

        async def one() -> None:
            got = await http.get(url, headers=headers)
            got.raise_for_status()
            if got.content != payload:
                raise RuntimeError(f"download differs: {len(got.content)} bytes of {len(payload)}")

        walls = []
        for _ in range(rounds):
            started = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(clients)))
            walls.append(time.perf_counter() - started)
        return walls, rss_uploaded, upload_peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=float, default=8.0, help="size of the file, MiB")
    parser.add_argument("--max-mib", type=int, default=64, help="the gateway's attachment limit, MiB")
    parser.add_argument("--clients", type=int, default=10, help="parallel downloads per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (median reported)")
    args = parser.parse_args()
    payload = (b"natter attachment download benchmark line\n" * (int(args.mib * 1024 * 1024) // 42 + 1))[
        : int(args.mib * 1024 * 1024)
    ]
    # the gateway (a child of this process) takes its limit from the environment
    os.environ["NATTER_GATEWAY_ATTACHMENT_MAX_BYTES"] = str(args.max_mib * 1024 * 1024)
    with tempfile.TemporaryDirectory(prefix="natter-download-") as name:
        target = start_target(
            TargetKind.natter, workdir=Path(name), users=1, run_id=uuid.uuid4().hex[:6], nats_sync=True
        )
        try:
            pid = target.pids()["gateway"]
            walls, rss_before, upload_peak = asyncio.run(
                run_rounds(target.http_url, target.tokens[0], payload, args.clients, args.rounds, pid)
            )
            peak = status_kib(pid, "VmHWM")
        finally:
            target.stop()
    wall = statistics.median(walls)
    rate = args.mib * args.clients / wall
    columns = ["file", "clients", "round (median)", "rounds", "MiB/s", "gateway RSS after the upload"]
    columns += ["gateway peak RSS while downloading", "upload: gateway peak RSS above idle"]
    print("| " + " | ".join(columns) + " |")  # noqa: T201 - a command-line report
    print("|" + "---|" * len(columns))  # noqa: T201
    print(  # noqa: T201
        f"| {args.mib:g} MiB | {args.clients} | {wall * 1000:.0f} ms | "
        f"{', '.join(f'{w * 1000:.0f}' for w in walls)} ms | {rate:.0f} | "
        f"{rss_before / 1024:.1f} MiB | {peak / 1024:.1f} MiB | {upload_peak / 1024:.1f} MiB |"
    )


if __name__ == "__main__":
    main()
