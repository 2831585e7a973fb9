"""Batched direct gets that ask for bodies only, and ``multi_last``, over the request mux.

``shared.stream_reader.direct_batch`` returns every message with its parsed headers. A reader
that needs only bodies asks for none (``no_hdr``, NATS 2.11+ ADR-31); for a page of 50 messages
nats-py then parses no header lines. The batch's end-of-batch status (``204 EOB``) still gives
the stream sequence of the last message delivered (``Nats-Last-Sequence``), which is all a reader
needs to continue. Replies come back over the connection's one response inbox
(:func:`shared.request_mux.mux_for`, ``request_many``), like every other request natter makes.

Statuses: ``204`` end of batch, ``404`` nothing matched, ``413`` too many subjects for
``multi_last`` (more than 1024).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg

from shared.errors import ErrorCode, ProtocolError
from shared.request_mux import mux_for
from shared.stream_reader import StoredMsg

HDR_STATUS = "Status"
HDR_LAST_SEQUENCE = "Nats-Last-Sequence"


@dataclass(frozen=True, slots=True)
class Bodies:
    """A header-less batch: the bodies in stream order and the stream sequence of the last one
    (0 when the batch is empty)."""

    bodies: list[bytes]
    last_stream_seq: int


class DirectReader:
    """Batched direct gets for one connection (stateless: replies use the connection's mux)."""

    def __init__(self, nc: Client, *, timeout: float = 5.0) -> None:
        self._nc = nc
        self._timeout = timeout

    @property
    def nc(self) -> Client:
        """The connection the reads go over."""
        return self._nc

    async def _call(self, stream: str, request: dict[str, Any]) -> tuple[str, dict[str, str], list[Msg]]:
        """``(status, status headers, messages before the status)`` of one batched direct get.

        Raises:
            ProtocolError: ``unavailable`` on timeout or connection trouble (closed, draining).
        """
        try:
            replies = await mux_for(self._nc).request_many(
                f"$JS.API.DIRECT.GET.{stream}",
                json.dumps(request).encode(),
                timeout=self._timeout,
                last=_is_status,
            )
        except Exception as error:  # timeout, connection closed / draining
            raise ProtocolError(ErrorCode.UNAVAILABLE) from error
        headers = dict(replies[-1].headers or {})  # request_many ends at the status reply
        return headers[HDR_STATUS], headers, replies[:-1]

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
        return [_stored(msg) for msg in messages]

    async def multi_last_of(self, stream: str, subject_list: list[str]) -> list[StoredMsg]:
        """The last message (with headers) of each of ``subject_list`` (at most 1024 subjects,
        wildcards allowed) that has one, in stream order.

        Raises:
            ProtocolError: ``unavailable`` on timeout or an unexpected status.
        """
        if not subject_list:
            return []
        status, _, messages = await self._call(stream, {"multi_last": subject_list})
        if status == "404":
            return []
        if status != "204":
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"direct get status {status}")
        return [_stored(msg) for msg in messages]


def _stored(msg: Msg) -> StoredMsg:
    headers = dict(msg.headers or {})
    return StoredMsg(
        stream_seq=int(headers.get("Nats-Sequence", "0")),
        subject=headers.get("Nats-Subject", ""),
        headers=headers,
        data=msg.data,
    )


def _is_status(msg: Msg) -> bool:
    """True for a batch's closing status reply (``204``, ``404``, ``413``, or an error)."""
    return bool(msg.headers and msg.headers.get(HDR_STATUS))
