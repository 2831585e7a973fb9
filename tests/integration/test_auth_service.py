"""auth_service against a real nats-server, with two real auth replicas as processes.

Every request goes over NATS to the ``auth`` queue group exactly as the gateway sends it
(``shared.nats_client.request_json``); state is checked in the real KV buckets and the EVENTS
stream. Usernames are unique per test, so tests are independent of each other and of order.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from jose import jwt
from jose.exceptions import JWTClaimsError, JWTError
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy
from nats.js.errors import KeyNotFoundError

from natter.launcher import ManagedProcess, service_process
from shared import subjects
from shared.errors import SERVICE_ERROR_CODE_HEADER, SERVICE_ERROR_HEADER, ErrorCode, ProtocolError
from shared.nats_client import request_json
from tests.conftest import NatsServer, wait_services
from tests.support import service_instances, unique_name

TIMEOUT = 10.0
PASSWORD = "correct horse 1"
REPLICAS = 2


async def _wait_instances(url: str, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while len({r["id"] for r in await service_instances(url, "auth")}) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {count} auth replicas answer $SRV.PING")


@pytest.fixture(scope="module")
def auth_replicas(nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Two auth_service processes against the session's nats-server; yields the NATS URL."""
    tmp: Path = tmp_path_factory.mktemp("auth")
    processes: list[ManagedProcess] = []
    try:
        for index in range(REPLICAS):
            process = service_process(
                "auth",
                nats_url=nats_server.client_url,
                log_path=tmp / f"auth-{index}.log",
                index=index,
                credentials=nats_server.credentials,
            )
            processes.append(process.start())
        wait_services(nats_server.url, ("auth",))
        asyncio.run(_wait_instances(nats_server.url, REPLICAS))
        yield nats_server.url
    finally:
        for process in processes:
            process.stop()


@pytest.fixture
async def nc(auth_replicas: str) -> AsyncIterator[Client]:
    client = await nats.connect(auth_replicas)
    yield client
    await client.close()


async def call(nc: Client, subject: str, body: dict[str, Any]) -> Any:
    return await request_json(nc, subject, body, timeout=TIMEOUT)


async def call_error(nc: Client, subject: str, body: dict[str, Any]) -> ProtocolError:
    """The ProtocolError a request is answered with (fails the test if it succeeds)."""
    with pytest.raises(ProtocolError) as caught:
        await call(nc, subject, body)
    return caught.value


async def raw(nc: Client, subject: str, data: bytes) -> Msg:
    return await nc.request(subject, data, timeout=TIMEOUT)


async def register(nc: Client, username: str | None = None, password: str = PASSWORD) -> dict[str, Any]:
    body = {"username": username or unique_name(), "password": password}
    reply: dict[str, Any] = await call(nc, subjects.AUTH_REGISTER, body)
    return reply


async def login(nc: Client, username: str, password: str = PASSWORD, **extra: Any) -> dict[str, Any]:
    reply: dict[str, Any] = await call(
        nc, subjects.AUTH_LOGIN, {"username": username, "password": password, **extra}
    )
    return reply


async def jwks(nc: Client) -> dict[str, Any]:
    reply: dict[str, Any] = await call(nc, subjects.AUTH_JWKS, {})
    return reply


def verify(token: str, keys: dict[str, Any], *, audience: str = "natter") -> dict[str, Any]:
    """Verify ``token`` as a gateway does: RS256 only, ``aud`` and ``iss`` required."""
    kid = jwt.get_unverified_header(token)["kid"]
    (key,) = [k for k in keys["keys"] if k["kid"] == kid]
    claims: dict[str, Any] = jwt.decode(token, key, algorithms=["RS256"], audience=audience, issuer="natter")
    return claims


async def kv_json(nc: Client, bucket: str, key: str) -> dict[str, Any] | None:
    kv = await nc.jetstream().key_value(bucket)
    try:
        entry = await kv.get(key)
    except KeyNotFoundError:
        return None
    value: dict[str, Any] = json.loads(entry.value or b"")
    return value


