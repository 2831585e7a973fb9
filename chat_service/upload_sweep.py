"""Uploads that no message took are removed after a while (PROTOCOL.md section 11; docs/protocol.md).

An upload is stored before the message that carries it is sent, so a client that uploads and
never sends (a closed tab, or a member filling storage on purpose) would leave the file in the
Object Store, which shares JetStream's storage with every room log. One chat replica at a time,
the holder of the lease ``attachments-sweep`` (:mod:`shared.leases`), reads every attachment
record each ``upload_sweep_interval_seconds`` and removes the files of records that are still
unclaimed ``unclaimed_upload_hours`` after their upload, with their thumbnails and records.

Racing a message that claims the file at that moment: the sweep first takes the record itself by
the same compare-and-set a claim uses (``claim`` = :data:`SWEPT`), so exactly one of them wins. A
message that loses is refused as for an unknown file (``validation_error``); a sweep that loses
leaves the file to its message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime
from typing import Final

import nats.errors
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from chat_service.attachments import SWEPT, Attachments
from chat_service.directget import DirectReader
from chat_service.kvscan import scan
from shared import subjects
from shared.errors import ProtocolError
from shared.internal import AttachmentRecord
from shared.leases import Lease

logger = logging.getLogger(__name__)

#: The lease of the replica that sweeps.
LEASE: Final = "attachments-sweep"


def expired(record: AttachmentRecord, *, now: float, max_age: float) -> bool:
    """Whether ``record`` is unclaimed and was uploaded at least ``max_age`` seconds before
    ``now`` (Unix seconds). A record without a readable ``created_at`` never expires here: it
    cannot be dated, and deleting a file someone may still send is worse than keeping one."""
    if record.claim is not None:
        return False
    try:
        uploaded = datetime.fromisoformat(record.created_at.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return False
    return now - uploaded >= max_age


class UploadSweeper:
    """The sweep of one replica; :meth:`run` is a background task.

    Args:
        attachments: the records and files.
        reader: batched direct gets (the scan of the records).
        lease_bucket: the ``natter_leases`` bucket.
        max_age: seconds an upload may stay unclaimed.
        interval: seconds between two sweeps.
    """

    def __init__(
        self,
        attachments: Attachments,
        reader: DirectReader,
        lease_bucket: KeyValue,
        *,
        max_age: float,
        interval: float,
    ) -> None:
        self.attachments = attachments
        self.reader = reader
        self.lease = Lease(lease_bucket, LEASE)
        self.max_age = max_age
        self.interval = interval

    async def run(self) -> None:
        """Every ``interval`` seconds, sweep unless another replica holds the lease, forever."""
        while True:
            await asyncio.sleep(self.interval)
            if not await self.lease.take():
                continue  # another replica is sweeping
            try:
                removed = await self.sweep_once(now=time.time())
                if removed:
                    logger.info("attachments: removed %d uploads no message took", removed)
            except (nats.errors.Error, ProtocolError, TimeoutError) as error:
                logger.warning("attachments: sweep failed, next in %.0f s: %r", self.interval, error)
            finally:
                await self.lease.release()

    async def sweep_once(self, *, now: float) -> int:
        """Remove every expired upload (module docstring); returns how many.

        Raises:
            nats.errors.Error, ProtocolError: storage did not answer (the next sweep retries).
        """
        items = await scan(self.reader, self.attachments.kv, bucket=subjects.KV_ATTACHMENTS, pattern=">")
        removed = 0
        for item in items:
            try:
                record = AttachmentRecord.model_validate_json(item.value)
            except ValueError:
                continue
            if not expired(record, now=now, max_age=self.max_age):
                continue
            taken = record.model_copy(update={"claim": SWEPT})
            try:
                await self.attachments.kv.update(
                    item.key, taken.model_dump_json().encode(), last=item.revision
                )
            except KeyWrongLastSequenceError:
                continue  # a message claimed it (or another sweep took it) meanwhile
            await self.attachments.delete([record.attachment_id])
            removed += 1
        return removed
