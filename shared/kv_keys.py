"""Listing a KV bucket's keys from the server's own count of its subjects.

nats-py's ``KeyValue.keys()`` reads the keys with a watcher (an ordered consumer) and ends when
the consumer's info says nothing is pending. When the entries reach the client before that
info does (a busy machine), the info says 0 pending and nothing received yet, and the watcher
ends at once: ``keys()`` raises ``NoKeysError`` for a bucket that has keys (nats-py 2.16,
``nats/js/kv.py``, ``watch``). A caller that takes that answer as "no keys" acts on a wrong
state; the webhook dispatcher did, and skipped events for a registered webhook.

:func:`kv_keys` asks ``$JS.API.STREAM.INFO.KV_<bucket>`` with a ``subjects_filter`` instead:
nats-server answers from the stream's subject index, so a key stored before the request is
always listed (NATS docs, "JetStream API Reference", stream info ``subjects_filter``). A
deleted or purged key keeps its marker message, so it is listed too: callers read each key
and skip the ones that are gone (nats-py ``get`` raises ``KeyNotFoundError`` for them).
"""

from __future__ import annotations

from nats.js import JetStreamContext


async def kv_keys(js: JetStreamContext, bucket: str, pattern: str = ">") -> list[str]:
    """The keys of KV ``bucket`` matching ``pattern`` (NATS wildcards), sorted; deleted keys
    included (module docstring). One request, answered by the stream's leader.

    Raises:
        nats.js.errors.NotFoundError: no such bucket.
        nats.errors.TimeoutError: JetStream did not answer.
    """
    prefix = f"$KV.{bucket}."
    info = await js.stream_info(f"KV_{bucket}", subjects_filter=prefix + pattern)
    return sorted(subject[len(prefix) :] for subject in (info.state.subjects or {}))
