"""The RS256 signing key: generated once, shared by every replica through KV, published as a JWK.

The first replica to start creates ``natter_auth_keys`` key ``signing`` with ``kv.create``
(atomic: a concurrent starter gets a wrong-last-sequence error and reads the winner's key), so
all replicas sign with the same key and the JWKS is the same everywhere.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

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
    """The shared signing key from ``natter_auth_keys``, created by whichever replica gets there
    first.

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
    except KeyWrongLastSequenceError:
        winner = SigningKey.from_json((await kv.get(SIGNING_KEY)).value or b"")
        logger.info("using signing key kid=%s created by another replica", winner.kid)
        return winner
