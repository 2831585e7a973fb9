"""The JetStream floor under natter's ``rooms`` latency: publish + PubAck alone, open loop.

``natter bench compare --scenario rooms`` measures it in the same run as the targets, with the
same total rate, the same number of streams as natter's room log shards and the same
``sync_interval`` (issue 12: rooms p99 <= 2x this floor); ``benchmarks/jetstream_floor.py``
runs it on its own, closed loop too.

Open loop: publishes *scheduled* at ``rate`` per second for ``seconds``, each in its own task
whether or not earlier ones were acked (the way many independent senders load chat_service);
latency runs from the scheduled time, so a stall counts for every publish queued behind it (no
coordinated omission). Publishes cycle over :data:`ROOMS` subjects spread over the streams.
Bounded: ``rate x seconds`` publishes, a 10 s timeout each, loopback only.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nats
from nats.js.api import StreamConfig

from natter.launcher import free_port, nats_server_process, wait_for_port
from shared.streams import publish_acked

#: A message about the size of a stored chat message.
PAYLOAD = b"x" * 300
#: Rooms the open-loop publishes cycle through (the rooms scenario's 250).
ROOMS = 250


def percentile_ms(sorted_values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ascending ``sorted_values`` (seconds), in milliseconds."""
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))] * 1e3


async def measure_open(url: str, rate: float, seconds: float, streams: int) -> list[float]:
    """Open loop: publishes scheduled at ``rate``/s for ``seconds`` over ``streams`` streams;
    returns ``[p50, p90, p99, max]`` in ms, each from the publish's scheduled time to its PubAck."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    tag = f"open{int(rate)}x{streams}"
    for k in range(streams):
        await js.add_stream(StreamConfig(name=f"{tag.upper()}_{k}", subjects=[f"{tag}.{k}.>"]))
    loop = asyncio.get_running_loop()
    latencies: list[float] = []

    async def publish(room: int, due: float) -> None:
        await publish_acked(nc, f"{tag}.{room % streams}.room{room}", PAYLOAD, timeout=10)
        latencies.append(loop.time() - due)

    tasks: list[asyncio.Task[None]] = []
    start = loop.time() + 0.05
    for i in range(int(rate * seconds)):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(publish(i % ROOMS, due)))
    await asyncio.gather(*tasks)
    await nc.close()
    latencies.sort()
    return [*(percentile_ms(latencies, q) for q in (0.5, 0.9, 0.99)), latencies[-1] * 1e3]


@contextmanager
def nats_server(sync: bool) -> Iterator[str]:
    """A throwaway JetStream nats-server on a free loopback port (``sync``: ``sync_interval:
    always``); yields its URL and removes its store at the end."""
    store = Path(tempfile.mkdtemp(prefix="natter-floor-"))
    port = free_port()
    server = nats_server_process(port=port, store_dir=store, sync_always=sync)
    server.die_with_parent = True
    try:
        server.start()
        wait_for_port(port)
        yield f"nats://127.0.0.1:{port}"
    finally:
        server.stop()
        shutil.rmtree(store, ignore_errors=True)


def floor(*, rate: float, seconds: float, streams: int, sync: bool) -> dict[str, float]:
    """The open-loop floor on a fresh server: ``{"rate", "streams", "p50_ms", "p90_ms",
    "p99_ms", "max_ms"}``."""
    with nats_server(sync) as url:
        p50, p90, p99, top = asyncio.run(measure_open(url, rate, seconds, streams))
    return {"rate": rate, "streams": streams, "p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "max_ms": top}
