"""The floor under natter's "rooms" latency: JetStream publish + PubAck alone, on this machine.

Starts a throwaway nats-server (JetStream, file storage, with and without ``sync_interval:
always``), creates one stream like ``CHAT_MESSAGES`` and publishes ``--count`` 300-byte messages
from ``--concurrency`` tasks over one connection (the way one chat replica does), waiting for
each PubAck. Prints messages/s and the publish latency p50/p99. Bounded: ``--count`` messages
per setting, a 10 s timeout per publish, loopback only; the server is stopped at the end.

Usage: ``python benchmarks/jetstream_floor.py [--count 4000] [--concurrency 1 16 64]``
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

import nats
from nats.js.api import StreamConfig

from natter.launcher import free_port, nats_server_process, wait_for_port
from shared.streams import publish_acked


async def measure(url: str, count: int, concurrency: int) -> tuple[float, float, float]:
    """``(messages/s, p50 ms, p99 ms)`` of ``count`` acked publishes from ``concurrency`` tasks."""
    nc = await nats.connect(url)
    stream = f"FLOOR_{concurrency}"
    await nc.jetstream().add_stream(StreamConfig(name=stream, subjects=[f"floor{concurrency}.>"]))
    latencies: list[float] = []
    payload = b"x" * 300

    async def sender(lane: int) -> None:
        for _ in range(count // concurrency):
            started = time.perf_counter()
            await publish_acked(nc, f"floor{concurrency}.room{lane}", payload, timeout=10)
            latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    await asyncio.gather(*(sender(lane) for lane in range(concurrency)))
    elapsed = time.perf_counter() - began
    await nc.close()
    latencies.sort()
    return (
        len(latencies) / elapsed,
        latencies[len(latencies) // 2] * 1e3,
        latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e3,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    args = parser.parse_args()
    print("| sync_interval | in flight | msg/s | p50 ms | p99 ms |")  # noqa: T201 - a command-line report
    print("|---|---|---|---|---|")  # noqa: T201
    for sync in (True, False):
        store = Path(tempfile.mkdtemp(prefix="natter-floor-"))
        port = free_port()
        server = nats_server_process(port=port, store_dir=store, sync_always=sync)
        server.die_with_parent = True
        try:
            server.start()
            wait_for_port(port)
            for concurrency in args.concurrency:
                rate, p50, p99 = asyncio.run(measure(f"nats://127.0.0.1:{port}", args.count, concurrency))
                label = "always" if sync else "default (2 min)"
                print(f"| {label} | {concurrency} | {rate:,.0f} | {p50:.2f} | {p99:.2f} |")  # noqa: T201
        finally:
            server.stop()
            shutil.rmtree(store, ignore_errors=True)


if __name__ == "__main__":
    main()
