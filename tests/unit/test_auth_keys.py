"""Pure logic of auth_service.keys: JWK building and RFC 7638 thumbprints."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from auth_service.keys import SigningKey, b64url_uint, generate_signing_key, jwk_thumbprint

#: RFC 7638 section 3.1 example key and its thumbprint.
RFC7638_N = (
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRX"
    "jBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSq"
    "zs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHa"
    "Q-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
)


def test_thumbprint_matches_rfc7638_example() -> None:
    jwk = {"kty": "RSA", "n": RFC7638_N, "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"}
    assert jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_b64url_uint() -> None:
    assert b64url_uint(65537) == "AQAB"
    assert b64url_uint(0) == "AA"
    assert "=" not in b64url_uint(2**2047 + 1)


def test_generated_key_jwk_is_public_and_consistent() -> None:
    key = generate_signing_key()
    assert set(key.public_jwk) == {"kty", "n", "e", "kid", "alg", "use"}
    assert key.public_jwk["alg"] == "RS256" and key.public_jwk["use"] == "sig"
    assert key.kid == key.public_jwk["kid"] == jwk_thumbprint(key.public_jwk)
    private = serialization.load_pem_private_key(key.private_pem.encode(), password=None)
    assert isinstance(private, rsa.RSAPrivateKey) and private.key_size == 2048
    assert b64url_uint(private.public_key().public_numbers().n) == key.public_jwk["n"]


def test_signing_key_json_round_trip() -> None:
    key = generate_signing_key()
    assert SigningKey.from_json(key.to_json()) == key
