"""chat_service settings (DESIGN.md rule 10): environment variables prefixed ``NATTER_CHAT_``."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from shared.config import ServiceSettings
from shared.room_shards import MAX_SHARDS
from shared.streams import DAY, DEDUP_WINDOW


class Settings(ServiceSettings):
    """Settings of one chat_service replica.

    Environment variables (besides the common ``NATS_URL``, ``NATTER_STREAM_REPLICAS``, ...):
    ``NATTER_CHAT_RETENTION_DAYS``, ``NATTER_CHAT_JANITOR_INTERVAL_SECONDS``,
    ``NATTER_CHAT_JANITOR_GRACE_SECONDS``, ``NATTER_CHAT_RECOVERY_LIMIT``,
    ``NATTER_CHAT_JOIN_LATEST``, ``NATTER_CHAT_PUBLISH_TIMEOUT_SECONDS``,
    ``NATTER_CHAT_SEND_ATTEMPTS``, ``NATTER_CHAT_FLOOR_INTERVAL_SECONDS``,
    ``NATTER_CHAT_UNCLAIMED_UPLOAD_HOURS``, ``NATTER_CHAT_UPLOAD_SWEEP_INTERVAL_SECONDS``.
    """

    model_config = SettingsConfigDict(extra="ignore", env_prefix="NATTER_CHAT_")

    retention_days: float = Field(
        default=0.0,
        ge=0,
        description="Days room log entries are kept in ROOMS_<k>; 0 keeps them forever. JetStream needs "
        "at least the 10-minute de-duplication window.",
    )
    room_shards: int = Field(
        default=4,
        ge=1,
        le=MAX_SHARDS,
        description="Streams the room logs are sharded over (ROOMS_0..N-1, by a hash of the room "
        "name), used when `natter provision` first creates them; later the count recorded on the "
        "streams holds (docs/scaling.md).",
    )
    floor_interval_seconds: float | None = Field(
        default=None,
        gt=0,
        description="With retention: seconds between two copies of each room's last seq into its "
        "registry entry; default a quarter of the retention, at most an hour.",
    )
    janitor_interval_seconds: float = Field(
        default=10.0, gt=0, description="Seconds between two sweeps of presence keys of dead gateways."
    )
    janitor_grace_seconds: float = Field(
        default=5.0,
        ge=0,
        description="A gateway must be seen without heartbeat for this long before its presence keys "
        "are removed (measured on this replica's clock).",
    )
    recovery_limit: int = Field(
        default=1000, ge=1, le=10_000, description="join with since recovers at most this many messages."
    )
    join_latest: int = Field(
        default=50, ge=0, le=1000, description="Messages in a join without (successful) recovery."
    )
    publish_timeout_seconds: float = Field(
        default=2.0, gt=0, description="Seconds to wait for one JetStream PubAck before retrying."
    )
    attachments_max_bytes: int = Field(
        default=0,
        ge=0,
        description="Bytes the attachments' Object Store may hold in all; set by `natter provision`. "
        "A full store refuses uploads with 507 and leaves the room logs, which share JetStream's "
        "storage, their room. 0: a quarter of the disk under the NATS store where provisioning "
        "can see it (`natter up` with its own NATS; compose, which mounts the store read-only: "
        "NATTER_NATS_STORE_DIR), else no limit of its own, only JetStream's (provisioning warns).",
    )
    unclaimed_upload_hours: float = Field(
        default=24.0,
        gt=0,
        description="Hours an uploaded attachment may wait for the message that uses it; after that "
        "the file, its thumbnail and its record are removed (PROTOCOL.md section 11).",
    )
    upload_sweep_interval_seconds: float = Field(
        default=3600.0, gt=0, description="Seconds between two sweeps of unclaimed uploads."
    )
    send_attempts: int = Field(
        default=50, ge=1, description="Attempts to store one message (wrong-last-sequence races, timeouts)."
    )

    @field_validator("retention_days")
    @classmethod
    def _retention_covers_dedup_window(cls, value: float) -> float:
        """JetStream refuses a max age shorter than the duplicate window (err 10052)."""
        if 0 < value * DAY < DEDUP_WINDOW:
            raise ValueError(f"retention must be 0 (forever) or at least {DEDUP_WINDOW / DAY:.5f} days")
        return value