async def find_event(nc: Client, subject: str, match: dict[str, Any], timeout: float = 5.0) -> Msg:
    """The first message on ``subject`` in EVENTS whose JSON body contains ``match``."""
    sub = await nc.jetstream().subscribe(
        subject, stream=subjects.EVENTS_STREAM, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
    )
    try:
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            msg = await sub.next_msg(timeout=remaining)
            body = json.loads(msg.data)
            fields = body["data"] if isinstance(body.get("data"), dict) else body  # feed envelopes
            if all(fields.get(k) == v for k, v in match.items()):
                return msg
        raise TimeoutError(f"no {subject} event matching {match}")
    finally:
        await sub.unsubscribe()


# --- register / login ------------------------------------------------------------------------


async def test_register_then_login_returns_token_pair(nc: Client) -> None:
    name = unique_name("Reg")
    user = await register(nc, name)
    assert user["username"] == name
    assert len(user["user_id"]) == 32 and int(user["user_id"], 16) >= 0

    pair = await login(nc, name.upper())  # the name is case-insensitive at login
    assert pair["token_type"] == "bearer"
    assert pair["expires_in"] == 900
    assert pair["user_id"] == user["user_id"]
    assert pair["username"] == name  # as registered
    token_id, _, secret = pair["refresh_token"].partition(".")
    assert len(token_id) == 32 and len(secret) >= 32

    stored = await kv_json(nc, subjects.KV_USERS, f"id.{user['user_id']}")
    assert stored is not None and stored["password_hash"].startswith("$argon2id$")
    assert "m=19456,t=2,p=1" in stored["password_hash"]


async def test_username_is_unique_case_insensitively(nc: Client) -> None:
    name = unique_name("dup")
    await register(nc, name)
    error = await call_error(nc, subjects.AUTH_REGISTER, {"username": name.upper(), "password": PASSWORD})
    assert (error.code, error.status, error.message) == (ErrorCode.CONFLICT, 409, "Username already taken")


@pytest.mark.parametrize(
    "body",
    [
        {"username": "ab", "password": PASSWORD},
        {"username": "has space", "password": PASSWORD},
        {"username": "x" * 33, "password": PASSWORD},
        {"username": None, "password": PASSWORD},
        {"password": PASSWORD},
        {"username": "NAME", "password": "short"},
        {"username": "NAME", "password": "p" * 129},
    ],
)
async def test_register_rejects_invalid_input(nc: Client, body: dict[str, Any]) -> None:
    name = unique_name("bad")
    if body.get("username") == "NAME":
        body = {**body, "username": name}
    error = await call_error(nc, subjects.AUTH_REGISTER, body)
    assert (error.code, error.status) == (ErrorCode.VALIDATION_ERROR, 422)
    assert await kv_json(nc, subjects.KV_USERS, f"name.{name}") is None  # nothing was created


async def test_invalid_json_body(nc: Client) -> None:
    for subject in (subjects.AUTH_REGISTER, subjects.AUTH_LOGIN, subjects.AUTH_REFRESH):
        msg = await raw(nc, subject, b'{"username": "abc", ')
        assert msg.headers is not None
        assert msg.headers[SERVICE_ERROR_CODE_HEADER] == "400"
        assert msg.headers[SERVICE_ERROR_HEADER] == "invalid_json: Invalid JSON format"
    msg = await raw(nc, subjects.AUTH_LOGIN, b"[1, 2]")
    assert msg.headers is not None and msg.headers[SERVICE_ERROR_CODE_HEADER] == "422"


