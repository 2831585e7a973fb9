"""One socket's ``chat_message`` frames, pipelined (docs/protocol.md, "Pipelined sends").

A socket's frames are answered in arrival order, and a client's messages are stored in the order
it sent them. Handling each ``chat_message`` to its ack before reading the next frame kept both,
but capped one socket at one send per round trip: with ``sync_interval: always`` a send's round
trip through chat_service and storage is ~5-10 ms, so a socket sending 100 messages a second (a
bot, an importer, the benchmark's hot room) fell behind and its queue grew without bound.

So a ``chat_message`` does not stop the reader. While one request is in flight, the frames that
arrive wait here; the next request carries all of them (``chat.send.batch``, up to
:data:`~shared.internal.SEND_BATCH_MAX`), which chat_service stores in list order, plain messages
of a room in one group commit. Any other frame waits until every queued send is answered (a
barrier), so answers still come in arrival order and a ``leave`` or ``edit`` never overtakes a
send before it.

Backpressure: when :attr:`SendPipeline.limit` frames wait, :meth:`SendPipeline.put` waits too,
so the socket's reader stops reading and TCP pushes back on the client (RFC 6455 has no flow
control of its own). The per-socket rate limit (PROTOCOL.md section 1) keeps the queue short
long before that in a default deployment.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

Item = TypeVar("Item")


class SendPipeline(Generic[Item]):
    """Queued sends of one socket and the task that flushes them, one batch at a time.

    Args:
        flush: answers a batch of items (in order); it must not raise (errors are the items'
            answers), an exception is logged and the next batch goes on.
        limit: items that may wait before :meth:`put` blocks (backpressure).
        max_batch: items per :func:`flush` call at most.
    """

    __slots__ = ("_flush", "_queue", "_space", "_task", "limit", "max_batch")

    def __init__(self, flush: Callable[[list[Item]], Awaitable[None]], *, limit: int, max_batch: int) -> None:
        self._flush = flush
        #: a list, not a deque: a socket keeps its pipeline, and an empty list is 56 bytes
        #: against a deque's ~600 (docs/benchmarks.md "idle"); batches are at most 100 items
        self._queue: list[Item] = []
        self._task: asyncio.Task[None] | None = None
        self._space: asyncio.Event | None = None
        self.limit = limit
        self.max_batch = max_batch

    @property
    def busy(self) -> bool:
        """Whether a send is queued or in flight."""
        return self._task is not None

    async def put(self, item: Item) -> None:
        """Queue ``item`` for the next batch; waits while :attr:`limit` items are queued."""
        self._queue.append(item)
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())
        while len(self._queue) >= self.limit and self._task is not None:
            if self._space is None:
                self._space = asyncio.Event()
            self._space.clear()
            await self._space.wait()

    async def settled(self) -> None:
        """Wait until every queued send is answered (the barrier before any other frame)."""
        while self._task is not None:
            await asyncio.shield(self._task)

    async def _run(self) -> None:
        try:
            while self._queue:
                batch = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
                if self._space is not None:
                    self._space.set()
                try:
                    await self._flush(batch)
                except Exception:
                    logger.exception("send pipeline: a batch of %d failed", len(batch))
        finally:
            self._task = None
            if self._space is not None:
                self._space.set()
