"""notify_service settings (DESIGN.md rule 10): environment variables prefixed ``NATTER_NOTIFY_``.

The common fields (``NATS_URL``, ``NATTER_STREAM_REPLICAS``, ...) come from
:class:`shared.config.CommonSettings` under their unprefixed names.
"""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from shared.config import ServiceSettings


class Settings(ServiceSettings):
    """notify_service settings.

    Environment variables: ``NATTER_NOTIFY_SUMMARY_LIMIT``, ``NATTER_NOTIFY_WELCOME_TITLE``,
    ``NATTER_NOTIFY_WELCOME_MESSAGE`` (``{username}`` is replaced by the new user's name),
    ``NATTER_NOTIFY_ACK_WAIT``, ``NATTER_NOTIFY_MAX_DELIVER``, ``NATTER_NOTIFY_FETCH_TIMEOUT``,
    ``NATTER_NOTIFY_FETCH_BATCH``, ``NATTER_NOTIFY_CONSUMER_CHECK_INTERVAL``,
    ``NATTER_NOTIFY_RETRY_DELAY_MAX``.
    """

    model_config = SettingsConfigDict(extra="ignore", env_prefix="NATTER_NOTIFY_")

    summary_limit: int = Field(
        default=50,
        ge=1,
        le=500,
        description="Unread items in the summary answered by notify.read (PROTOCOL.md s5: 50).",
    )
    welcome_title: str = Field(default="Welcome to natter", min_length=1, max_length=200)
    welcome_message: str = Field(
        default="Hi {username}, welcome to natter! Join a room and say hello.",
        min_length=1,
        max_length=4000,
        description="Welcome text; {username} is replaced by the new user's name.",
    )
    ack_wait: float = Field(
        default=30.0, gt=0, description="Seconds before an unacknowledged event is redelivered."
    )
    max_deliver: int = Field(default=10, ge=1, description="Deliveries of one event before it is dropped.")
    fetch_timeout: float = Field(
        default=5.0, gt=0, description="Seconds one pull request for events waits for new events."
    )
    fetch_batch: int = Field(default=32, ge=1, le=256, description="Events fetched per pull request.")
    consumer_check_interval: float = Field(
        default=30.0,
        gt=0,
        description="Seconds without events after which a consumer checks that its durable "
        "consumer still exists (and creates it again if it was deleted).",
    )
    retry_delay_max: float = Field(
        default=30.0,
        gt=0,
        description="Longest delay in seconds before an event whose handling failed is retried.",
    )
    webhook_allowed_hosts: str = Field(
        default="",
        validation_alias=AliasChoices("NATTER_WEBHOOK_ALLOWED_HOSTS"),
        description="Comma-separated hosts (names or addresses) webhooks may reach although they "
        "resolve to loopback, private or link-local addresses (refused otherwise: SSRF).",
    )
    webhook_timeout: float = Field(
        default=10.0, gt=0, le=60, description="Seconds a webhook receiver has to answer 2xx."
    )
    webhook_retry_hours: float = Field(
        default=24.0, gt=0, le=168, description="Hours a webhook delivery is retried before it is dropped."
    )
