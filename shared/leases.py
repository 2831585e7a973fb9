"""Leases: one replica at a time does a job that must not run twice at once (DESIGN.md rule 13's
single reader per room log shard for the event feed, the webhook dispatcher's single reader of
``EVENTS``).

A lease is a key in the ``natter_leases`` KV bucket whose value is its holder's random token.
Taking it is a KV ``create`` (it succeeds only when the key is absent, deleted or expired);
holding it is an ``update`` on the revision last written (a compare-and-set: a holder that lost
it cannot renew); the bucket's ``max_age`` (10 s, :data:`shared.streams.BUCKET_TTLS`) expires the
key of a holder that stopped renewing, so a killed replica's job moves to another one within
about 10 s plus the others' retry interval. This is the usual KV lock of the NATS docs ("Key/Value
Store", optimistic concurrency with ``update(..., last=revision)``); it is not a fencing token:
a holder paused longer than the TTL may still act once before its renew fails, so the jobs that
use it stay safe when done twice (their writes are de-duplicated by ``Nats-Msg-Id``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from typing import Final

import nats.errors
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

logger = logging.getLogger(__name__)

#: Seconds between renewals (well inside the bucket's 10 s TTL).
RENEW_EVERY: Final = 3.0
#: Seconds between attempts to take a lease held by another replica.
RETRY_EVERY: Final = 2.0


def holder_id() -> str:
    """``<host>:<pid>:<random>``: who holds a lease, readable by an operator (``nats kv get
    natter_leases <key>``) and unique per process even when pids repeat across hosts."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class Lease:
    """The lease ``key`` in ``kv`` (the ``natter_leases`` bucket), held or not by this process.

    Args:
        kv: the leases bucket.
        key: the lease's name (``feed-<k>``, ``webhooks-dispatch``).
        holder: this process's token (:func:`holder_id` when omitted).
    """

    def __init__(self, kv: KeyValue, key: str, *, holder: str | None = None) -> None:
        self.kv = kv
        self.key = key
        self.holder = holder or holder_id()
        self.revision: int | None = None

    @property
    def held(self) -> bool:
        """Whether the last take or renew succeeded."""
        return self.revision is not None

    async def take(self) -> bool:
        """Try to take the lease once; True when this process now holds it (errors are logged at
        debug level and answer False: the caller retries after :data:`RETRY_EVERY`)."""
        try:
            self.revision = int(await self.kv.create(self.key, self.holder.encode()))
        except KeyWrongLastSequenceError:
            self.revision = None  # held by another (or released and not yet expired)
        except nats.errors.Error as error:
            logger.debug("lease %s not taken: %r", self.key, error)
            self.revision = None
        return self.held

    async def renew(self) -> bool:
        """Renew a held lease; False (logged) when it was lost: another holder took it after it
        expired, or storage did not answer. The caller must stop the job."""
        if self.revision is None:
            return False
        try:
            self.revision = int(await self.kv.update(self.key, self.holder.encode(), last=self.revision))
        except nats.errors.Error as error:
            logger.warning("lease %s lost: %r", self.key, error)
            self.revision = None
        return self.held

    async def release(self) -> None:
        """Give the lease up at once (best effort: if this fails it expires by itself). Only the
        revision this process wrote is deleted, never a later holder's."""
        revision, self.revision = self.revision, None
        if revision is None:
            return
        try:
            await asyncio.wait_for(self.kv.delete(self.key, last=revision), 1.0)
        except Exception:  # any failure leaves it to expire, which is the fallback
            pass
