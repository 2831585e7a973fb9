"""One response inbox per NATS connection for every request natter makes (a "resp mux").

nats.py's ``Client.request`` already multiplexes replies over one wildcard inbox, but for each
request it also draws a fresh NUID in Python, reads ``os.urandom`` for two more token bytes and
waits through ``asyncio.wait_for``: about a quarter of the gateway's per-message CPU on the
send path and of chat_service's JetStream publish (docs/benchmarks.md, "rooms"). Here a request
is a counter token, one future and one ``call_later`` timer; the inbox prefix is still a NUID
(unique per connection, NATS docs "Request-Reply": ``_INBOX.<nuid>.*``), so replies can never
cross connections.

:func:`mux_for` returns the connection's mux (created on first use; its subscription survives
reconnects like every nats.py subscription). :meth:`RequestMux.request` raises nats.py's own
errors, so callers keep their error mapping: ``NoRespondersError`` for a ``503`` status reply
(no subscriber, NATS ADR-22 "no responders"), ``nats.errors.TimeoutError`` when nothing answers
in time, and whatever ``publish`` raises when the connection is closed or draining.

The mux itself uses only nats.py's public API; its inbox subscription is a
:func:`~shared.direct_subscription.subscribe_direct` one, so it follows the nats-py fast path
check (:mod:`shared.fastpaths`): with the fast path off, replies arrive through an ordinary
callback subscription.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from shared.direct_subscription import subscribe_direct

#: Status header value of a "no responders" reply (NATS ADR-22).
NO_RESPONDERS: Final = "503"
_ATTR: Final = "_natter_request_mux"


class RequestMux:
    """Requests over ``nc`` with replies routed by token to waiting futures.

    Args:
        nc: a connected client; the mux subscribes ``<inbox prefix>.<nuid>.*`` on first use.
    """

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._prefix = ""
        self._next = 0
        self._waiting: dict[str, asyncio.Future[Msg] | _Collector] = {}
        self._ready: asyncio.Future[None] | None = None

    async def _start(self) -> None:
        if self._ready is None:
            self._ready = asyncio.get_running_loop().create_future()
            try:
                prefix = f"{self._nc.new_inbox()}."
                await subscribe_direct(self._nc, f"{prefix}*", self._on_reply)
            except BaseException as error:
                self._ready.set_exception(error)
                self._ready.exception()  # retrieved: later callers see it through await
                self._ready = None
                raise
            self._prefix = prefix
            self._ready.set_result(None)
        await self._ready

    def _on_reply(self, msg: Msg) -> None:
        token = msg.subject[len(self._prefix) :]
        entry = self._waiting.get(token)
        if entry is None:
            return
        if isinstance(entry, _Collector):
            if entry.add(msg):
                del self._waiting[token]
            return
        del self._waiting[token]
        if not entry.done():
            entry.set_result(msg)

    def _token(self) -> str:
        self._next += 1
        return format(self._next, "x")

    async def request(
        self,
        subject: str,
        payload: bytes,
        *,
        timeout: float,
        headers: dict[str, str] | None = None,
    ) -> Msg:
        """Publish ``payload`` on ``subject`` with a reply inbox and return the reply.

        Raises:
            nats.errors.NoRespondersError: no subscriber on ``subject`` (status 503 reply).
            nats.errors.TimeoutError: no reply within ``timeout`` seconds.
            nats.errors.Error: from ``publish`` (closed, draining, bad subject, ...).
        """
        if not self._prefix:
            await self._start()
        token = self._token()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Msg] = loop.create_future()
        self._waiting[token] = future
        timer = loop.call_later(timeout, _expire, future)
        try:
            await self._nc.publish(subject, payload, reply=self._prefix + token, headers=headers)
            msg = await future
        finally:
            timer.cancel()
            self._waiting.pop(token, None)
        if msg.headers and msg.headers.get("Status") == NO_RESPONDERS:
            raise NoRespondersError
        return msg

    async def request_many(
        self,
        subject: str,
        payload: bytes,
        *,
        timeout: float,
        last: Callable[[Msg], bool],
    ) -> list[Msg]:
        """Publish once and collect every reply on the inbox until ``last(msg)`` is True (that
        reply included), e.g. a batched direct get's messages up to its end-of-batch status.

        Raises:
            nats.errors.TimeoutError: the replies did not end within ``timeout`` seconds.
            nats.errors.Error: from ``publish``.
        """
        if not self._prefix:
            await self._start()
        token = self._token()
        loop = asyncio.get_running_loop()
        collector = _Collector(loop.create_future(), last)
        self._waiting[token] = collector
        timer = loop.call_later(timeout, _expire, collector.done)
        try:
            await self._nc.publish(subject, payload, reply=self._prefix + token)
            await collector.done
        finally:
            timer.cancel()
            self._waiting.pop(token, None)
        return collector.messages

    @property
    def waiting(self) -> int:
        """Requests waiting for a reply."""
        return len(self._waiting)


class _Collector:
    """Replies of one :meth:`RequestMux.request_many`; ``done`` resolves at the last one."""

    __slots__ = ("done", "last", "messages")

    def __init__(self, done: asyncio.Future[None], last: Callable[[Msg], bool]) -> None:
        self.done = done
        self.last = last
        self.messages: list[Msg] = []

    def add(self, msg: Msg) -> bool:
        """Keep ``msg``; True (and ``done`` resolved) if it is the last one."""
        self.messages.append(msg)
        if not self.last(msg):
            return False
        if not self.done.done():
            self.done.set_result(None)
        return True


def _expire(future: asyncio.Future[Msg] | asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(NatsTimeoutError())


def mux_for(nc: Client) -> RequestMux:
    """The connection's :class:`RequestMux` (one per client object)."""
    mux: RequestMux | None = getattr(nc, _ATTR, None)
    if mux is None:
        mux = RequestMux(nc)
        setattr(nc, _ATTR, mux)
    return mux
