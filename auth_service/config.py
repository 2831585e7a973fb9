"""auth_service settings from ``NATTER_AUTH_*`` environment variables (DESIGN.md rule 10).

The common fields of :class:`shared.config.CommonSettings` keep their unprefixed names
(``NATS_URL``, ``NATTER_STREAM_REPLICAS``, ``NATTER_LOG_LEVEL``...) through their aliases.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.config import ServiceSettings


class Settings(ServiceSettings):
    """Settings of one auth_service replica.

    Environment variables (prefix ``NATTER_AUTH_``): ``ACCESS_TTL_SECONDS``, ``ISSUER``,
    ``AUDIENCE``, ``REFRESH_TTL_DAYS``, ``ARGON2_TIME_COST``, ``ARGON2_MEMORY_COST_KIB``,
    ``ARGON2_PARALLELISM``, ``HASH_CONCURRENCY``, ``LOGIN_MAX_FAILURES``,
    ``LOGIN_FAILURE_WINDOW_SECONDS``.

    The argon2id defaults are the OWASP Password Storage Cheat Sheet minimum
    (m=19 MiB, t=2, p=1), DESIGN.md rule 12.
    """

    model_config = SettingsConfigDict(env_prefix="NATTER_AUTH_", extra="ignore")

    access_ttl_seconds: int = Field(default=900, ge=1, le=86_400, description="Access token lifetime (s).")
    issuer: str = Field(default="natter", min_length=1, description="JWT `iss`.")
    audience: str = Field(default="natter", min_length=1, description="JWT `aud`.")
    refresh_ttl_days: int = Field(
        default=30,
        ge=1,
        le=30,
        description="Session (refresh token) lifetime in days, counted from login; at most the "
        "30-day TTL of the natter_sessions / natter_refresh buckets.",
    )
    argon2_time_cost: int = Field(default=2, ge=1, description="argon2id iterations (t).")
    argon2_memory_cost_kib: int = Field(default=19_456, ge=8, description="argon2id memory (m), KiB.")
    argon2_parallelism: int = Field(default=1, ge=1, description="argon2id lanes (p).")
    hash_concurrency: int = Field(default=2, ge=1, description="Password hashes computed at once.")
    login_max_failures: int = Field(
        default=5,
        ge=1,
        description="Failed logins of one username from one address before each further attempt "
        "waits 1, 2, 4 ... 60 s after the last failure (never longer).",
    )
    login_address_failures: int = Field(
        default=50,
        ge=1,
        description="Failed logins from one address (any usernames) before its attempts are slowed "
        "the same way.",
    )
    login_user_failures: int = Field(
        default=10,
        ge=1,
        description="Failed logins of one username from anywhere before its attempts are slowed the "
        "same way; addresses it logged in from in the last 30 days are exempt.",
    )
    register_burst: int = Field(
        default=100, ge=1, description="Registrations one address may make at once (token bucket)."
    )
    register_per_second: float = Field(
        default=2.0, gt=0, description="Registrations per second one address may make after the burst."
    )
    login_failure_window_seconds: int = Field(
        default=900,
        ge=1,
        le=900,
        description="A failure counts until this many seconds pass without another one "
        "(at most the 900 s TTL of natter_login_failures).",
    )
