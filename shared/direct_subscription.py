"""Subscriptions whose messages are handled inside nats.py's read loop: no task, no queue.

nats.py gives every callback subscription an ``asyncio.Queue`` and a task that awaits it
(nats.py ``aio/subscription.py``, ``_wait_for_msgs``). Measured with tracemalloc: 4.8 KiB per
subscription (four deques of 760 B in the queue and its ``Event``, ~0.9 KiB of task), plus a
task switch for every message. A gateway holds one such subscription per local user
(``deliver.user.<id>``) and per room with local members, and every natter process holds one
for its request inbox. The handlers behind them are synchronous and never block: they resolve
a future, or they put prebuilt bytes on sockets' send queues. For them that machinery is pure
overhead.

:func:`subscribe_direct` subscribes without a callback, so nats.py starts no task. It then puts
a :class:`DirectDispatch` where nats.py's ``Client._process_msg`` delivers each message
(``sub._pending_queue.put_nowait(msg)``). The handler therefore runs at once, in arrival order,
in the client's read loop. Everything else stays nats.py's:

- the SUB, and its replay after a reconnect;
- ``unsubscribe``, ``drain``, ``close``;
- slow-consumer accounting: the dispatcher subtracts each message's size as soon as it has been
  handled, as nats.py's own task does.

Whether it may is decided once per process by :func:`shared.fastpaths.nats_fast_path` (the
switch ``NATTER_FAST_PATHS``, the verified nats-py version, a probe of these internals). When it
says no, :func:`subscribe_direct` makes an ordinary callback subscription, which behaves the same,
only slower.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from shared.fastpaths import nats_fast_path

logger = logging.getLogger(__name__)

#: A synchronous, non-blocking message handler (it must not await or do slow work).
Handler = Callable[[Msg], None]
#: The nats.py internals :func:`subscribe_direct` relies on (nats.py 2.x ``Subscription``).
_INTERNALS: Final = ("_pending_queue", "_pending_size", "_message_iterator", "_wait_for_msgs_task")


class DirectDispatch:
    """Stands in for a subscription's pending queue: each message put is handled at once.

    Implements the part of ``asyncio.Queue`` that nats.py uses on a subscription's queue:
    ``put_nowait`` when a message arrives, ``qsize``/``empty`` for ``pending_msgs``, and
    ``join``/``task_done`` when draining. A handler's exception is logged and never reaches
    nats.py's read loop, so one bad message cannot stop the connection from reading.
    """

    __slots__ = ("_handler", "_sub")

    def __init__(self, sub: Subscription, handler: Handler) -> None:
        self._sub = sub
        self._handler = handler

    def put_nowait(self, msg: Msg) -> None:
        """Handle ``msg`` now (called by nats.py's ``Client._process_msg``)."""
        self._sub._pending_size -= len(msg.data)  # nats.py added it just before; nothing waits
        try:
            self._handler(msg)
        except Exception:
            logger.exception("handler for %s failed", msg.subject)

    def qsize(self) -> int:
        """Messages waiting: always 0."""
        return 0

    def empty(self) -> bool:
        """Always True: nothing ever waits."""
        return True

    def task_done(self) -> None:
        """Nothing to account for."""

    async def join(self) -> None:
        """Return at once: every message was handled when it arrived (nats.py's drain)."""


async def subscribe_direct(nc: Client, subject: str, handler: Handler, *, queue: str = "") -> Subscription:
    """Subscribe to ``subject`` (in queue group ``queue`` if given) with ``handler`` run inline.

    Args:
        nc: a connected client.
        subject: the subject (wildcards allowed).
        handler: called with each message, in order, in nats.py's read loop; it must be
            synchronous and quick. Its exceptions are logged.
        queue: queue group name, or "" for none.

    Returns:
        The nats.py subscription; ``unsubscribe()`` and ``drain()`` work as usual. Iterating over
        it or calling ``next_msg()`` is not supported.

    Raises:
        nats.errors.Error: as ``Client.subscribe`` (closed or draining connection, bad subject).
    """
    if not nats_fast_path().enabled:
        return await nc.subscribe(subject, queue=queue, cb=_as_coroutine(handler))
    sub = await nc.subscribe(subject, queue=queue)
    if not all(hasattr(sub, name) for name in _INTERNALS) or sub._wait_for_msgs_task is not None:
        await sub.unsubscribe()
        return await nc.subscribe(subject, queue=queue, cb=_as_coroutine(handler))
    pending = sub._pending_queue
    sub._pending_queue = DirectDispatch(sub, handler)  # type: ignore[assignment]
    sub._message_iterator = None  # it holds the replaced queue; close() skips a None iterator
    while not pending.empty():  # nothing can have arrived yet, but never drop a message
        sub._pending_queue.put_nowait(pending.get_nowait())
    return sub


def _as_coroutine(handler: Handler) -> Callable[[Msg], Awaitable[None]]:
    """``handler`` as the coroutine function nats.py's callback subscriptions require."""

    async def callback(msg: Msg) -> None:
        handler(msg)

    return callback
