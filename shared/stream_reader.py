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
from nats.aio.msg import Msg

from shared.errors import ErrorCode, ProtocolError
from shared.request_mux import mux_for


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
    request = {"seq": max(1, start_seq), "next_by_subj": subject, "batch": batch}
    counted = 0

    def last(msg: Msg) -> bool:
        nonlocal counted
        if msg.headers and msg.headers.get("Status"):
            return True  # 204 end of batch, 404 nothing matched, or an error status
        counted += 1
        return counted >= batch  # the server still sends its 204 EOB; no need to wait for it

    try:
        replies = await mux_for(nc).request_many(
            f"$JS.API.DIRECT.GET.{stream}", json.dumps(request).encode(), timeout=timeout, last=last
        )
    except Exception as error:  # timeout, connection trouble
        raise ProtocolError(ErrorCode.UNAVAILABLE) from error
    out: list[StoredMsg] = []
    for msg in replies:
        headers = dict(msg.headers or {})
        status = headers.get("Status")
        if status:
            if status in ("204", "404"):
                break
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"direct get status {status}")
        out.append(_to_stored(headers, msg.data))
    return out


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
        msg = await mux_for(nc).request(
            f"$JS.API.DIRECT.GET.{stream}", json.dumps(request).encode(), timeout=timeout
        )
    except Exception as error:  # timeout, no responders (no stream), connection trouble
        raise ProtocolError(ErrorCode.UNAVAILABLE) from error
    headers = dict(msg.headers or {})
    status = headers.get("Status")
    if status == "404":
        return None
    if status:
        raise ProtocolError(ErrorCode.UNAVAILABLE, f"direct get status {status}")
    return _to_stored(headers, msg.data)


#: Headers that mark a KV entry as removed: ``KV-Operation`` DEL/PURGE, or (nats-server 2.11+)
#: a server-placed ``Nats-Marker-Reason`` (TTL / age expiry).
_KV_REMOVED = ("DEL", "PURGE")


async def kv_entry(nc: Client, bucket: str, key: str, *, timeout: float = 5.0) -> StoredMsg | None:
    """The current entry of ``key`` in KV ``bucket``, or ``None`` when it is missing, deleted or
    purged: a direct get of the last message on ``$KV.<bucket>.<key>`` in stream ``KV_<bucket>``
    (how nats.py's ``KeyValue.get`` reads a bucket created with ``direct``; NATS ADR-8). The
    entry's revision is its ``stream_seq``.

    Raises:
        ProtocolError: ``unavailable`` on timeout or when the bucket does not exist.
    """
    msg = await direct_get(nc, f"KV_{bucket}", last_by_subject=f"$KV.{bucket}.{key}", timeout=timeout)
    if msg is None:
        return None
    if msg.headers.get("KV-Operation") in _KV_REMOVED or "Nats-Marker-Reason" in msg.headers:
        return None
    return msg
