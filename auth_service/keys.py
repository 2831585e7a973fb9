"""The RS256 signing keys: a ring shared by every replica through KV, published as a JWKS.

``natter_auth_keys`` holds ``k.<kid>`` (one per key: the private key, its JWK, when it was
created and retired, the latest service-token expiry it signed) and ``current`` (``{"kid"}``,
the key that signs). The first replica creates the first key with ``kv.create`` (atomic: a
concurrent starter loses and reads the winner's), so all replicas sign with the same key.
``natter rotate-keys`` (``auth.rotate_keys``) makes a new key current; the old one keeps
verifying until the last token it signed has expired (RFC 7517 key sets, the usual JWKS
rotation). Only auth_service may read this bucket (shared/nats_auth.py).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from dataclasses import dataclass, replace
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from auth_service.kv_json import LOST_RACE
from shared import subjects
from shared.kv_keys import kv_keys

logger = logging.getLogger(__name__)

SIGNING_KEY = "signing"
ALGORITHM = "RS256"


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A private key in PEM (PKCS#8) and its public JWK (``kty``, ``n``, ``e``, ``kid``, ``alg``,
    ``use``)."""

    kid: str
    private_pem: str
    public_jwk: dict[str, str]

    def to_json(self) -> bytes:
        """The KV value: ``{"kid","private_pem","public_jwk"}``."""
        body = {"kid": self.kid, "private_pem": self.private_pem, "public_jwk": self.public_jwk}
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> SigningKey:
        """Inverse of :meth:`to_json`; raises ``ValueError``/``KeyError`` on a malformed value."""
        body = json.loads(data)
        return cls(kid=body["kid"], private_pem=body["private_pem"], public_jwk=dict(body["public_jwk"]))