async def test_wrong_password_and_unknown_user_get_identical_answers(nc: Client) -> None:
    name = unique_name("who")
    await register(nc, name)
    wrong = await raw(
        nc, subjects.AUTH_LOGIN, json.dumps({"username": name, "password": "nope nope"}).encode()
    )
    unknown = await raw(
        nc,
        subjects.AUTH_LOGIN,
        json.dumps({"username": unique_name("ghost"), "password": "nope nope"}).encode(),
    )
    assert wrong.headers is not None and unknown.headers is not None
    assert wrong.headers[SERVICE_ERROR_CODE_HEADER] == "401"
    assert wrong.headers[SERVICE_ERROR_HEADER] == "unauthorized: Invalid username or password"
    assert (wrong.headers, wrong.data) == (unknown.headers, unknown.data)


async def test_oversized_password_is_unauthorized_at_login(nc: Client) -> None:
    name = unique_name("long")
    await register(nc, name)
    error = await call_error(nc, subjects.AUTH_LOGIN, {"username": name, "password": PASSWORD + "x" * 200})
    assert (error.code, error.message) == (ErrorCode.UNAUTHORIZED, "Invalid username or password")
    assert (await login(nc, name))["username"] == name


# --- tokens -----------------------------------------------------------------------------------


async def test_access_token_verifies_against_jwks(nc: Client) -> None:
    user = await register(nc)
    pair = await login(nc, user["username"])
    keys = await jwks(nc)
    (key,) = keys["keys"]
    assert {key["kty"], key["alg"], key["use"]} == {"RSA", "RS256", "sig"}
    assert set(key) == {"kty", "n", "e", "kid", "alg", "use"}  # public parts only
    assert jwt.get_unverified_header(pair["access_token"])["kid"] == key["kid"]

    claims = verify(pair["access_token"], keys)
    assert claims["sub"] == user["user_id"]
    assert claims["name"] == user["username"]
    assert claims["role"] == "user"
    assert claims["exp"] - claims["iat"] == 900
    assert claims["iat"] == claims["iat_ms"] // 1000
    assert abs(claims["iat_ms"] / 1000 - time.time()) < 60
    assert len(claims["sid"]) == 32 and len(claims["jti"]) == 32

    with pytest.raises(JWTClaimsError):
        verify(pair["access_token"], keys, audience="someone-else")
    with pytest.raises(JWTError):  # only the listed algorithms are accepted
        jwt.decode(pair["access_token"], key, algorithms=["HS256"], audience="natter", issuer="natter")
    header, payload, signature = pair["access_token"].split(".")
    tampered = f"{header}.{payload}.{signature[:-4]}AAAA"
    with pytest.raises(JWTError):
        verify(tampered, keys)


async def test_every_replica_serves_the_same_jwks(nc: Client) -> None:
    seen = {json.dumps(await jwks(nc), sort_keys=True) for _ in range(12)}
    assert len(seen) == 1


async def test_service_token(nc: Client) -> None:
    keys = await jwks(nc)
    reply = await call(nc, subjects.AUTH_SERVICE_TOKEN, {"name": "billing", "ttl_days": 2, "role": "admin"})
    assert reply["role"] == "admin"
    claims = verify(reply["access_token"], keys)
    assert claims["sub"] == "svc-billing" and claims["name"] == "billing" and claims["role"] == "admin"
    assert "sid" not in claims
    assert claims["exp"] == reply["expires_at"] == claims["iat"] + 2 * 86_400
    assert claims["jti"] and claims["iat_ms"] // 1000 == claims["iat"]

    default = await call(nc, subjects.AUTH_SERVICE_TOKEN, {"name": "mailer"})
    assert default["role"] == "service"
    assert verify(default["access_token"], keys)["exp"] - int(time.time()) > 364 * 86_400

    error = await call_error(nc, subjects.AUTH_SERVICE_TOKEN, {"name": "bad.name"})
    assert error.code == ErrorCode.VALIDATION_ERROR


# --- refresh ----------------------------------------------------------------------------------


