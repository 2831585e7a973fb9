"""Gateway settings (env prefix ``NATTER_GATEWAY_``), PROTOCOL.md section 1 limits as defaults."""

from __future__ import annotations

import secrets

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from shared.config import CommonSettings


class Settings(CommonSettings):
    """Gateway configuration.

    Environment: ``NATTER_GATEWAY_<FIELD>`` (e.g. ``NATTER_GATEWAY_ALLOWED_ORIGINS``), plus the
    common ``NATS_URL`` / ``NATTER_*`` settings.
    """

    model_config = SettingsConfigDict(env_prefix="NATTER_GATEWAY_", extra="ignore")

    gateway_id: str = Field(
        default_factory=lambda: f"gw-{secrets.token_hex(6)}",
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="Unique id of this gateway process (presence keys, heartbeats).",
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Origins allowed to open a socket (JSON list). Empty: same host only. '*': any.",
    )
    max_frame_bytes: int = Field(
        default=64 * 1024, ge=1024, description="Largest client frame; larger: close 1009."
    )
    rate_per_second: float = Field(default=20.0, gt=0, description="Sustained client frames per second.")
    rate_burst: int = Field(default=40, ge=1, description="Client frame burst.")
    abuse_limit: int = Field(
        default=100, ge=1, description="Rate-limited frames within 10 s that close the socket 1008."
    )
    auth_timeout: float = Field(default=10.0, gt=0, description="Seconds to authenticate after connect.")
    ping_interval: float = Field(default=20.0, gt=0, description="Seconds between WebSocket pings.")
    ping_timeout: float = Field(default=20.0, gt=0, description="Seconds to wait for a pong.")
    send_queue_frames: int = Field(default=1024, ge=8, description="Per-socket send queue; overflow: 1013.")
    max_connections: int = Field(
        default=20_000,
        ge=1,
        description="Authenticated sockets per gateway; beyond: close 1013 'gateway full'.",
    )
    jwt_issuer: str = Field(default="natter", description="Expected `iss` of access tokens.")
    jwt_audience: str = Field(default="natter", description="Expected `aud` of access tokens.")
    heartbeat_interval: float = Field(default=10.0, gt=0, description="Presence heartbeat period, seconds.")
    gap_wait: float = Field(default=0.15, ge=0, description="Seconds to wait for an out-of-order frame.")
    user_linger: float = Field(
        default=30.0,
        ge=0,
        description="Seconds a user's delivery subscription outlives their last socket here "
        "(reconnects reuse it).",
    )
    per_message_deflate: bool = Field(default=False, description="WebSocket compression (off, DESIGN.md 12).")
    header_timeout: float = Field(
        default=10.0,
        gt=0,
        description="Seconds a connection has to deliver a request's complete headers (the WebSocket "
        "handshake included) after connecting or after the request's first byte; then it is closed.",
    )
    max_body_bytes: int = Field(
        default=64 * 1024, ge=1024, description="Largest HTTP request body (JSON routes); larger: 413."
    )
    body_timeout: float = Field(
        default=30.0,
        gt=0,
        description="Seconds an HTTP request body may take to arrive; slower: 408. A body refused "
        "with 413 is read and discarded for at most this long, so the client sees the 413.",
    )
    attachment_max_bytes: int = Field(
        default=10 * 1024 * 1024,
        ge=1024,
        le=1024 * 1024 * 1024,
        description="Largest attachment (PROTOCOL.md section 11), bytes: a bigger upload is refused "
        "413 as soon as the bytes received pass it (plus 64 KiB for the multipart envelope).",
    )
    attachment_upload_rate: float = Field(
        default=0.5,
        gt=0,
        description="Attachment uploads per second one user (or service) may make through one gateway, "
        "sustained; beyond the burst: 429 with Retry-After.",
    )
    attachment_upload_burst: int = Field(
        default=20, ge=1, description="Attachment uploads one user may make at once before the rate applies."
    )
    attachment_types: list[str] = Field(
        default=[
            "image/jpeg",
            "image/png",
            "image/gif",
            "image/webp",
            "application/pdf",
            "application/zip",
            "audio/mpeg",
            "audio/ogg",
            "video/mp4",
            "video/webm",
            "text/plain",
        ],
        description="Content types an attachment may have (JSON list), as detected from its bytes "
        "(never its name); anything else is 415.",
    )
    max_pending_per_address: int = Field(
        default=50,
        ge=1,
        description="Sockets one client address may hold open without having authenticated yet; "
        "beyond: close 1013 'too many unauthenticated sockets'.",
    )
    max_pending: int = Field(
        default=2000,
        ge=1,
        description="Sockets the gateway holds open without authentication, in all (they do not count "
        "towards max_connections); beyond: close 1013.",
    )
    forwarded_allow_ips: str = Field(
        default="",
        description="Comma-separated addresses or networks of the proxies whose X-Forwarded-For / "
        "X-Forwarded-Proto are believed (uvicorn's proxy headers); empty: none, the peer's address "
        "is the client's. Compose: the private networks nginx reaches the gateways from.",
    )

    @model_validator(mode="after")
    def _refuse_insecure(self) -> Settings:
        if self.env == "production" and "*" in self.allowed_origins:
            raise ValueError("NATTER_GATEWAY_ALLOWED_ORIGINS must not contain '*' in production")
        return self