def b64url_uint(value: int) -> str:
    """Base64url (no padding) of the big-endian bytes of a positive integer (RFC 7518 s6.3.1)."""
    raw = value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 JWK thumbprint of an RSA key: base64url SHA-256 of ``{"e","kty","n"}`` in
    lexicographic order without whitespace."""
    canonical = json.dumps({"e": jwk["e"], "kty": jwk["kty"], "n": jwk["n"]}, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def public_jwk_of(private_key: rsa.RSAPrivateKey) -> dict[str, str]:
    """The public JWK of an RSA key: ``kty``, ``n``, ``e``, ``kid`` (thumbprint), ``alg``, ``use``."""
    numbers = private_key.public_key().public_numbers()
    jwk = {"kty": "RSA", "n": b64url_uint(numbers.n), "e": b64url_uint(numbers.e)}
    return {**jwk, "kid": jwk_thumbprint(jwk), "alg": ALGORITHM, "use": "sig"}


def generate_signing_key(bits: int = 2048) -> SigningKey:
    """A fresh RSA key (public exponent 65537) with its JWK; ``kid`` is its RFC 7638 thumbprint."""
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = private_key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    ).decode()
    jwk = public_jwk_of(private_key)
    return SigningKey(kid=jwk["kid"], private_pem=pem, public_jwk=jwk)


async def load_or_create_signing_key(kv: KeyValue) -> SigningKey:
    """The shared signing key of the one-key layout (``signing``), created by whichever replica
    gets there first. :class:`KeyRing` starts from it when it finds no ``current`` key.

    Raises:
        nats.errors.Error / nats.js.errors.APIError: NATS trouble (the service then fails to start
            and is restarted by its supervisor).
    """
    try:
        return SigningKey.from_json((await kv.get(SIGNING_KEY)).value or b"")
    except KeyNotFoundError:
        pass
    candidate = generate_signing_key()
    try:
        await kv.create(SIGNING_KEY, candidate.to_json())
        logger.info("created signing key kid=%s", candidate.kid)
        return candidate
    except LOST_RACE:
        winner = SigningKey.from_json((await kv.get(SIGNING_KEY)).value or b"")
        logger.info("using signing key kid=%s created by another replica", winner.kid)
        return winner


#: KV key naming the key that signs now: ``{"kid"}``.
CURRENT_KEY = "current"
#: Seconds a replica trusts its cached ``current`` before reading it again (a rotation by
#: another replica reaches it within this; the old key keeps verifying meanwhile).
CURRENT_TTL = 5.0
#: The longest an access token can live (``NATTER_AUTH_ACCESS_TTL_SECONDS`` allows at most a
#: day): a retired key verifies at least this long after its retirement.
MAX_ACCESS_TTL_MS = 86_400_000


def key_entry(kid: str) -> str:
    """``k.<kid>``: one key of the ring."""
    return f"k.{kid}"


@dataclass(frozen=True, slots=True)
class RingKey:
    """One key of the ring as stored in ``natter_auth_keys`` (``k.<kid>``).

    ``retired_ms`` is when another key replaced it (``None``: it signs now); ``max_exp_ms`` the
    latest ``exp`` of a service token it signed (access tokens are covered by
    :data:`MAX_ACCESS_TTL_MS`).
    """

    key: SigningKey
    created_ms: int
    retired_ms: int | None = None
    max_exp_ms: int = 0

    def verifies_until_ms(self) -> int | None:
        """Until when tokens signed by this key may still be valid; ``None`` while it signs."""
        if self.retired_ms is None:
            return None
        return max(self.retired_ms + MAX_ACCESS_TTL_MS, self.max_exp_ms)

    def to_json(self) -> bytes:
        body = {
            "kid": self.key.kid,
            "private_pem": self.key.private_pem,
            "public_jwk": self.key.public_jwk,
            "created_ms": self.created_ms,
            "retired_ms": self.retired_ms,
            "max_exp_ms": self.max_exp_ms,
        }
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> RingKey:
        """Raises ``ValueError``/``KeyError`` on a malformed value."""
        body = json.loads(data)
        retired = body.get("retired_ms")
        return cls(
            key=SigningKey.from_json(data),
            created_ms=int(body.get("created_ms") or 0),
            retired_ms=int(retired) if isinstance(retired, int) else None,
            max_exp_ms=int(body.get("max_exp_ms") or 0),
        )


class KeyRing:
    """The RS256 keys in ``natter_auth_keys``: one signs (``current``), retired ones keep
    verifying until the last token they signed has expired (:meth:`RingKey.verifies_until_ms`).

    Every write is compare-and-set, so replicas rotating or recording at once never lose one.
    The one-key layout (``signing``) is adopted as the first ring key on first use.
    """

    def __init__(self, kv: KeyValue, js: JetStreamContext) -> None:
        self._kv = kv
        self._js = js
        self._current: tuple[float, RingKey] | None = None

    async def _get(self, key: str) -> tuple[bytes, int] | None:
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:
            return None
        if entry.value is None or entry.revision is None:
            return None
        return entry.value, entry.revision

    async def _ring_key(self, kid: str) -> tuple[RingKey, int] | None:
        found = await self._get(key_entry(kid))
        return (RingKey.from_json(found[0]), found[1]) if found else None

    async def start(self, *, now_ms: int) -> SigningKey:
        """Make sure a current key exists (adopting the one-key layout, or creating one)."""
        if await self._get(CURRENT_KEY) is None:
            first = await load_or_create_signing_key(self._kv)
            try:
                await self._kv.create(key_entry(first.kid), RingKey(first, created_ms=now_ms).to_json())
            except LOST_RACE:
                pass  # another replica adopted it first
            try:
                await self._kv.create(CURRENT_KEY, json.dumps({"kid": first.kid}).encode())
            except LOST_RACE:
                pass
        return (await self.current()).key

    async def current(self) -> RingKey:
        """The key that signs now (cached for :data:`CURRENT_TTL` seconds).

        Raises:
            RuntimeError: the ring is empty (:meth:`start` was not called).
        """
        cached = self._current
        if cached is not None and time.monotonic() - cached[0] < CURRENT_TTL:
            return cached[1]
        found = await self._get(CURRENT_KEY)
        if found is None:
            raise RuntimeError("no current signing key")
        ring = await self._ring_key(str(json.loads(found[0])["kid"]))
        if ring is None:
            raise RuntimeError("the current signing key is missing")
        self._current = (time.monotonic(), ring[0])
        return ring[0]

    async def keys(self) -> list[RingKey]:
        """Every key of the ring, current first, then newest first."""
        found: list[RingKey] = []
        # not kv.keys(), which can answer "no keys" for a bucket that has some (shared.kv_keys)
        for name in await kv_keys(self._js, subjects.KV_AUTH_KEYS, "k.>"):
            ring = await self._ring_key(name.removeprefix("k."))
            if ring is not None:
                found.append(ring[0])
        return sorted(found, key=lambda k: (k.retired_ms is not None, -k.created_ms))

    async def public_jwks(self, *, now_ms: int) -> list[dict[str, str]]:
        """Public JWKs of the keys that still verify (the current one first)."""
        current = await self.current()
        out = [dict(current.key.public_jwk)]
        for ring in await self.keys():
            until = ring.verifies_until_ms()
            if ring.key.kid != current.key.kid and until is not None and until > now_ms:
                out.append(dict(ring.key.public_jwk))
        return out

    async def note_signed(self, kid: str, *, exp_ms: int) -> None:
        """Record that ``kid`` signed a token valid until ``exp_ms`` (service tokens)."""
        for _ in range(20):
            found = await self._ring_key(kid)
            if found is None or found[0].max_exp_ms >= exp_ms:
                return
            ring, revision = found
            try:
                await self._kv.update(
                    key_entry(kid), replace(ring, max_exp_ms=exp_ms).to_json(), last=revision
                )
                return
            except LOST_RACE:
                continue

    async def rotate(self, *, now_ms: int) -> tuple[RingKey, RingKey]:
        """A new key signs from now on; the old one is retired (it keeps verifying).

        Returns:
            ``(new, retired)``.
        """
        old = await self.current()
        fresh = RingKey(generate_signing_key(), created_ms=now_ms)
        await self._kv.create(key_entry(fresh.key.kid), fresh.to_json())
        found = await self._get(CURRENT_KEY)
        assert found is not None
        await self._kv.update(CURRENT_KEY, json.dumps({"kid": fresh.key.kid}).encode(), last=found[1])
        for _ in range(20):
            retired = await self._ring_key(old.key.kid)
            if retired is None:
                break
            ring, revision = retired
            try:
                await self._kv.update(
                    key_entry(old.key.kid), replace(ring, retired_ms=now_ms).to_json(), last=revision
                )
                break
            except LOST_RACE:
                continue
        self._current = (time.monotonic(), fresh)
        logger.info("signing key rotated: kid=%s signs, kid=%s retired", fresh.key.kid, old.key.kid)
        retired_now = await self._ring_key(old.key.kid)
        return fresh, retired_now[0] if retired_now else old