async def test_refresh_rotates_the_token(nc: Client) -> None:
    user = await register(nc)
    first = await login(nc, user["username"])
    keys = await jwks(nc)
    sid = verify(first["access_token"], keys)["sid"]

    second = await call(nc, subjects.AUTH_REFRESH, {"refresh_token": first["refresh_token"]})
    assert second["refresh_token"] != first["refresh_token"]
    assert second["user_id"] == user["user_id"] and second["token_type"] == "bearer"
    claims = verify(second["access_token"], keys)
    assert claims["sid"] == sid and claims["sub"] == user["user_id"]

    old_id = first["refresh_token"].split(".")[0]
    stored = await kv_json(nc, subjects.KV_REFRESH, old_id)
    assert stored is not None and stored["state"] == "rotated" and stored["sid"] == sid
    assert first["refresh_token"].split(".")[1] not in json.dumps(stored)  # only the hash is stored

    third = await call(nc, subjects.AUTH_REFRESH, {"refresh_token": second["refresh_token"]})
    assert verify(third["access_token"], keys)["sid"] == sid


async def test_reusing_a_rotated_token_revokes_the_session(nc: Client) -> None:
    user = await register(nc)
    pair = await login(nc, user["username"])
    other = await login(nc, user["username"])  # a second, independent session
    sid = verify(pair["access_token"], await jwks(nc))["sid"]
    rotated = await call(nc, subjects.AUTH_REFRESH, {"refresh_token": pair["refresh_token"]})
    # Within the 5 s reuse interval (a lost answer): the same new pair again, nothing revoked.
    again = await call(nc, subjects.AUTH_REFRESH, {"refresh_token": pair["refresh_token"]})
    assert again == rotated
    assert await kv_json(nc, subjects.KV_REVOCATIONS, f"s.{sid}") is None

    await asyncio.sleep(5.3)  # PROTOCOL.md section 6: after 5 s a second use is reuse
    error = await call_error(nc, subjects.AUTH_REFRESH, {"refresh_token": pair["refresh_token"]})
    assert (error.code, error.status) == (ErrorCode.UNAUTHORIZED, 401)
    # The legitimate successor dies with the session...
    error = await call_error(nc, subjects.AUTH_REFRESH, {"refresh_token": rotated["refresh_token"]})
    assert error.code == ErrorCode.UNAUTHORIZED
    assert await kv_json(nc, subjects.KV_REVOCATIONS, f"s.{sid}") == {"user_id": user["user_id"]}
    session = await kv_json(nc, subjects.KV_SESSIONS, sid)
    assert session is not None and session["revoked"] is True
    event = await find_event(nc, subjects.EVENT_SESSION_REVOKED, {"session_id": sid})
    assert json.loads(event.data) == {"user_id": user["user_id"], "session_id": sid, "all": False}
    # ...while the user's other session is untouched.
    assert (await call(nc, subjects.AUTH_REFRESH, {"refresh_token": other["refresh_token"]}))["user_id"]


async def test_concurrent_double_use_of_a_refresh_token(nc: Client) -> None:
    user = await register(nc)
    pair = await login(nc, user["username"])
    results = await asyncio.gather(
        *(call(nc, subjects.AUTH_REFRESH, {"refresh_token": pair["refresh_token"]}) for _ in range(4)),
        return_exceptions=True,
    )
    # Two tabs refreshing at once: one use wins, the others get the very same pair (reuse
    # interval), so nobody is logged out and exactly one new refresh token exists.
    assert all(isinstance(r, dict) for r in results), results
    assert len({r["refresh_token"] for r in results if isinstance(r, dict)}) == 1
    assert len({r["access_token"] for r in results if isinstance(r, dict)}) == 1
    sid = verify(pair["access_token"], await jwks(nc))["sid"]
    assert await kv_json(nc, subjects.KV_REVOCATIONS, f"s.{sid}") is None
    winner = results[0]
    assert isinstance(winner, dict)
    assert (await call(nc, subjects.AUTH_REFRESH, {"refresh_token": winner["refresh_token"]}))["user_id"]


