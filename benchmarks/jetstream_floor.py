"""The floor under natter's "rooms" latency: JetStream publish + PubAck alone, on this machine.

Starts a throwaway nats-server (JetStream, file storage, with and without ``sync_interval:
always``) and publishes 300-byte messages over one connection (the way one chat replica does),
waiting for each PubAck. Two ways to load it:

- closed loop (default): ``--count`` messages from ``--concurrency`` tasks, each waiting for its
  PubAck before the next publish. Gives the most a stream stores per second; its percentiles
  hide the tail (a slow fsync delays the next publish instead of queueing behind it).
- open loop (``--rate R ...``): publishes *scheduled* at ``R`` per second for ``--seconds``,
  each in its own task whether or not earlier ones were acked, the way 1,000 independent
  senders load chat_service; latency runs from the scheduled time, so a stall counts for every
  publish queued behind it (no coordinated omission). ``--streams N`` spreads 250 rooms over N
  streams by room number (the "split ``CHAT_MESSAGES`` by room hash" plan, docs/scaling.md).

Prints a Markdown table. Bounded: ``--count`` messages or ``R x --seconds`` publishes per
setting, a 10 s timeout per publish, loopback only; the server is stopped at the end.

Usage::

    python benchmarks/jetstream_floor.py [--count 4000] [--concurrency 1 16 64]
    python benchmarks/jetstream_floor.py --rate 250 500 1000 --streams 1 4 [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import nats
from nats.js.api import StreamConfig

from natter.bench.floor import PAYLOAD, measure_open, nats_server, percentile_ms
from shared.streams import publish_acked


async def measure(url: str, count: int, concurrency: int) -> tuple[float, float, float]:
    """Closed loop: ``(messages/s, p50 ms, p99 ms)`` of ``count`` acked publishes from
    ``concurrency`` tasks, each waiting for its PubAck before publishing again."""
    nc = await nats.connect(url)
    stream = f"FLOOR_{concurrency}"
    await nc.jetstream().add_stream(StreamConfig(name=stream, subjects=[f"floor{concurrency}.>"]))
    latencies: list[float] = []

    async def sender(lane: int) -> None:
        for _ in range(count // concurrency):
            started = time.perf_counter()
            await publish_acked(nc, f"floor{concurrency}.room{lane}", PAYLOAD, timeout=10)
            latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    await asyncio.gather(*(sender(lane) for lane in range(concurrency)))
    elapsed = time.perf_counter() - began
    await nc.close()
    latencies.sort()
    return len(latencies) / elapsed, percentile_ms(latencies, 0.5), percentile_ms(latencies, 0.99)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=4000, help="closed loop: messages per setting")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--rate", type=float, nargs="+", help="open loop: publishes per second (total)")
    parser.add_argument("--seconds", type=float, default=8.0, help="open loop: seconds per setting")
    parser.add_argument(
        "--streams", type=int, nargs="+", default=[1], help="open loop: streams to spread over"
    )
    args = parser.parse_args()
    if args.rate:
        if not all(0 < r <= 20_000 for r in args.rate) or not 0 < args.seconds <= 60:
            parser.error("--rate must be in (0, 20000] and --seconds in (0, 60]")
        print("| sync_interval | streams | offered msg/s | p50 ms | p90 ms | p99 ms | max ms |")  # noqa: T201 - a command-line report
        print("|---|---|---|---|---|---|---|")  # noqa: T201
        for sync in (True, False):
            label = "always" if sync else "default (2 min)"
            for streams in args.streams:
                for rate in args.rate:
                    with nats_server(sync) as url:  # a fresh store per setting
                        quantiles = asyncio.run(measure_open(url, rate, args.seconds, streams))
                    cells = [label, str(streams), f"{rate:,.0f}", *(f"{v:.2f}" for v in quantiles)]
                    print("| " + " | ".join(cells) + " |")  # noqa: T201
        return
    print("| sync_interval | in flight | msg/s | p50 ms | p99 ms |")  # noqa: T201 - a command-line report
    print("|---|---|---|---|---|")  # noqa: T201
    for sync in (True, False):
        with nats_server(sync) as url:
            for concurrency in args.concurrency:
                rate, p50, p99 = asyncio.run(measure(url, args.count, concurrency))
                label = "always" if sync else "default (2 min)"
                print(f"| {label} | {concurrency} | {rate:,.0f} | {p50:.2f} | {p99:.2f} |")  # noqa: T201


if __name__ == "__main__":
    main()
