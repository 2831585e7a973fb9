"""Fast batched direct gets on one long-lived inbox subscription.

``shared.stream_reader.direct_batch`` subscribes a fresh inbox per call and awaits each message
with ``next_msg`` (a task per message), and nats-py parses every header of every message; for a
page of 50 messages that is several milliseconds. This reader keeps one wildcard inbox
subscription with a callback and routes replies by token (like nats-py's request multiplexer),
and asks for message bodies without headers (``no_hdr``, NATS 2.11+ ADR-31) when the caller only
needs bodies: the batch's end-of-batch status (``204 EOB``) still tells the stream sequence of the
last message delivered (``Nats-Last-Sequence``), which is all a reader needs to continue.

Statuses: ``204`` end of batch, ``404`` nothing matched, ``413`` too many subjects for
``multi_last`` (more than 1024).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from shared.direct_subscription import subscribe_direct
from shared.errors import ErrorCode, ProtocolError
from shared.stream_reader import StoredMsg

logger = logging.getLogger(__name__)

HDR_STATUS = "Status"
HDR_LAST_SEQUENCE = "Nats-Last-Sequence"


@dataclass(frozen=True, slots=True)
class Bodies:
    """A header-less batch: the bodies in stream order and the stream sequence of the last one
    (0 when the batch is empty)."""

    bodies: list[bytes]
    last_stream_seq: int


@dataclass(slots=True)
class _Pending:
    done: asyncio.Future[tuple[str, dict[str, str]]]
    messages: list[Msg] = field(default_factory=list)


class DirectReader:
    """Batched direct gets for one connection; :meth:`start` once, :meth:`close` at the end."""

    def __init__(self, nc: Client, *, timeout: float = 5.0) -> None:
        self._nc = nc
        self._timeout = timeout
        self._prefix = ""
        self._sub: Subscription | None = None
        self._tokens = itertools.count(1)
        self._pending: dict[str, _Pending] = {}

    @property
    def nc(self) -> Client:
        """The connection the reads go over."""
        return self._nc

    async def start(self) -> None:
        """Subscribe the reply inbox (``_INBOX.<nuid>.*``)."""
        self._prefix = self._nc.new_inbox()
        self._sub = await subscribe_direct(self._nc, f"{self._prefix}.*", self._on_reply)

    async def close(self) -> None:
        """Unsubscribe; pending calls time out."""
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    def _on_reply(self, msg: Msg) -> None:
        pending = self._pending.get(msg.subject[len(self._prefix) + 1 :])
        if pending is None or pending.done.done():
            return  # a late reply to a call that timed out
        headers = msg.headers
        status = headers.get(HDR_STATUS) if headers else None
        if status:
            pending.done.set_result((status, dict(headers or {})))
        else:
            pending.messages.append(msg)

    async def _call(self, stream: str, request: dict[str, Any]) -> tuple[str, dict[str, str], list[Msg]]:
        if self._sub is None:
            raise RuntimeError("DirectReader.start() was not awaited")
        token = str(next(self._tokens))
        pending = _Pending(done=asyncio.get_running_loop().create_future())
        self._pending[token] = pending
        try:
            await self._nc.publish(
                f"$JS.API.DIRECT.GET.{stream}", json.dumps(request).encode(), reply=f"{self._prefix}.{token}"
            )
            status, headers = await asyncio.wait_for(pending.done, self._timeout)
        except TimeoutError as error:
            raise ProtocolError(ErrorCode.UNAVAILABLE) from error
        except ProtocolError:
            raise
        except Exception as error:  # connection closed / draining
            raise ProtocolError(ErrorCode.UNAVAILABLE) from error
        finally:
            del self._pending[token]
        return status, headers, pending.messages

    async def bodies(self, stream: str, *, subject: str, start_seq: int, batch: int) -> Bodies:
        """Up to ``batch`` bodies of messages on ``subject`` at stream sequence >= ``start_seq``.

        Raises:
            ProtocolError: ``unavailable`` on timeout or an unexpected status.
        """
        if batch <= 0:
            return Bodies(bodies=[], last_stream_seq=0)
        request = {"seq": max(1, start_seq), "next_by_subj": subject, "batch": batch, "no_hdr": True}
        status, headers, messages = await self._call(stream, request)
        if status == "404":
            return Bodies(bodies=[], last_stream_seq=0)
        if status != "204":
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"direct get status {status}")
        last = int(headers.get(HDR_LAST_SEQUENCE, "0") or 0) if messages else 0
        return Bodies(bodies=[m.data for m in messages], last_stream_seq=last)

    async def multi_last(self, stream: str, subject_filter: str) -> list[StoredMsg] | None:
        """The last message (with headers) of each subject matching ``subject_filter``, in stream
        order; ``[]`` when none matches; ``None`` when more than 1024 subjects match.

        Raises:
            ProtocolError: ``unavailable`` on timeout or an unexpected status.
        """
        status, _, messages = await self._call(stream, {"multi_last": [subject_filter]})
        if status == "413":
            return None
        if status == "404":
            return []
        if status != "204":
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"direct get status {status}")
        out = []
        for msg in messages:
            headers = dict(msg.headers or {})
            out.append(
                StoredMsg(
                    stream_seq=int(headers.get("Nats-Sequence", "0")),
                    subject=headers.get("Nats-Subject", ""),
                    headers=headers,
                    data=msg.data,
                )
            )
        return out
