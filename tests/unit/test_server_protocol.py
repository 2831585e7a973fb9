"""The slim replacements for uvicorn's per-socket ``asyncio.Queue`` and ``asyncio.Event``."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from gateway.server_protocol import ReceiveQueue, WritableFlag, protocol_class


async def _cancel_while_waiting(waiting: Coroutine[Any, Any, object]) -> None:
    """Run ``waiting`` until it blocks, cancel it, and check that it ended cancelled."""
    task = asyncio.create_task(waiting)
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_queue_is_fifo_and_empty_holds_no_deque() -> None:
    queue = ReceiveQueue()
    assert queue.empty() and queue.qsize() == 0
    for n in range(3):
        queue.put_nowait(n)
    assert queue.qsize() == 3 and not queue.empty()
    assert [await queue.get() for _ in range(3)] == [0, 1, 2]
    assert queue.empty() and queue._items is None


async def test_queue_get_waits_for_a_put() -> None:
    queue = ReceiveQueue()
    reader = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    assert not reader.done()
    queue.put_nowait({"type": "websocket.connect"})
    assert await asyncio.wait_for(reader, 1) == {"type": "websocket.connect"}


async def test_queue_cancelled_reader_leaves_it_usable() -> None:
    queue = ReceiveQueue()
    await _cancel_while_waiting(queue.get())
    queue.put_nowait("after")
    assert await asyncio.wait_for(queue.get(), 1) == "after"


async def test_queue_refuses_a_second_concurrent_reader() -> None:
    queue = ReceiveQueue()
    first = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError):
        await queue.get()
    queue.put_nowait(1)
    assert await asyncio.wait_for(first, 1) == 1


async def test_flag_wait_returns_at_once_when_set_and_blocks_when_clear() -> None:
    flag = WritableFlag()
    assert not flag.is_set()
    flag.set()
    assert await asyncio.wait_for(flag.wait(), 1) is True
    flag.clear()
    waiters = [asyncio.create_task(flag.wait()) for _ in range(2)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    flag.set()
    assert await asyncio.wait_for(asyncio.gather(*waiters), 1) == [True, True]
    assert flag._waiters is None


async def test_flag_cancelled_waiter_is_forgotten() -> None:
    flag = WritableFlag()
    await _cancel_while_waiting(flag.wait())
    assert not flag._waiters
    flag.set()
    assert flag.is_set()


@pytest.mark.usefixtures("fast_paths_on")
def test_the_installed_uvicorn_gets_the_slim_protocol() -> None:
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    cls = protocol_class()
    assert isinstance(cls, type) and issubclass(cls, WebSocketsSansIOProtocol)
