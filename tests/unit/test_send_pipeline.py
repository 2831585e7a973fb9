"""gateway.send_pipeline: one batch in flight, the rest queued in order, bounded by ``limit``."""

from __future__ import annotations

import asyncio

from gateway.send_pipeline import SendPipeline


class Flusher:
    """Records each batch and holds it until released."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()

    async def __call__(self, batch: list[int]) -> None:
        self.batches.append(batch)
        await self.release.wait()


async def test_items_that_arrive_during_a_flush_go_together_in_order() -> None:
    flusher = Flusher()
    pipeline: SendPipeline[int] = SendPipeline(flusher, limit=100, max_batch=10)
    await pipeline.put(0)
    await asyncio.sleep(0)  # the first batch is in flight
    for item in range(1, 26):
        await pipeline.put(item)
    assert pipeline.busy and flusher.batches == [[0]]
    flusher.release.set()
    await pipeline.settled()
    assert flusher.batches == [[0], list(range(1, 11)), list(range(11, 21)), list(range(21, 26))]
    assert not pipeline.busy


async def test_put_waits_while_the_queue_is_full() -> None:
    flusher = Flusher()
    pipeline: SendPipeline[int] = SendPipeline(flusher, limit=3, max_batch=2)
    await pipeline.put(0)
    await asyncio.sleep(0)
    await pipeline.put(1)
    await pipeline.put(2)
    blocked = asyncio.ensure_future(pipeline.put(3))  # the third queued item: at the limit
    await asyncio.sleep(0.01)
    assert not blocked.done()
    flusher.release.set()
    await asyncio.wait_for(blocked, 1)
    await pipeline.settled()
    assert [item for batch in flusher.batches for item in batch] == [0, 1, 2, 3]


async def test_a_failing_flush_does_not_stop_the_next_batches() -> None:
    seen: list[list[int]] = []
    release = asyncio.Event()

    async def flush(batch: list[int]) -> None:
        seen.append(batch)
        await release.wait()
        if batch == [0]:
            raise RuntimeError("boom")

    pipeline: SendPipeline[int] = SendPipeline(flush, limit=10, max_batch=10)
    await pipeline.put(0)
    await asyncio.sleep(0)
    await pipeline.put(1)  # queued behind the batch that fails
    release.set()
    await pipeline.settled()
    assert seen == [[0], [1]] and not pipeline.busy
