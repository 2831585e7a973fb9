"""Reading stored messages back out of JetStream streams with direct gets.

Direct get (``$JS.API.DIRECT.GET.<stream>``, streams created with ``allow_direct``) answers from
any replica without creating a consumer. Batched direct get (NATS 2.11+) returns up to ``batch``
messages of one subject starting at a stream sequence, then an end-of-batch status ``204``; a
``404`` status means nothing matched (NATS docs, "JetStream Direct Get", ADR-31).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from nats.aio.client import Client

from shared.errors import ErrorCode, ProtocolError


@dataclass(frozen=True, slots=True)
class StoredMsg:
    """One stored message: its stream sequence, subject, user headers and body."""

    stream_seq: int
    subject: str
    headers: dict[str, str]
    data: bytes


def _to_stored(headers: dict[str, str], data: bytes) -> StoredMsg:
    return StoredMsg(
        stream_seq=int(headers.get("Nats-Sequence", "0")),
        subject=headers.get("Nats-Subject", ""),
        headers=headers,
        data=data,
    )


async def direct_batch(
    nc: Client,
    stream: str,
    *,
    subject: str,
    start_seq: int,
    batch: int,
    timeout: float = 5.0,
) -> list[StoredMsg]:
    """Up to ``batch`` messages on ``subject`` with stream sequence >= ``start_seq``, in order.

    Raises:
        ProtocolError: ``unavailable`` if the stream does not answer within ``timeout`` seconds.
    """
    if batch <= 0:
        return []
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    out: list[StoredMsg] = []
    try:
        request = {"seq": max(1, start_seq), "next_by_subj": subject, "batch": batch}
        await nc.publish(f"$JS.API.DIRECT.GET.{stream}", json.dumps(request).encode(), reply=inbox)
        while True:
            msg = await sub.next_msg(timeout=timeout)
            headers = dict(msg.headers or {})
            status = headers.get("Status")
            if status:
                if status in ("204", "404"):
                    return out
                raise ProtocolError(ErrorCode.UNAVAILABLE, f"direct get status {status}")
            out.append(_to_stored(headers, msg.data))
            if len(out) >= batch:
                # The server still sends its 204 EOB; we do not need to wait for it.
                return out
    except TimeoutError as error:
        raise ProtocolError(ErrorCode.UNAVAILABLE) from error
    finally:
        await sub.unsubscribe()


async def direct_get(
    nc: Client,
    stream: str,
    *,
    seq: int | None = None,
    last_by_subject: str | None = None,
    next_by_subject: str | None = None,
    timeout: float = 5.0,
) -> StoredMsg | None:
    """One message: by stream ``seq``, the last on ``last_by_subject``, or the first at or after
    ``seq`` on ``next_by_subject``. ``None`` when no such message exists.

    Raises:
        ProtocolError: ``unavailable`` on timeout or when the stream does not exist.
    """
    request: dict[str, object] = {}
    if last_by_subject is not None:
        request["last_by_subj"] = last_by_subject
    elif next_by_subject is not None:
        request["seq"] = max(1, seq or 1)
        request["next_by_subj"] = next_by_subject
    else:
        request["seq"] = seq
    try:
        msg = await nc.request(f"$JS.API.DIRECT.GET.{stream}", json.dumps(request).encode(), timeout=timeout)
    except Exception as error:  # timeout, no responders (no stream), connection trouble
        raise ProtocolError(ErrorCode.UNAVAILABLE) from error
    headers = dict(msg.headers or {})
    status = headers.get("Status")
    if status == "404":
        return None
    if status:
        raise ProtocolError(ErrorCode.UNAVAILABLE, f"direct get status {status}")
    return _to_stored(headers, msg.data)