async def test_refresh_rejects_malformed_unknown_and_forged_tokens(nc: Client) -> None:
    user = await register(nc)
    pair = await login(nc, user["username"])
    token_id = pair["refresh_token"].split(".")[0]
    for bad in ("nope", "a.b", "0" * 32 + "." + "s" * 43, f"{token_id}.{'x' * 43}", f"{token_id}.*.>", "."):
        error = await call_error(nc, subjects.AUTH_REFRESH, {"refresh_token": bad})
        assert (error.code, error.message) == (ErrorCode.UNAUTHORIZED, "Invalid refresh token")
    # A forged secret for a real token id is not "reuse": the real token still works.
    assert (await call(nc, subjects.AUTH_REFRESH, {"refresh_token": pair["refresh_token"]}))["user_id"]


# --- logout -----------------------------------------------------------------------------------


async def test_logout_revokes_one_session(nc: Client) -> None:
    user = await register(nc)
    first = await login(nc, user["username"])
    second = await login(nc, user["username"])
    sid = verify(first["access_token"], await jwks(nc))["sid"]

    assert await call(nc, subjects.AUTH_LOGOUT, {"refresh_token": first["refresh_token"]}) == {}
    assert await kv_json(nc, subjects.KV_REVOCATIONS, f"s.{sid}") == {"user_id": user["user_id"]}
    session = await kv_json(nc, subjects.KV_SESSIONS, sid)
    assert session is not None and session["revoked"] is True
    error = await call_error(nc, subjects.AUTH_REFRESH, {"refresh_token": first["refresh_token"]})
    assert error.code == ErrorCode.UNAUTHORIZED
    assert (await call(nc, subjects.AUTH_REFRESH, {"refresh_token": second["refresh_token"]}))["user_id"]


async def test_logout_all_revokes_every_session(nc: Client) -> None:
    user = await register(nc)
    first = await login(nc, user["username"])
    second = await login(nc, user["username"])
    keys = await jwks(nc)
    issued = [verify(p["access_token"], keys)["iat_ms"] for p in (first, second)]

    assert await call(nc, subjects.AUTH_LOGOUT, {"refresh_token": first["refresh_token"], "all": True}) == {}
    entry = await kv_json(nc, subjects.KV_REVOCATIONS, f"u.{user['user_id']}")
    assert entry is not None and all(iat_ms < entry["before_ms"] for iat_ms in issued)
    for pair in (first, second):
        error = await call_error(nc, subjects.AUTH_REFRESH, {"refresh_token": pair["refresh_token"]})
        assert error.code == ErrorCode.UNAUTHORIZED
    event = await find_event(nc, subjects.EVENT_SESSION_REVOKED, {"user_id": user["user_id"], "all": True})
    assert json.loads(event.data)["session_id"] is None

    await asyncio.sleep(0.01)
    fresh = await login(nc, user["username"])  # a login after the logout is a new, valid session
    assert verify(fresh["access_token"], keys)["iat_ms"] >= entry["before_ms"]
    assert (await call(nc, subjects.AUTH_REFRESH, {"refresh_token": fresh["refresh_token"]}))["user_id"]


async def test_logout_with_an_unknown_token_is_unauthorized(nc: Client) -> None:
    error = await call_error(nc, subjects.AUTH_LOGOUT, {"refresh_token": "0" * 32 + "." + "x" * 43})
    assert error.code == ErrorCode.UNAUTHORIZED


# --- lookup / me ------------------------------------------------------------------------------


