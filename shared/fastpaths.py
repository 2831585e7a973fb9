"""The fast paths, fenced: one capability check per library whose internals natter reaches into.

natter's hot paths lean on private internals of two libraries, measured to matter
(docs/benchmarks.md "Where the time goes"):

- **nats-py**: :mod:`shared.direct_subscription` replaces a subscription's pending queue so
  that messages are handled inside nats-py's read loop (no task, no queue per subscription),
  and :mod:`shared.request_mux` receives every reply through one such subscription.
- **uvicorn** (with the ``websockets`` sans-I/O protocol it drives): :mod:`gateway.wire`
  writes prebuilt RFC 6455 frames straight to the socket's transport, and
  :mod:`gateway.server_protocol` slims uvicorn's per-socket protocol object.

Each library has one check here, :func:`nats_fast_path` and :func:`uvicorn_fast_path`, and
every one of those modules asks it before touching an internal. A check passes only when

1. ``NATTER_FAST_PATHS`` is ``auto`` (the default; ``off`` switches every fast path off, which
   CI does for a second run of the integration suite),
2. the installed version is one the fast path was verified with (:data:`VERIFIED`, the same
   ranges pyproject.toml pins), and
3. the internals it relies on are there (probed on the real classes).

Otherwise natter takes the library's public API, with the same behaviour and ordering, only
slower (the integration suite passes both ways). :func:`describe` is the line every process
logs at startup, so an operator sees which path is active and why.

The same pattern as uvicorn's own optional speedups (``loop="auto"``, ``http="auto"`` in
uvicorn's ``config.py``): use the fast implementation when it is there, else the portable one.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

logger = logging.getLogger(__name__)

#: Distribution -> (lowest, highest) version the fast paths were verified with, inclusive,
#: compared on (major, minor). Keep in step with the pins in pyproject.toml.
VERIFIED: Final[dict[str, tuple[tuple[int, int], tuple[int, int]]]] = {
    "nats-py": ((2, 16), (2, 16)),
    "uvicorn": ((0, 54), (0, 55)),
    "websockets": ((17, 4), (17, 4)),
}


class FastPathSettings(BaseSettings):
    """``NATTER_FAST_PATHS``: ``auto`` (use each fast path whose library passes its check) or
    ``off`` (public APIs only: for diagnosis, and for CI's second integration run)."""

    model_config = SettingsConfigDict(extra="ignore")

    fast_paths: Literal["auto", "off"] = Field(
        default="auto",
        validation_alias=AliasChoices("NATTER_FAST_PATHS"),
        description="auto: use the nats-py and uvicorn fast paths when the installed versions are "
        "the verified ones (shared/fastpaths.py); off: public library APIs only (slower, same "
        "behaviour). Every process logs which path is active at startup.",
    )


@dataclass(frozen=True, slots=True)
class Capability:
    """The verdict of one library's check: ``enabled``, the installed ``version`` (None: not
    installed) and, when disabled, the ``reason``."""

    library: str
    enabled: bool
    version: str | None
    reason: str = ""

    def describe(self) -> str:
        """``"nats-py 2.16.0: on"`` or ``"uvicorn 0.56.1: off (not verified: ...)"``."""
        label = f"{self.library} {self.version or '(not installed)'}"
        return f"{label}: on" if self.enabled else f"{label}: off ({self.reason})"


def _switch() -> str:
    return FastPathSettings().fast_paths


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _verified(distribution: str, version: str) -> bool:
    parts = version.split(".")
    try:
        current = (int(parts[0]), int(parts[1]))
    except (IndexError, ValueError):
        return False
    low, high = VERIFIED[distribution]
    return low <= current <= high


def _check(library: str, distributions: tuple[str, ...], probe: Callable[[], str | None]) -> Capability:
    """The switch, then each distribution's version, then ``probe()`` (what is missing, or
    None), in that order: the probe imports only a verified version."""
    version = _version(distributions[0])
    if _switch() == "off":
        return Capability(library, False, version, "NATTER_FAST_PATHS=off")
    for distribution in distributions:
        installed = _version(distribution)
        if installed is None:
            return Capability(library, False, version, f"{distribution} not installed")
        if not _verified(distribution, installed):
            low, high = VERIFIED[distribution]
            return Capability(
                library,
                False,
                version,
                f"{distribution} {installed} not verified (verified: {low[0]}.{low[1]}..{high[0]}.{high[1]})",
            )
    missing = probe()
    if missing is not None:
        return Capability(library, False, version, missing)
    return Capability(library, True, version)


def _probe_nats() -> str | None:
    """What is missing from nats-py's internals, or None."""
    try:
        from nats.aio.client import Client
        from nats.aio.subscription import Subscription
    except ImportError as error:  # pragma: no cover - nats-py is a dependency
        return f"import failed: {error}"
    if not callable(getattr(Client, "_process_msg", None)):
        return "nats.aio.client.Client._process_msg is missing"
    try:
        probe = Subscription(conn=None, id=0, subject="natter.probe")
    except TypeError as error:
        return f"Subscription() changed: {error}"
    for name in ("_pending_queue", "_pending_size", "_message_iterator", "_wait_for_msgs_task"):
        if not hasattr(probe, name):
            return f"Subscription.{name} is missing"
    return None


def _probe_uvicorn() -> str | None:
    """What is missing from uvicorn's websockets-sansio protocol, or None."""
    try:
        from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
    except ImportError as error:
        return f"websockets-sansio protocol missing: {error}"
    for name in ("send", "handle_connect", "receive", "send_receive_event_to_app", "connection_made"):
        if not callable(getattr(WebSocketsSansIOProtocol, name, None)):
            return f"WebSocketsSansIOProtocol.{name} is missing"
    return None


@functools.cache
def nats_fast_path() -> Capability:
    """May natter use nats-py's internals (direct dispatch, the request mux's inbox)? Cached
    for the process; :func:`reset` forgets it (tests)."""
    return _check("nats-py", ("nats-py",), _probe_nats)


@functools.cache
def uvicorn_fast_path() -> Capability:
    """May the gateway use uvicorn's and websockets' internals (raw frames on the transport,
    the slim per-socket protocol)? Cached for the process."""
    return _check("uvicorn", ("uvicorn", "websockets"), _probe_uvicorn)


def reset() -> None:
    """Forget the cached verdicts (after changing ``NATTER_FAST_PATHS`` in a test)."""
    nats_fast_path.cache_clear()
    uvicorn_fast_path.cache_clear()


def describe(*, gateway: bool) -> str:
    """The startup line: ``"fast paths: nats-py 2.16.0: on; uvicorn 0.55.0: on"`` (uvicorn's only
    for the gateway, the one process that serves WebSockets)."""
    parts = [nats_fast_path().describe()]
    if gateway:
        parts.append(uvicorn_fast_path().describe())
    return "fast paths: " + "; ".join(parts)


def log_active(*, gateway: bool) -> None:
    """Log :func:`describe` at INFO, or at WARNING when a fast path is off for any reason but
    the operator's own ``NATTER_FAST_PATHS=off``."""
    capabilities = [nats_fast_path(), *([uvicorn_fast_path()] if gateway else [])]
    unexpected = any(not c.enabled and c.reason != "NATTER_FAST_PATHS=off" for c in capabilities)
    logger.log(logging.WARNING if unexpected else logging.INFO, "%s", describe(gateway=gateway))
