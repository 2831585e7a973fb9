"""The HTTP API helpers (PROTOCOL.md section 6) over ``httpx.AsyncClient``.

:class:`NatterHTTP` talks to one or several gateways (same API on each). A connection that
cannot be opened (refused, connect timeout) moves on to the next base URL; a request that was
sent is never repeated on another one (a refresh token must not be presented twice).

It also owns the session's :class:`~natter.sdk.tokens.Tokens` and the only way to refresh them
(:meth:`NatterHTTP.refresh_tokens`, serialised by a lock), because reusing a refresh token that
was already rotated revokes the whole session.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import httpx

from natter.sdk.errors import AuthenticationFailed, GatewayUnreachable, HTTPError
from natter.sdk.tokens import Tokens

logger = logging.getLogger(__name__)

#: Bearer calls refresh the access token first when it expires within this many seconds.
REFRESH_MARGIN = 10.0


def _error_of(response: httpx.Response) -> HTTPError:
    detail = response.reason_phrase or "error"
    code: str | None = None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        detail = str(body.get("detail") or detail)
        code = body.get("code") if isinstance(body.get("code"), str) else None
    retry_after: float | None = None
    header = response.headers.get("retry-after")
    if header:
        try:
            retry_after = float(header)
        except ValueError:
            retry_after = None
    return HTTPError(response.status_code, detail, code=code, retry_after=retry_after)


class NatterHTTP:
    """Async helpers for natter's HTTP API.

    Args:
        base_url: one gateway base URL (``http://127.0.0.1:8000``) or several (failover on
            connect errors).
        tokens: tokens from an earlier login; :meth:`login` sets them.
        timeout: seconds per HTTP request.
        client: an ``httpx.AsyncClient`` to use (not closed by :meth:`aclose`); by default one is
            created and owned.

    Every method raises :class:`~natter.sdk.errors.HTTPError` for an error status (with the body's
    ``detail`` and ``code``) and :class:`~natter.sdk.errors.GatewayUnreachable` when no base URL
    accepts a connection. Use as ``async with NatterHTTP(url) as http:``.
    """

    def __init__(
        self,
        base_url: str | Sequence[str],
        *,
        tokens: Tokens | None = None,
        timeout: float = 10.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        if not urls:
            raise ValueError("at least one base URL is needed")
        self.base_urls = [url.rstrip("/") for url in urls]
        self.tokens = tokens
        self._index = 0
        self._client = client or httpx.AsyncClient(timeout=timeout)
        self._owns_client = client is None
        self._refresh_lock = asyncio.Lock()

    async def __aenter__(self) -> NatterHTTP:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the owned ``httpx`` client."""
        if self._owns_client:
            await self._client.aclose()

    # --- plumbing -------------------------------------------------------------------------
    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        bearer: bool = False,
    ) -> Any:
        headers: dict[str, str] = {}
        if bearer:
            headers["Authorization"] = f"Bearer {await self._access_token()}"
        last_error: Exception | None = None
        for _ in range(len(self.base_urls)):
            base = self.base_urls[self._index]
            try:
                response = await self._client.request(
                    method, base + path, json=json, params=params, headers=headers
                )
            except (httpx.ConnectError, httpx.ConnectTimeout) as error:
                logger.info("natter http: %s unreachable (%s), trying the next", base, type(error).__name__)
                last_error = error
                self._index = (self._index + 1) % len(self.base_urls)
                continue
            if response.status_code >= 400:
                raise _error_of(response)
            if response.status_code == 204 or not response.content:
                return None
            return response.json()
        raise GatewayUnreachable(f"no gateway reachable: {', '.join(self.base_urls)}") from last_error

    async def _access_token(self) -> str:
        if self.tokens is None:
            raise AuthenticationFailed("not logged in", "call login() first")
        if self.tokens.refresh_token and self.tokens.expires_within(REFRESH_MARGIN):
            await self.refresh_tokens(stale_access=self.tokens.access_token)
        assert self.tokens is not None
        return self.tokens.access_token

    # --- auth -----------------------------------------------------------------------------
    async def register(self, username: str, password: str) -> dict[str, Any]:
        """``POST /api/auth/register``: 201 ``{"user_id","username"}``; 409 ``conflict`` if taken,
        422 for a bad name (``^[A-Za-z0-9_]{3,32}$``) or password (8..128 characters)."""
        body: dict[str, Any] = await self._call(
            "POST", "/api/auth/register", json={"username": username, "password": password}
        )
        return body

    async def login(self, username: str, password: str) -> Tokens:
        """``POST /api/auth/login``: stores and returns the :class:`Tokens` (401 bad credentials,
        429 after too many failures)."""
        body = await self._call("POST", "/api/auth/login", json={"username": username, "password": password})
        self.tokens = Tokens.from_response(body)
        return self.tokens

    async def refresh(self, refresh_token: str | None = None) -> Tokens:
        """``POST /api/auth/refresh`` with ``refresh_token`` (default: the stored one): stores and
        returns the new pair; the old refresh token stops working (401 when reused)."""
        async with self._refresh_lock:
            return await self._refresh(refresh_token)

    async def refresh_tokens(self, *, stale_access: str | None) -> Tokens:
        """Refresh unless someone already did: when the stored access token is no longer
        ``stale_access``, return the stored tokens without a request.

        Raises:
            AuthenticationFailed: no refresh token, or the server rejects it (401/403).
            HTTPError / GatewayUnreachable: anything else (worth a retry later).
        """
        async with self._refresh_lock:
            current = self.tokens
            if current is not None and stale_access is not None and current.access_token != stale_access:
                return current
            return await self._refresh(None)

    async def _refresh(self, refresh_token: str | None) -> Tokens:
        token = refresh_token or (self.tokens.refresh_token if self.tokens else None)
        if not token:
            raise AuthenticationFailed("token expired", "no refresh token to renew the access token")
        try:
            body = await self._call("POST", "/api/auth/refresh", json={"refresh_token": token})
        except HTTPError as error:
            if error.status in (401, 403):
                raise AuthenticationFailed("refresh rejected", error.detail) from error
            raise
        self.tokens = Tokens.from_response(body)
        logger.info("natter http: access token refreshed for user=%s", self.tokens.user_id)
        return self.tokens

    async def logout(self, *, all: bool = False) -> None:
        """``POST /api/auth/logout``: revoke this session (its sockets close 1008 "session
        revoked"), or with ``all=True`` every session of the user. Forgets the tokens."""
        if self.tokens is None or not self.tokens.refresh_token:
            raise AuthenticationFailed("not logged in", "no refresh token")
        await self._call(
            "POST", "/api/auth/logout", json={"refresh_token": self.tokens.refresh_token, "all": all}
        )
        self.tokens = None

    async def me(self) -> dict[str, Any]:
        """``GET /api/me``: ``{"user_id","username","created_at","role"}``."""
        body: dict[str, Any] = await self._call("GET", "/api/me", bearer=True)
        return body

    # --- rooms ----------------------------------------------------------------------------
    async def rooms(self) -> list[dict[str, Any]]:
        """``GET /api/rooms``: rooms the user may join, each
        ``{"name","private","owner","last_seq","online"}``."""
        body = await self._call("GET", "/api/rooms", bearer=True)
        return list(body["rooms"])

    async def create_room(self, name: str, *, private: bool = False) -> dict[str, Any]:
        """``POST /api/rooms``: 201 ``{"name","private","owner","members"}``; 409 if it exists,
        400 ``invalid_room``."""
        body: dict[str, Any] = await self._call(
            "POST", "/api/rooms", json={"name": name, "private": private}, bearer=True
        )
        return body

    async def add_member(self, room: str, username: str) -> dict[str, Any]:
        """``POST /api/rooms/{room}/members`` (room owner): the updated room."""
        body: dict[str, Any] = await self._call(
            "POST", f"/api/rooms/{room}/members", json={"username": username}, bearer=True
        )
        return body

    async def remove_member(self, room: str, username: str) -> dict[str, Any]:
        """``DELETE /api/rooms/{room}/members/{username}`` (room owner): the updated room."""
        path = f"/api/rooms/{room}/members/{username}"
        body: dict[str, Any] = await self._call("DELETE", path, bearer=True)
        return body

    async def history(
        self, room: str, *, before: int | None = None, limit: int = 50, thread: int | None = None
    ) -> dict[str, Any]:
        """``GET /api/rooms/{room}/messages``: ``{"type":"history","room","messages","has_more"}``,
        up to ``limit`` (1..100) messages with ``seq < before`` (or the latest), oldest first,
        each in its current state (v2); ``thread``: the replies to that message."""
        params: dict[str, Any] = {"limit": limit}
        if before is not None:
            params["before"] = before
        if thread is not None:
            params["thread"] = thread
        body: dict[str, Any] = await self._call(
            "GET", f"/api/rooms/{room}/messages", params=params, bearer=True
        )
        return body

    # --- v2: my rooms, direct messages, moderation (PROTOCOL.md sections 8-10) ----------------
    async def my_rooms(self) -> list[dict[str, Any]]:
        """``GET /api/me/rooms``: your rooms, newest activity first, each
        ``{"name","private","dm","peer","role","last_seq","read_seq","unread","last_message"}``."""
        body = await self._call("GET", "/api/me/rooms", bearer=True)
        return list(body["rooms"])

    async def open_dm(self, username: str) -> dict[str, Any]:
        """``POST /api/dms``: ``{"room","peer"}`` of the direct message with ``username``."""
        body: dict[str, Any] = await self._call("POST", "/api/dms", json={"username": username}, bearer=True)
        return body

    async def leave_room(self, room: str) -> None:
        """``POST /api/rooms/{room}/leave``: leave for good (409 for a direct message)."""
        await self._call("POST", f"/api/rooms/{room}/leave", bearer=True)

    async def delete_message(self, room: str, seq: int) -> None:
        """``DELETE /api/rooms/{room}/messages/{seq}`` (author, moderator, owner)."""
        await self._call("DELETE", f"/api/rooms/{room}/messages/{seq}", bearer=True)

    async def set_role(self, room: str, username: str, role: str) -> dict[str, Any]:
        """``PUT /api/rooms/{room}/members/{username}`` ``{"role":"moderator"|"member"}`` (owner)."""
        path = f"/api/rooms/{room}/members/{username}"
        body: dict[str, Any] = await self._call("PUT", path, json={"role": role}, bearer=True)
        return body

    async def ban(self, room: str, username: str, *, duration_s: int | None = None) -> dict[str, Any]:
        """``POST /api/rooms/{room}/bans`` (owner, moderator)."""
        payload = {"username": username, "duration_s": duration_s}
        body: dict[str, Any] = await self._call("POST", f"/api/rooms/{room}/bans", json=payload, bearer=True)
        return body

    async def unban(self, room: str, username: str) -> dict[str, Any]:
        """``DELETE /api/rooms/{room}/bans/{username}``."""
        body: dict[str, Any] = await self._call("DELETE", f"/api/rooms/{room}/bans/{username}", bearer=True)
        return body

    async def mute(self, room: str, username: str, *, duration_s: int | None = None) -> dict[str, Any]:
        """``POST /api/rooms/{room}/mutes`` (owner, moderator)."""
        payload = {"username": username, "duration_s": duration_s}
        body: dict[str, Any] = await self._call("POST", f"/api/rooms/{room}/mutes", json=payload, bearer=True)
        return body

    async def unmute(self, room: str, username: str) -> dict[str, Any]:
        """``DELETE /api/rooms/{room}/mutes/{username}``."""
        body: dict[str, Any] = await self._call("DELETE", f"/api/rooms/{room}/mutes/{username}", bearer=True)
        return body

    # --- notifications --------------------------------------------------------------------
    async def notifications(self, *, unread_only: bool = False, limit: int = 50) -> dict[str, Any]:
        """``GET /api/notifications``: ``{"type":"notifications","unread","items"}``."""
        params = {"unread_only": "true" if unread_only else "false", "limit": limit}
        body: dict[str, Any] = await self._call("GET", "/api/notifications", params=params, bearer=True)
        return body

    async def mark_read(self, ids: Sequence[str] | None = None, *, all: bool = False) -> dict[str, Any]:
        """``POST /api/notifications/read`` with ``ids`` or ``all=True``: the new summary."""
        payload: dict[str, Any] = {"all": True} if all else {"ids": list(ids or [])}
        body: dict[str, Any] = await self._call("POST", "/api/notifications/read", json=payload, bearer=True)
        return body