async def test_lookup_and_me(nc: Client) -> None:
    name = unique_name("Look")
    user = await register(nc, name)
    by_name = await call(nc, subjects.AUTH_LOOKUP, {"username": name.lower()})
    assert set(by_name) == {"user_id", "username", "created_at"}  # never the password hash
    assert by_name["user_id"] == user["user_id"] and by_name["username"] == name
    assert by_name["created_at"].endswith("Z")
    assert await call(nc, subjects.AUTH_LOOKUP, {"user_id": user["user_id"]}) == by_name
    assert await call(nc, subjects.AUTH_ME, {"user_id": user["user_id"]}) == by_name

    for body in (
        {"username": unique_name("none")},
        {"user_id": "f" * 32},
        {"user_id": "a.*"},
        {"username": "a b"},
    ):
        error = await call_error(nc, subjects.AUTH_LOOKUP, body)
        assert (error.code, error.status, error.message) == (ErrorCode.NOT_FOUND, 404, "User not found")
    error = await call_error(nc, subjects.AUTH_ME, {})
    assert error.code == ErrorCode.VALIDATION_ERROR


# --- throttling -------------------------------------------------------------------------------


def _login_bytes(username: str, password: str, **extra: Any) -> bytes:
    return json.dumps({"username": username, "password": password, **extra}).encode()


def unique_address() -> str:
    """A documentation-range IPv6 address no other test uses (its own throttling counters)."""
    suffix = uuid.uuid4().hex
    return f"2001:db8::{suffix[:4]}:{suffix[4:8]}"


async def wrong_login(nc: Client, name: str, address: str | None) -> ProtocolError:
    body: dict[str, Any] = {"username": name, "password": "wrong password"}
    if address is not None:
        body["client_ip"] = address
    return await call_error(nc, subjects.AUTH_LOGIN, body)


async def test_failures_from_one_address_slow_that_pair_and_never_lock_it(nc: Client) -> None:
    name, here, there = unique_name("brute"), unique_address(), unique_address()
    await register(nc, name)
    for _ in range(5):
        assert (await wrong_login(nc, name, here)).code == ErrorCode.UNAUTHORIZED
    for password in ("wrong password", PASSWORD):  # refused before the password is checked
        msg = await raw(nc, subjects.AUTH_LOGIN, _login_bytes(name.upper(), password, client_ip=here))
        assert msg.headers is not None
        assert msg.headers[SERVICE_ERROR_CODE_HEADER] == "429"
        assert msg.headers[SERVICE_ERROR_HEADER] == "rate_limited: Too many failed logins"
        retry_after = json.loads(msg.data)["retry_after"]
        assert isinstance(retry_after, int) and 1 <= retry_after <= 60
    # Another address is not slowed: five failures elsewhere are not the account's problem.
    assert (await login(nc, name, client_ip=there))["username"] == name
    # The same address gets through with the right password once the announced delay passed.
    await asyncio.sleep(retry_after + 0.1)
    assert (await login(nc, name, client_ip=here))["username"] == name
    assert await kv_json(nc, subjects.KV_LOGIN_FAILURES, f"ua.{name}.{here.replace(':', '_')}") is None


async def test_failures_from_anywhere_slow_a_username_but_its_known_address_passes(nc: Client) -> None:
    name, home = unique_name("wanted"), unique_address()
    await register(nc, name)
    assert (await login(nc, name, client_ip=home))["username"] == name  # home becomes known
    for _ in range(10):  # a distributed guesser: one failure from each of ten addresses
        assert (await wrong_login(nc, name, unique_address())).code == ErrorCode.UNAUTHORIZED
    stranger = await call_error(
        nc, subjects.AUTH_LOGIN, {"username": name, "password": PASSWORD, "client_ip": unique_address()}
    )
    assert stranger.code == ErrorCode.RATE_LIMITED
    assert 1 <= int(stranger.extra["retry_after"]) <= 60
    # The owner, from an address it logged in from before, is not held back at all...
    assert (await login(nc, name, client_ip=home))["username"] == name
    # ...and the global count was cleared by that success: a new address passes again.
    assert (await login(nc, name, client_ip=unique_address()))["username"] == name


