"""The auth endpoints (docs/subjects.md): one method per subject, request bodies from
``shared/internal.py``, errors as :class:`~shared.errors.ProtocolError`.

Secrets never reach the logs: lines carry user ids, session ids and outcomes only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, NoReturn

from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from auth_service import events
from auth_service.clock import now_ms
from auth_service.config import Settings
from auth_service.keys import KeyRing
from auth_service.kv_json import encode, get_json
from auth_service.passwords import MAX_PASSWORD_CHARS, PasswordService
from auth_service.sessions import ResolvedRefresh, SessionStore
from auth_service.throttle import LoginThrottle
from auth_service.tokens import access_claims, open_successor, seal_successor, service_claims, sign
from auth_service.users import UserStore, public_user
from shared import subjects
from shared.errors import ErrorCode, ProtocolError
from shared.internal import (
    LoginRequest,
    LogoutRequest,
    LookupRequest,
    PasswordChangeRequest,
    RefreshRequest,
    RegisterRequest,
    ServiceTokenRequest,
    ServiceTokenRevokeRequest,
)
from shared.kv_keys import kv_keys
from shared.service_runner import Handler

logger = logging.getLogger(__name__)

BAD_CREDENTIALS = "Invalid username or password"
BAD_REFRESH = "Invalid refresh token"
DAY_MS = 86_400_000
#: PROTOCOL.md section 6: a rotated refresh token presented again within 5 s gets the same pair.
REUSE_INTERVAL_MS = 5_000


def _unauthorized(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.UNAUTHORIZED, message)


@dataclass
class AuthHandlers:
    """Everything an auth replica needs to answer requests; build it once NATS is connected."""

    settings: Settings
    js: JetStreamContext
    users: UserStore
    sessions: SessionStore
    throttle: LoginThrottle
    passwords: PasswordService
    keys: KeyRing
    service_tokens: KeyValue
    token_revocations: KeyValue

    def endpoints(self) -> dict[str, Handler]:
        """Subject -> handler for every ``auth.*`` endpoint."""
        return {
            subjects.AUTH_REGISTER: self.register,
            subjects.AUTH_LOGIN: self.login,
            subjects.AUTH_REFRESH: self.refresh,
            subjects.AUTH_LOGOUT: self.logout,
            subjects.AUTH_JWKS: self.jwks,
            subjects.AUTH_SERVICE_TOKEN: self.service_token,
            subjects.AUTH_SERVICE_TOKEN_LIST: self.service_token_list,
            subjects.AUTH_SERVICE_TOKEN_REVOKE: self.service_token_revoke,
            subjects.AUTH_ROTATE_KEYS: self.rotate_keys,
            subjects.AUTH_PASSWORD: self.change_password,
            subjects.AUTH_LOOKUP: self.lookup,
            subjects.AUTH_ME: self.lookup,
        }

    # --- auth.register -----------------------------------------------------------------------
    async def register(self, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        """``RegisterRequest`` -> ``{"user_id","username"}``; ``conflict`` 409 if the name is
        taken in any case, ``validation_error`` for a bad username or a password outside 8..128,
        ``rate_limited`` when the client address registered too often (before any hashing).
        Publishes ``events.user.registered`` once stored."""
        request = RegisterRequest.model_validate(body)
        await self.throttle.check_registration(request.client_ip, now_ms=now_ms())
        password_hash = await self.passwords.hash(request.password)
        record = await self.users.create(username=request.username, password_hash=password_hash)
        logger.info("registered user_id=%s", record["user_id"])
        await events.user_registered(
            self.js, user_id=record["user_id"], username=record["username"], timestamp=record["created_at"]
        )
        return {"user_id": record["user_id"], "username": record["username"]}

    # --- auth.login --------------------------------------------------------------------------
    async def login(self, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        """``LoginRequest`` -> the token pair.

        Unknown user and wrong password give the same ``unauthorized`` "Invalid username or
        password" after the same argon2 work (OWASP Authentication Cheat Sheet). Throttled
        attempts get ``rate_limited`` with ``retry_after`` before any password check.
        """
        request = LoginRequest.model_validate(body)
        started = now_ms()
        await self.throttle.check(request.username, request.client_ip, now_ms=started)
        user = await self.users.find_by_name(request.username)
        if len(request.password) > MAX_PASSWORD_CHARS:
            ok = False  # can never have been registered; not worth hashing
        elif user is None:
            ok = await self.passwords.verify_dummy(request.password)
        else:
            ok = await self.passwords.verify(str(user.value.get("password_hash", "")), request.password)
        if not ok or user is None:
            await self.throttle.record_failure(request.username, request.client_ip, now_ms=now_ms())
            logger.info("login failed")
            raise _unauthorized(BAD_CREDENTIALS)
        await self.throttle.record_success(request.username, request.client_ip, now_ms=now_ms())
        if self.passwords.needs_rehash(str(user.value["password_hash"])):
            await self.users.replace_password_hash(user, await self.passwords.hash(request.password))
        record = user.value
        issued = now_ms()
        sid = await self.sessions.create_session(record["user_id"], now_ms=issued)
        logger.info("login user_id=%s sid=%s", record["user_id"], sid)
        return await self._token_pair(record, sid=sid, session_created_ms=issued)

    async def _token_pair(
        self, user: dict[str, Any], *, sid: str, session_created_ms: int, issued_ms: int | None = None
    ) -> dict[str, Any]:
        issued = now_ms() if issued_ms is None else issued_ms
        refresh = await self.sessions.issue_refresh(
            sid=sid,
            user_id=user["user_id"],
            expires_ms=session_created_ms + self.settings.refresh_ttl_days * DAY_MS,
        )
        claims = access_claims(
            user_id=user["user_id"],
            username=user["username"],
            session_id=sid,
            role=str(user.get("role", "user")),
            now_ms=issued,
            ttl_seconds=self.settings.access_ttl_seconds,
            issuer=self.settings.issuer,
            audience=self.settings.audience,
        )
        return {
            "access_token": sign(claims, (await self.keys.current()).key),
            "token_type": "bearer",
            "expires_in": self.settings.access_ttl_seconds,
            "refresh_token": str(refresh),
            "user_id": user["user_id"],
            "username": user["username"],
        }

    # --- auth.refresh ------------------------------------------------------------------------
    async def refresh(self, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        """``RefreshRequest`` -> a new token pair in the same session; the presented token is
        rotated and stops working.

        ``unauthorized`` for malformed, unknown, expired or forged tokens and for revoked
        sessions. Presenting a token that was already rotated, or losing a race to use the same
        token twice, answers the same new pair within 5 s of the rotation; after that it is
        reuse and the whole session is revoked (:meth:`_reused`).
        """
        request = RefreshRequest.model_validate(body)
        resolved = await self.sessions.resolve(request.refresh_token)
        if resolved is None:
            raise _unauthorized(BAD_REFRESH)
        expires_ms = resolved.record.value.get("expires_ms")
        if not isinstance(expires_ms, int) or expires_ms <= now_ms():
            raise _unauthorized(BAD_REFRESH)
        if resolved.record.value.get("state") != "active":
            return await self._reused(resolved)
        session = await self.sessions.get_session(resolved.sid)
        if session is None or session.value.get("revoked") is not False:
            raise _unauthorized(BAD_REFRESH)
        user = await self.users.find_by_id(resolved.user_id)
        if user is None:
            raise _unauthorized(BAD_REFRESH)
        created_ms = int(session.value.get("created_ms", 0))
        revoked_before = max(
            await self.sessions.user_revoked_before(resolved.user_id),
            int(user.value.get("sessions_revoked_before_ms", 0)),
        )
        if created_ms < revoked_before:
            raise _unauthorized(BAD_REFRESH)
        pair = await self._token_pair(user.value, sid=resolved.sid, session_created_ms=created_ms)
        sealed = seal_successor(pair, resolved.token.secret)
        if not await self.sessions.mark_rotated(resolved, successor=sealed, now_ms=now_ms()):
            # Another use of the same token won the race (two tabs): answer what it got.
            await self.sessions.discard_refresh(str(pair["refresh_token"]))
            latest = await self.sessions.resolve(request.refresh_token)
            if latest is None:
                raise _unauthorized(BAD_REFRESH)
            return await self._reused(latest)
        logger.info("refresh user_id=%s sid=%s", resolved.user_id, resolved.sid)
        return pair

    async def _reused(self, resolved: ResolvedRefresh) -> dict[str, Any]:
        """A refresh token that was already rotated: within :data:`REUSE_INTERVAL_MS` of its
        rotation (a lost answer, two tabs) the same new pair again; later, reuse: the whole
        session is revoked (RFC 9700 s4.14.2; the "reuse interval" of Auth0 and Okta)."""
        value = resolved.record.value
        rotated_ms, sealed = value.get("rotated_ms"), value.get("successor")
        if (
            isinstance(rotated_ms, int)
            and isinstance(sealed, str)
            and now_ms() - rotated_ms <= REUSE_INTERVAL_MS
        ):
            session = await self.sessions.get_session(resolved.sid)
            pair = open_successor(sealed, resolved.token.secret)
            if session is not None and session.value.get("revoked") is False and pair is not None:
                logger.info("refresh retried within the reuse interval sid=%s", resolved.sid)
                return pair
        await self._reuse_detected(resolved)

    async def _reuse_detected(self, resolved: ResolvedRefresh) -> NoReturn:
        logger.warning(
            "refresh token reuse user_id=%s sid=%s: session revoked", resolved.user_id, resolved.sid
        )
        await self._revoke_session(resolved)
        raise _unauthorized(BAD_REFRESH)

    async def _revoke_session(self, resolved: ResolvedRefresh) -> None:
        await self.sessions.revoke_session(resolved.sid, resolved.user_id)
        await events.session_revoked(
            self.js, user_id=resolved.user_id, session_id=resolved.sid, stamp_ms=now_ms()
        )

    # --- auth.logout -------------------------------------------------------------------------
    async def logout(self, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        """``LogoutRequest`` -> ``{}``. ``all`` false revokes the token's session; ``all`` true
        revokes every session and access token of the user issued until now.

        Raises:
            ProtocolError: ``unauthorized`` when the token does not resolve to a session.
        """
        request = LogoutRequest.model_validate(body)
        resolved = await self.sessions.resolve(request.refresh_token)
        if resolved is None or await self.sessions.get_session(resolved.sid) is None:
            raise _unauthorized(BAD_REFRESH)
        if not request.all:
            await self._revoke_session(resolved)
            logger.info("logout user_id=%s sid=%s", resolved.user_id, resolved.sid)
            return {}
        before_ms = now_ms() + 1
        await self.sessions.revoke_user(resolved.user_id, before_ms=before_ms)
        await self.users.revoke_sessions_before(resolved.user_id, before_ms)
        await events.session_revoked(self.js, user_id=resolved.user_id, session_id=None, stamp_ms=before_ms)
        logger.info("logout all user_id=%s", resolved.user_id)
        return {}

    # --- auth.jwks ---------------------------------------------------------------------------
    async def jwks(self, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        """``{"keys":[JWK]}``: the public keys that verify (``kty``, ``n``, ``e``, ``kid``,
        ``alg`` RS256, ``use`` sig): the current one first, then retired ones until the last
        token they signed has expired."""
        return {"keys": await self.keys.public_jwks(now_ms=now_ms())}

    # --- auth.rotate_keys (operator) -----------------------------------------------------------
    async def rotate_keys(self, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        """A new signing key from now on: ``{"kid","retired":{"kid","verifies_until_ms"}}``."""
        fresh, retired = await self.keys.rotate(now_ms=now_ms())
        return {
            "kid": fresh.key.kid,
            "retired": {"kid": retired.key.kid, "verifies_until_ms": retired.verifies_until_ms()},
        }

    # --- auth.service_token ------------------------------------------------------------------
    async def service_token(self, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        """``ServiceTokenRequest`` -> ``{"access_token","expires_at" (Unix s),"role"}``.

        Callers are trusted NATS clients (the CLI, backend services); the gateway does not
        expose this subject.
        """
        request = ServiceTokenRequest.model_validate(body)
        issued = now_ms()
        claims = service_claims(
            name=request.name,
            role=request.role,
            now_ms=issued,
            ttl_days=request.ttl_days,
            issuer=self.settings.issuer,
            audience=self.settings.audience,
        )
        key = (await self.keys.current()).key
        record = {
            "jti": claims["jti"],
            "name": request.name,
            "role": request.role,
            "kid": key.kid,
            "issued_ms": issued,
            "expires_ms": claims["exp"] * 1000,
            "revoked_ms": None,
        }
        await self.service_tokens.create(claims["jti"], encode(record))
        await self.keys.note_signed(key.kid, exp_ms=claims["exp"] * 1000)
        logger.info("service token issued sub=%s role=%s jti=%s", claims["sub"], request.role, claims["jti"])
        return {
            "access_token": sign(claims, key),
            "expires_at": claims["exp"],
            "role": request.role,
            "jti": claims["jti"],
        }

    async def service_token_list(self, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        """``{"tokens":[{"jti","name","role","kid","issued_ms","expires_ms","revoked_ms"}]}``,
        newest first (operator only)."""
        jtis = await kv_keys(self.js, subjects.KV_SERVICE_TOKENS)  # not kv.keys(): shared.kv_keys
        tokens = [found.value for jti in jtis if (found := await get_json(self.service_tokens, jti))]
        tokens.sort(key=lambda t: -int(t.get("issued_ms") or 0))
        return {"tokens": tokens}

    async def service_token_revoke(self, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        """Revoke a service token by ``jti`` (operator only): every gateway refuses it within
        2 s (``natter_token_revocations``, watched). Idempotent; answers the token's record.

        Raises:
            ProtocolError: ``not_found`` for an unknown ``jti``.
        """
        request = ServiceTokenRevokeRequest.model_validate(body)
        found = await get_json(self.service_tokens, request.jti)
        if found is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, "No such service token")
        record = dict(found.value)
        if record.get("revoked_ms") is None:
            record["revoked_ms"] = now_ms()
            await self.service_tokens.put(request.jti, encode(record))
        await self.token_revocations.put(
            f"j.{request.jti}", encode({"expires_ms": record.get("expires_ms"), "name": record.get("name")})
        )
        logger.info("service token revoked jti=%s name=%s", request.jti, record.get("name"))
        return record

    # --- auth.password -----------------------------------------------------------------------
    async def change_password(self, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        """``PasswordChangeRequest`` -> a fresh token pair in a new session; every session of the
        user issued before (the caller's included) is revoked and their sockets closed, so the
        answer's pair is the only one left (OWASP: re-authenticate, then end other sessions).

        Raises:
            ProtocolError: ``unauthorized`` for a wrong current password (counted like a failed
                login, and throttled the same way: ``rate_limited``), ``not_found``.
        """
        request = PasswordChangeRequest.model_validate(body)
        user = await self.users.find_by_id(request.user_id)
        if user is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, "User not found")
        username = str(user.value["username"])
        await self.throttle.check(username, request.client_ip, now_ms=now_ms())
        if not await self.passwords.verify(
            str(user.value.get("password_hash", "")), request.current_password
        ):
            await self.throttle.record_failure(username, request.client_ip, now_ms=now_ms())
            raise _unauthorized("Wrong current password")
        await self.users.replace_password_hash(user, await self.passwords.hash(request.new_password))
        before_ms = now_ms() + 1
        await self.sessions.revoke_user(request.user_id, before_ms=before_ms)
        await self.users.revoke_sessions_before(request.user_id, before_ms)
        await events.session_revoked(self.js, user_id=request.user_id, session_id=None, stamp_ms=before_ms)
        issued = max(now_ms(), before_ms)  # not before the cut-off, or it would be revoked too
        sid = await self.sessions.create_session(request.user_id, now_ms=issued)
        fresh = await self.users.find_by_id(request.user_id)
        logger.info("password changed user_id=%s: other sessions revoked", request.user_id)
        return await self._token_pair(
            (fresh or user).value, sid=sid, session_created_ms=issued, issued_ms=issued
        )

    # --- auth.lookup / auth.me ---------------------------------------------------------------
    async def lookup(self, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        """``LookupRequest`` -> ``{"user_id","username","created_at"}``; by ``user_id`` or by
        ``username`` (case-insensitive).

        Raises:
            ProtocolError: ``not_found`` "User not found"; ``validation_error`` if neither field
                is given.
        """
        request = LookupRequest.model_validate(body)
        if request.user_id is not None:
            user = await self.users.find_by_id(request.user_id)
        elif request.username is not None:
            user = await self.users.find_by_name(request.username)
        else:
            raise ProtocolError(ErrorCode.VALIDATION_ERROR, "username or user_id is required")
        if user is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, "User not found")
        return public_user(user.value)
