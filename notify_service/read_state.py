"""A user's read state, pure functions (docs/subjects.md, KV bucket ``natter_notify_read``).

The value under key ``<user_id>`` is ``{"read_ids":[..],"all_before":<stream seq>}``: a
notification is read when its stream sequence in ``NOTIFICATIONS`` is ``<= all_before``
(``mark_read`` with ``all``) or its id is in ``read_ids`` (``mark_read`` with ``ids``).
``read_ids`` only keeps ids that are still stored and not already covered by ``all_before``,
so it never holds more than the 500 notifications a user keeps (PROTOCOL.md section 5).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

logger = logging.getLogger(__name__)

#: Upper bound of ``read_ids`` (the stream keeps 500 notifications per user).
MAX_READ_IDS: Final = 500


@dataclass(frozen=True, slots=True)
class ReadState:
    """What a user has read: ids, and everything up to stream sequence ``all_before``."""

    read_ids: frozenset[str] = frozenset()
    all_before: int = 0

    def is_read(self, stream_seq: int, notification_id: str) -> bool:
        """True when the notification stored at ``stream_seq`` with ``notification_id`` is read."""
        return stream_seq <= self.all_before or notification_id in self.read_ids


def decode_state(raw: bytes | None) -> ReadState:
    """Parse a KV value; ``None``, empty or malformed values are the empty state (logged)."""
    if not raw:
        return ReadState()
    try:
        value = json.loads(raw)
        ids = value.get("read_ids", [])
        all_before = value.get("all_before", 0)
        if not isinstance(ids, list) or not isinstance(all_before, int) or isinstance(all_before, bool):
            raise ValueError("bad read state shape")
        return ReadState(
            read_ids=frozenset(i for i in ids if isinstance(i, str)), all_before=max(0, all_before)
        )
    except (ValueError, AttributeError):
        logger.warning("malformed read state ignored")
        return ReadState()


def encode_state(state: ReadState) -> bytes:
    """Compact JSON ``{"read_ids":[sorted ids],"all_before":N}``."""
    body = {"read_ids": sorted(state.read_ids), "all_before": state.all_before}
    return json.dumps(body, separators=(",", ":")).encode()


def merge(
    state: ReadState,
    *,
    stored: Iterable[tuple[int, str]],
    ids: Iterable[str] = (),
    mark_all: bool = False,
) -> ReadState:
    """The state after marking ``ids`` (and, with ``mark_all``, every stored one) as read.

    Args:
        state: the current state.
        stored: ``(stream_seq, id)`` of every notification the user still has.
        ids: ids to mark read; ids that are not stored are ignored (nothing to mark).
        mark_all: move ``all_before`` up to the highest stored sequence.

    Returns:
        A state whose ``read_ids`` holds only stored ids above ``all_before``, at most
        :data:`MAX_READ_IDS` (the newest are kept), and whose ``all_before`` never decreases.
    """
    stored_list = list(stored)
    all_before = state.all_before
    if mark_all and stored_list:
        all_before = max(all_before, max(seq for seq, _ in stored_list))
    wanted = set(state.read_ids).union(ids)
    kept = sorted(
        ((seq, nid) for seq, nid in stored_list if seq > all_before and nid in wanted),
        reverse=True,
    )[:MAX_READ_IDS]
    return ReadState(read_ids=frozenset(nid for _, nid in kept), all_before=all_before)
