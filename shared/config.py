"""Configuration from environment variables (pydantic-settings), DESIGN.md rule 10.

:class:`CommonSettings` holds what every process needs (where NATS is, how durable streams are).
Each service subclasses it with its own ``env_prefix`` (``NATTER_GATEWAY_``, ``NATTER_AUTH_``,
``NATTER_CHAT_``, ``NATTER_NOTIFY_``); the common fields keep their unprefixed names through
``validation_alias`` so one ``NATS_URL`` configures every process. Defaults run the whole stack
on one machine; production-only settings are refused when left insecure
(full-stack-fastapi-template ``core/config.py``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class CommonSettings(BaseSettings):
    """Settings shared by the gateway and every service.

    Environment variables: ``NATS_URL`` (comma-separated list of servers), ``NATTER_ENV``
    (``development`` | ``production``), ``NATTER_STREAM_REPLICAS`` (1, or 3 on a NATS cluster),
    ``NATTER_REQUEST_TIMEOUT`` (seconds), ``NATTER_LOG_LEVEL``.
    """

    model_config = SettingsConfigDict(extra="ignore", env_prefix="NATTER_")

    nats_url: str = Field(
        default="nats://127.0.0.1:4222",
        validation_alias=AliasChoices("NATS_URL", "NATTER_NATS_URL"),
        description="NATS server URL(s), comma separated.",
    )
    env: Literal["development", "production"] = Field(
        default="development",
        validation_alias=AliasChoices("NATTER_ENV"),
        description="production refuses insecure defaults.",
    )
    stream_replicas: int = Field(
        default=1,
        ge=1,
        le=5,
        validation_alias=AliasChoices("NATTER_STREAM_REPLICAS"),
        description="Replicas of every JetStream stream and KV bucket (3 on a NATS cluster).",
    )
    request_timeout: float = Field(
        default=5.0,
        gt=0,
        validation_alias=AliasChoices("NATTER_REQUEST_TIMEOUT"),
        description="Seconds to wait for a service reply before answering `unavailable`.",
    )
    log_level: str = Field(
        default="INFO",
        validation_alias=AliasChoices("NATTER_LOG_LEVEL"),
        description="Python logging level name.",
    )

    @property
    def nats_servers(self) -> list[str]:
        """``nats_url`` split into a list of server URLs."""
        return [url.strip() for url in self.nats_url.split(",") if url.strip()]
