"""Configuration from environment variables (pydantic-settings), DESIGN.md rule 10.

:class:`CommonSettings` holds what every process needs (where NATS is, how durable streams are).
Each service subclasses it with its own ``env_prefix`` (``NATTER_GATEWAY_``, ``NATTER_AUTH_``,
``NATTER_CHAT_``, ``NATTER_NOTIFY_``); the common fields keep their unprefixed names through
``validation_alias`` so one ``NATS_URL`` configures every process. Defaults run the whole stack
on one machine; production-only settings are refused when left insecure
(full-stack-fastapi-template ``core/config.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.nats_auth import inbox_prefix


@dataclass(frozen=True, slots=True)
class NatsLogin:
    """The NATS user a process connects as (DESIGN.md rule 15), or anonymous (both ``None``).

    ``inbox_prefix`` is the user's own reply-subject prefix (``_INBOX.<user>``), the only one its
    permissions let it subscribe to (:mod:`shared.nats_auth`).
    """

    user: str | None = None
    password: str | None = None

    @property
    def inbox_prefix(self) -> str:
        """``_INBOX.<user>``, or nats-py's default ``_INBOX`` for an anonymous client."""
        return inbox_prefix(self.user) if self.user else "_INBOX"


class CommonSettings(BaseSettings):
    """Settings shared by the gateway and every service.

    Environment variables: ``NATS_URL`` (comma-separated list of servers), ``NATTER_NATS_USER``
    and ``NATTER_NATS_PASSWORD`` (the tier's NATS login, :mod:`shared.nats_auth`), ``NATTER_ENV``
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
    nats_user: str | None = Field(
        default=None,
        validation_alias=AliasChoices("NATTER_NATS_USER"),
        description="NATS user this process logs in as (its tier: gateway, auth, chat, notify; "
        "`natter up` and compose set it).",
    )
    nats_password: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("NATTER_NATS_PASSWORD"),
        description="Password of NATTER_NATS_USER (never logged).",
    )
    log_level: str = Field(
        default="INFO",
        validation_alias=AliasChoices("NATTER_LOG_LEVEL"),
        description="Python logging level name.",
    )

    @property
    def nats_login(self) -> NatsLogin:
        """The configured NATS user (anonymous when ``NATTER_NATS_USER`` is unset)."""
        password = self.nats_password.get_secret_value() if self.nats_password is not None else None
        return NatsLogin(user=self.nats_user or None, password=password)

    @property
    def nats_servers(self) -> list[str]:
        """``nats_url`` split into a list of server URLs."""
        return [url.strip() for url in self.nats_url.split(",") if url.strip()]


class ServiceSettings(CommonSettings):
    """What every micro service (auth, chat, notify) adds to :class:`CommonSettings`: its
    Prometheus metrics endpoint (:mod:`shared.service_metrics`), named with the service's prefix
    (``NATTER_AUTH_METRICS_PORT``, ``NATTER_CHAT_METRICS_PORT``, ``NATTER_NOTIFY_METRICS_PORT``).
    A gateway serves ``/metrics`` on its own HTTP port instead."""

    metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Serve this service's Prometheus metrics at http://<metrics host>:<port>/metrics "
        "(0: off).",
    )
    metrics_interval: float = Field(
        default=15.0, gt=0, le=3600, description="Seconds between readings of stream sizes and consumer lag."
    )
    metrics_host: str = Field(
        default="127.0.0.1", description="Interface of the metrics port (0.0.0.0 in containers)."
    )
