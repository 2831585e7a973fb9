"""One socket's bounded send queue (DESIGN.md rule 5).

Fan-out never awaits: :meth:`SendQueue.put` either writes the prebuilt frame straight to the
socket's transport (nothing queued, transport not paused) or queues it for the socket's own
writer task; a queue that would exceed its limit reports overflow and the socket is closed 1013
from a separate task (centrifuge ``writer.enqueue`` -> ``DisconnectSlow``). The transport's
pause/resume (asyncio flow control) is the signal that a client reads too slowly. A close is
queued behind the frames before it, so ``error`` then close 1008 reach the client in order.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway.wire import DirectSink, Outbound

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CloseRequest:
    """Queue item: close the socket with ``code`` and ``reason`` (RFC 6455 section 7.4)."""

    code: int
    reason: str


class SendQueue:
    """A bounded FIFO of outgoing frames (and a final :class:`CloseRequest`) with a writer task.

    Args:
        sink: direct transport writer, or None to send through ASGI ``send_text``.
        send_text: coroutine sending one text frame (Starlette ``WebSocket.send_text``).
        close: coroutine closing the socket with (code, reason).
        limit: frames allowed to wait in the queue; one more is an overflow.

    An idle socket's queue holds no deque and no task: both exist only while frames wait.
    """

    __slots__ = ("_busy", "_close", "_items", "_send_text", "_sink", "_task", "closed", "limit")

    def __init__(
        self,
        sink: DirectSink | None,
        send_text: Callable[[str], Awaitable[None]],
        close: Callable[[int, str], Awaitable[None]],
        limit: int,
    ) -> None:
        self._sink = sink
        self._send_text = send_text
        self._close = close
        self.limit = limit
        self._items: deque[Outbound | CloseRequest] | None = None
        self._busy = False
        self._task: asyncio.Task[None] | None = None
        self.closed = False

    def start(self) -> None:
        """Kept for symmetry: the writer task starts lazily, only while frames wait."""

    def __len__(self) -> int:
        """Frames (and a close) waiting to be written."""
        return len(self._items) if self._items else 0

    def _wake(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def put(self, item: Outbound) -> bool:
        """Send or queue one frame without awaiting; False on overflow."""
        if self.closed:
            return True
        sink = self._sink
        if sink is not None and not self._items and not self._busy and sink.ready():
            sink.write(item.wire)
            return True
        items = self._items
        if items is None:
            items = self._items = deque()
        elif len(items) >= self.limit:
            return False
        items.append(item)
        self._wake()
        return True

    def put_close(self, code: int, reason: str) -> None:
        """Queue a close after the frames already queued; nothing is accepted after it."""
        if self.closed:
            return
        self.closed = True
        if self._items is None:
            self._items = deque()
        self._items.append(CloseRequest(code, reason))
        self._wake()

    async def _run(self) -> None:
        """Drain the queue, then end (an idle socket holds no writer task: less memory)."""
        items = self._items
        try:
            while items:
                item = items.popleft()
                self._busy = True
                if isinstance(item, CloseRequest):
                    items.clear()
                    await self._close(item.code, item.reason)
                    return
                sink = self._sink
                if sink is None:
                    await self._send_text(item.text)
                else:
                    await sink.wait_writable()
                    if sink.gone():
                        return
                    sink.write(item.wire)
                self._busy = False
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the peer went away; the reader notices the disconnect
            logger.debug("writer stopped: %r", error)
        finally:
            self._busy = False
            if self._items is items and not items:
                self._items = None  # the idle socket gives its deque back

    async def abort(self, code: int, reason: str, *, hard_after: float = 3.0) -> None:
        """Drop everything queued, stop the writer and close now (overflow, shutdown).

        The close frame still waits behind what the transport holds; if the peer has not
        completed the close handshake ``hard_after`` seconds later, the connection is dropped.
        """
        self.closed = True
        if self._items is not None:
            self._items.clear()
        await self.stop()
        if self._sink is not None:
            # Scheduled first: sending the close itself waits while the transport is paused.
            asyncio.get_running_loop().call_later(hard_after, self._sink.abort_if_open)
        try:
            await asyncio.wait_for(self._close(code, reason), timeout=hard_after + 2.0)
        except Exception:  # already closed, or dropped by abort_if_open
            pass

    async def stop(self) -> None:
        """Cancel the writer task (after the socket is gone)."""
        self.closed = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