async def test_failures_spread_over_usernames_slow_the_address(nc: Client) -> None:
    address = unique_address()
    victim = unique_name("victim")
    await register(nc, victim)
    results = await asyncio.gather(
        *(wrong_login(nc, unique_name("spray"), address) for _ in range(50)), return_exceptions=True
    )
    assert all(isinstance(r, ProtocolError) and r.code == ErrorCode.UNAUTHORIZED for r in results), results
    key = "ip." + address.replace(":", "_")
    assert (await kv_json(nc, subjects.KV_LOGIN_FAILURES, key) or {}).get("count") == 50

    error = await call_error(
        nc, subjects.AUTH_LOGIN, {"username": victim, "password": PASSWORD, "client_ip": address}
    )
    assert error.code == ErrorCode.RATE_LIMITED and error.status == 429
    # The same user from another address is not affected.
    assert (await login(nc, victim, client_ip="192.0.2.1"))["username"] == victim


async def test_registration_is_throttled_per_address(nc: Client) -> None:
    address = unique_address()
    started = time.monotonic()
    results = await asyncio.gather(
        *(
            call(
                nc,
                subjects.AUTH_REGISTER,
                {"username": unique_name(), "password": PASSWORD, "client_ip": address},
            )
            for _ in range(140)
        ),
        return_exceptions=True,
    )
    elapsed = time.monotonic() - started
    created = [r for r in results if isinstance(r, dict)]
    limited = [r for r in results if isinstance(r, ProtocolError) and r.code == ErrorCode.RATE_LIMITED]
    assert len(created) + len(limited) == len(results), results
    assert limited and all(int(e.extra["retry_after"]) >= 1 for e in limited)
    assert len(created) <= 100 + 2 * elapsed + 2  # the burst, then 2 per second
    # Another address registers as usual.
    other = {"username": unique_name(), "password": PASSWORD, "client_ip": unique_address()}
    assert (await call(nc, subjects.AUTH_REGISTER, other))["username"] == other["username"]


# --- replicas and events ----------------------------------------------------------------------


async def _register_requests_by_instance(url: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for stats in await service_instances(url, "auth", "STATS"):
        for endpoint in stats["endpoints"]:
            if endpoint["subject"] == subjects.AUTH_REGISTER:
                counts[stats["id"]] = endpoint["num_requests"]
    return counts


async def test_username_unique_under_concurrency_across_replicas(nc: Client, auth_replicas: str) -> None:
    base = unique_name("race")
    variants = ["".join(c.upper() if (i >> n) & 1 else c for n, c in enumerate(base)) for i in range(20)]
    before = await _register_requests_by_instance(auth_replicas)

    results = await asyncio.gather(
        *(call(nc, subjects.AUTH_REGISTER, {"username": v, "password": PASSWORD}) for v in variants),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, dict)]
    losers = [r for r in results if isinstance(r, ProtocolError)]
    assert len(winners) == 1, results
    assert len(losers) == 19 and all(e.code == ErrorCode.CONFLICT for e in losers), results
    found = await call(nc, subjects.AUTH_LOOKUP, {"username": base})
    assert found["user_id"] == winners[0]["user_id"]

    after = await _register_requests_by_instance(auth_replicas)
    served = [i for i, n in after.items() if n > before.get(i, 0)]
    assert len(served) >= 2, (before, after)  # both replicas really competed


async def test_registration_publishes_user_registered_event(nc: Client) -> None:
    user = await register(nc)
    msg = await find_event(nc, subjects.EVENT_USER_REGISTERED, {"user_id": user["user_id"]})
    body = json.loads(msg.data)  # the event feed's envelope (shared.events)
    assert body["type"] == "user.registered" and body["id"] == f"user:{user['user_id']}:registered"
    assert body["data"] == {"user_id": user["user_id"], "username": user["username"]}
    assert body["created_at"].endswith("Z")
    assert msg.headers is not None and msg.headers["Nats-Msg-Id"] == body["id"]
