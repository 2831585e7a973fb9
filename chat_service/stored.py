"""Stored chat messages: their records and how a room ``seq`` is read back from storage.

A message is stored in ``CHAT_MESSAGES`` on ``msgs.<room>`` with headers ``Natter-Seq`` (room
seq), ``Natter-User`` and ``Nats-Msg-Id``; its body is the ``data`` object of the ``message``
frame, which starts with ``{"id":"<room>:<seq>","seq":<seq>`` (:func:`chat_service.frames.message_data`),
so header-less batched reads can still tell each message's seq.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Final

from shared import subjects
from shared.errors import ErrorCode, ProtocolError
from shared.stream_reader import StoredMsg

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One stored message: room ``seq`` and the body (the ``data`` of its ``message`` frame)."""

    seq: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Appended:
    """The outcome of :meth:`MessageStore.append`; ``duplicate`` when the message id was seen
    (then ``seq`` and ``data`` are the original's)."""

    seq: int
    stream_seq: int
    data: bytes
    duplicate: bool = False


#: Stored bodies start with ``{"id":"<room>:<seq>","seq":<seq>`` (frames.message_data).
_BODY_SEQ_RE: Final = re.compile(rb'\{"id":"[^"]*","seq":(\d+)[,}]')


def room_seq_of(msg: StoredMsg) -> int:
    """The room seq of a stored message: header ``Natter-Seq``, else the body's ``seq``.

    Raises:
        ProtocolError: ``internal`` when neither holds an integer.
    """
    header = msg.headers.get(subjects.HDR_SEQ)
    if header is not None and header.isdigit():
        return int(header)
    return seq_of_body(msg.data)


def seq_of_body(data: bytes) -> int:
    """The ``seq`` of a stored body (a prefix match; full JSON decoding only as a fallback).

    Raises:
        ProtocolError: ``internal`` for a body without an integer ``seq``.
    """
    match = _BODY_SEQ_RE.match(data)
    if match is not None:
        return int(match.group(1))
    try:
        value = json.loads(data)
        seq = value["seq"]
        if isinstance(seq, int) and not isinstance(seq, bool):
            return seq
    except (ValueError, TypeError, KeyError):
        pass
    logger.error("stored message without a valid seq (%d bytes)", len(data))
    raise ProtocolError(ErrorCode.INTERNAL)
