"""Requests in flight, correlated by ``id`` (PROTOCOL.md section 1), with retries and deadlines.

Each time a request is put on a socket it gets a fresh ``id``; the server's answer echoing that
``id`` settles it. :class:`RequestTable` keeps the requests until then and survives socket changes:

- ``attach(write)``: a new socket; only ``early`` requests (the client's own re-joins and token
  refresh) go out until ``go_live()``, which sends every waiting request in the order they were
  made.
- ``detach()``: the socket closed; answers on it will never come. Requests with ``resend`` wait
  for the next socket (a send keeps its ``client_msg_id``: the server's idempotency makes the
  resend safe), the others fail with :class:`~natter.sdk.errors.ConnectionLost`.
- An ``error`` answer with code ``rate_limited`` (after ``retry_after`` plus jitter) or
  ``unavailable`` (after a full-jitter backoff) is retried with the same frame until the
  request's deadline; a ``retry_hook`` may allow more. Past the deadline the last error, or
  :class:`~natter.sdk.errors.RequestTimeout`, is raised to the caller.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from natter.sdk import frames
from natter.sdk.backoff import Backoff
from natter.sdk.errors import ConnectionLost, RequestError, RequestTimeout, error_from_frame

logger = logging.getLogger(__name__)

Frame = dict[str, Any]


@dataclass(eq=False)
class Request:
    """One request until it is answered, fails or passes its deadline (loop time, seconds)."""

    key: int
    frame: Frame
    kind: str
    future: asyncio.Future[Frame]
    deadline: float
    resend: bool
    early: bool
    retry: bool
    on_answer: Callable[[Frame], None] | None
    backoff: Backoff
    wire_id: str | None = None
    timer: asyncio.TimerHandle | None = None
    expiry: asyncio.TimerHandle | None = None
    last_error: RequestError | None = None


#: ``(request, error) -> seconds before retrying, or None``: extra retry rules of the caller.
RetryHook = Callable[[Request, RequestError], float | None]


class RequestTable:
    """The requests of one client, across its sockets.

    Args:
        id_prefix: prefix of every ``id`` (unique per client, e.g. random hex).
        backoff_base / backoff_cap: full-jitter backoff of ``unavailable`` retries (seconds).
        retry_hook: extra retry rules (returns a delay) for errors not retried by default.
    """

    def __init__(
        self,
        *,
        id_prefix: str,
        backoff_base: float = 0.2,
        backoff_cap: float = 10.0,
        retry_hook: RetryHook | None = None,
    ) -> None:
        self.id_prefix = id_prefix
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.retry_hook = retry_hook
        self._pending: dict[int, Request] = {}
        self._by_wire: dict[str, Request] = {}
        self._keys = itertools.count(1)
        self._ids = itertools.count(1)
        self._write: Callable[[str], None] | None = None
        self._live = False
        self._fire_and_forget: deque[str] = deque(maxlen=256)

    def new_id(self) -> str:
        """A fresh request ``id``."""
        return f"{self.id_prefix}{next(self._ids)}"

    @property
    def attached(self) -> bool:
        """Whether a socket is attached (live or not)."""
        return self._write is not None

    @property
    def live(self) -> bool:
        """Whether the attached socket takes every request."""
        return self._live

    def __len__(self) -> int:
        return len(self._pending)

    # --- sockets --------------------------------------------------------------------------
    def attach(self, write: Callable[[str], None]) -> None:
        """A new socket: ``write`` queues one text frame on it without awaiting."""
        self._write = write
        self._live = False

    def go_live(self) -> None:
        """Let every request through, sending those that wait, oldest first."""
        self._live = True
        for request in list(self._pending.values()):
            if request.wire_id is None and request.timer is None:
                self._dispatch(request)

    def detach(self) -> None:
        """The socket is gone: forget its ids; resend-able requests wait for the next socket."""
        self._write = None
        self._live = False
        self._by_wire.clear()
        for request in list(self._pending.values()):
            request.wire_id = None
            if not request.resend:
                self._settle(request, error=ConnectionLost("socket closed before the answer"))

    def fail_all(self, error: BaseException) -> None:
        """Fail every pending request with ``error`` (client closed or stopped)."""
        for request in list(self._pending.values()):
            self._settle(request, error=error)

    # --- requests -------------------------------------------------------------------------
    async def request(
        self,
        frame: Frame,
        *,
        kind: str,
        timeout: float,
        on_answer: Callable[[Frame], None] | None = None,
        early: bool = False,
        resend: bool = True,
        retry: bool = True,
    ) -> Frame:
        """Send ``frame`` with a fresh ``id`` (now, or on the next live socket) and return the
        answer.

        Args:
            kind: a label for logs and timeouts (``"send"``, ``"join"``...).
            timeout: seconds until the request fails, retries and resends included.
            on_answer: called with a successful answer as soon as it is read, before any later
                frame is handled (the client feeds ``joined`` answers to its sequencer there).
            early: may go out before :meth:`go_live` (the client's own re-joins and refresh).
            resend: wait for the next socket if this one closes first (else ConnectionLost).
            retry: retry ``rate_limited`` / ``unavailable`` (and what ``retry_hook`` allows).

        Raises:
            RequestError: the ``error`` answer (typed by code).
            RequestTimeout: no answer within ``timeout``.
            ConnectionLost: not ``resend`` and the socket closed (or none is attached).
        """
        if not resend and self._write is None:
            raise ConnectionLost("not connected")
        loop = asyncio.get_running_loop()
        request = Request(
            key=next(self._keys),
            frame=frame,
            kind=kind,
            future=loop.create_future(),
            deadline=loop.time() + timeout,
            resend=resend,
            early=early,
            retry=retry,
            on_answer=on_answer,
            backoff=Backoff(self.backoff_base, self.backoff_cap),
        )
        self._pending[request.key] = request
        request.expiry = loop.call_at(request.deadline, self._expire, request, timeout)
        self._dispatch(request)
        try:
            return await request.future
        finally:
            self._discard(request)

    def send_unanswered(self, frame: Frame) -> bool:
        """Send a frame that gets no answer unless it fails (``typing``); an error answer is
        logged and dropped. False if no live socket."""
        if self._write is None or not self._live:
            return False
        wire_id = self.new_id()
        self._fire_and_forget.append(wire_id)
        self._write(frames.dumps({**frame, "id": wire_id}))
        return True

    def answer(self, frame: Frame) -> bool:
        """Route a frame carrying an ``id``; True if it was an answer to one of ours."""
        wire_id = frame.get("id")
        if not isinstance(wire_id, str):
            return False
        request = self._by_wire.pop(wire_id, None)
        if request is None:
            if wire_id in self._fire_and_forget:
                logger.info("natter: unanswered request refused: %s", frame.get("code"))
                return True
            return wire_id.startswith(self.id_prefix)  # a late answer to a retried request
        request.wire_id = None
        if request.future.done():
            return True
        if frame.get("type") == "error":
            self._on_error(request, error_from_frame(frame))
            return True
        if request.on_answer is not None:
            try:
                request.on_answer(frame)
            except Exception:
                logger.exception("natter: handling the %s answer failed", request.kind)
        self._settle(request, answer=frame)
        return True

    # --- internals ------------------------------------------------------------------------
    def _dispatch(self, request: Request) -> None:
        if request.future.done() or self._write is None or not (self._live or request.early):
            return
        wire_id = self.new_id()
        request.wire_id = wire_id
        self._by_wire[wire_id] = request
        self._write(frames.dumps({**request.frame, "id": wire_id}))

    def _on_error(self, request: Request, error: RequestError) -> None:
        delay = self._retry_delay(request, error)
        loop = asyncio.get_running_loop()
        if delay is not None and loop.time() + delay < request.deadline:
            request.last_error = error
            request.timer = loop.call_later(delay, self._retry_now, request)
            logger.debug("natter: %s answered %s, retry in %.2fs", request.kind, error.code, delay)
            return
        self._settle(request, error=error)

    def _retry_delay(self, request: Request, error: RequestError) -> float | None:
        if not request.retry:
            return None
        if error.code == "rate_limited":
            # retry_after is when one frame fits again; the jitter spreads concurrent retries.
            return max(error.retry_after or 0.05, 0.01) + request.backoff.next_delay()
        if error.code == "unavailable":
            return request.backoff.next_delay()
        return self.retry_hook(request, error) if self.retry_hook is not None else None

    def _retry_now(self, request: Request) -> None:
        request.timer = None
        self._dispatch(request)

    def _expire(self, request: Request, timeout: float) -> None:
        request.expiry = None
        error = request.last_error or RequestTimeout(f"no answer to {request.kind} within {timeout:g}s")
        self._settle(request, error=error)

    def _settle(
        self, request: Request, *, answer: Frame | None = None, error: BaseException | None = None
    ) -> None:
        if request.future.done():
            return
        if error is not None:
            request.future.set_exception(error)
        else:
            request.future.set_result(answer or {})
        self._discard(request)

    def _discard(self, request: Request) -> None:
        for handle in (request.timer, request.expiry):
            if handle is not None:
                handle.cancel()
        request.timer = request.expiry = None
        self._pending.pop(request.key, None)
        if request.wire_id is not None:
            self._by_wire.pop(request.wire_id, None)
            request.wire_id = None
