"""JSON values in JetStream KV entries, read together with their revision.

The revision is what optimistic concurrency needs: ``kv.update(key, value, last=revision)``
fails with ``KeyWrongLastSequenceError`` when another replica wrote the key in between
(NATS docs, "Key/Value Store": update is a compare-and-set on the key's last revision).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

#: What ``kv.create`` / ``kv.update`` raise when another writer got there first. On a cluster
#: nats-py's ``create`` re-reads the key after a conflict and that read may hit a follower that
#: has not applied the winner's write yet: ``KeyNotFoundError`` then means the same thing.
LOST_RACE = (KeyWrongLastSequenceError, KeyNotFoundError)


@dataclass(frozen=True, slots=True)
class Versioned:
    """A decoded KV value and the revision it was read at."""

    value: dict[str, Any]
    revision: int


def encode(value: dict[str, Any]) -> bytes:
    """Compact JSON bytes of ``value``."""
    return json.dumps(value, separators=(",", ":")).encode()


async def get_json(kv: KeyValue, key: str) -> Versioned | None:
    """The JSON object stored at ``key``, or ``None`` if the key is absent, deleted or not a
    JSON object."""
    try:
        entry = await kv.get(key)
    except KeyNotFoundError:
        return None
    try:
        value = json.loads(entry.value or b"")
    except ValueError:
        return None
    if not isinstance(value, dict) or entry.revision is None:
        return None
    return Versioned(value=value, revision=entry.revision)
