"""The HTTP API (PROTOCOL.md section 6): thin relays to the services over NATS.

Bodies and parameters are validated here with the same constraints the services apply (so a
request the OpenAPI document calls valid is never refused as malformed further in, and one it
calls invalid never reaches a service), then forwarded; services validate again. Every route
declares the statuses it can answer and their bodies (:mod:`gateway.http_models`): errors are
``{"detail","code"}``, validation errors add ``errors``. Bearer routes declare the ``bearer``
security scheme. Nothing client-supplied can make a route answer 5xx: bad input is 4xx, and only
an unavailable service is 503 (``tests/integration/test_http_contract.py`` runs schemathesis).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gateway.http_models import (
    BroadcastBody,
    BroadcastReply,
    DmBody,
    DmReply,
    LoginBody,
    LogoutBody,
    Me,
    MemberBody,
    MyRooms,
    NotificationSendBody,
    NotificationsPage,
    PasswordBody,
    PostedReply,
    PostMessageBody,
    ReadBody,
    RefreshBody,
    RegisterBody,
    Registered,
    RoleBody,
    RoomCreateBody,
    RoomInfo,
    RoomList,
    RoomsPage,
    SanctionBody,
    SentReply,
    TokenPair,
    WebhookBody,
    WebhookCreated,
    WebhookDeliveries,
    WebhookList,
    errors,
)
from gateway.node import Node
from gateway.pages import complete
from gateway.tokens import Claims
from shared import subjects
from shared.errors import ErrorCode, ProtocolError
from shared.internal import (
    DeleteRequest,
    DmRequest,
    HistoryRequest,
    MyRoomsRequest,
    NotifyListRequest,
    NotifyReadRequest,
    RoomCreateRequest,
    RoomLeaveRequest,
    RoomMemberRequest,
    RoomRoleRequest,
    RoomSanctionRequest,
    RoomsListRequest,
    SendRequest,
    WebhookCreateRequest,
    WebhookRef,
)

router = APIRouter()

#: The bearer scheme in OpenAPI; checking the token is :func:`bearer_claims`'s (401, not 403).
bearer = HTTPBearer(auto_error=False, description="An access token (login) or a service token.")

ROOM_PATTERN = subjects.ROOM_RE.pattern
USERNAME_PATTERN = r"^[A-Za-z0-9_]{3,32}$"
#: A room in a path: the pattern is documented, the check is ``invalid_room`` (400, section 3).
RoomPath = Annotated[str, Path(max_length=256, json_schema_extra={"pattern": ROOM_PATTERN})]
UsernamePath = Annotated[str, Path(pattern=USERNAME_PATTERN)]
WebhookIdPath = Annotated[str, Path(pattern=r"^[0-9a-f]{16}$")]


def node_of(request: Request) -> Node:
    """The gateway :class:`Node` of this app."""
    node: Node = request.app.state.node
    return node


async def bearer_claims(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Claims:
    """Verified claims of the ``Authorization: Bearer`` token; 401 otherwise."""
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials.strip():
        raise ProtocolError(ErrorCode.UNAUTHORIZED, "Missing bearer token")
    verifier = node_of(request).verifier
    assert verifier is not None
    try:
        return await verifier.verify(credentials.credentials.strip())
    except ProtocolError as error:
        if error.code in (ErrorCode.AUTH_FAILED, ErrorCode.TOKEN_EXPIRED):
            raise ProtocolError(ErrorCode.UNAUTHORIZED, error.message) from error
        raise


UserClaims = Annotated[Claims, Depends(bearer_claims)]


def json_bytes(body: bytes, status: int = 200) -> Response:
    """A response carrying a service's JSON bytes as they are."""
    return Response(content=body, status_code=status, media_type="application/json")


def client_ip(request: Request) -> str | None:
    """The client's address: the TCP peer's, or a configured proxy's ``X-Forwarded-For``."""
    return request.client.host if request.client else None


def require_service(claims: Claims) -> None:
    """403 unless the token carries the ``service`` or ``admin`` role."""
    if claims.role not in ("service", "admin"):
        raise ProtocolError(ErrorCode.FORBIDDEN, "A service or admin token is required")


# --- auth ------------------------------------------------------------------------------------
@router.post(
    "/api/auth/register",
    status_code=201,
    tags=["auth"],
    response_model=Registered,
    responses=errors(409, 429),
)
async def register(body: RegisterBody, request: Request) -> Response:
    """Create an account: 201 ``{"user_id","username"}``; 409 if the name is taken (in any case);
    429 when the client address registers too often."""
    payload = {**body.model_dump(), "client_ip": client_ip(request)}
    reply = await node_of(request).request_json(subjects.AUTH_REGISTER, payload)
    return JSONResponse(reply, status_code=201)


@router.post("/api/auth/login", tags=["auth"], response_model=TokenPair, responses=errors(401, 429))
async def login(body: LoginBody, request: Request) -> Response:
    """Exchange credentials for an access token and a refresh token; 401 for bad credentials,
    429 (``Retry-After``) while failed attempts slow this username or address."""
    payload = {**body.model_dump(), "client_ip": client_ip(request)}
    return JSONResponse(await node_of(request).request_json(subjects.AUTH_LOGIN, payload))


@router.post("/api/auth/refresh", tags=["auth"], response_model=TokenPair, responses=errors(401))
async def refresh(body: RefreshBody, request: Request) -> Response:
    """Rotate a refresh token. The same token again within 5 s answers the same pair; later,
    reuse revokes the session (401)."""
    return JSONResponse(await node_of(request).request_json(subjects.AUTH_REFRESH, body.model_dump()))


@router.post("/api/auth/logout", status_code=204, tags=["auth"], responses=errors(401))
async def logout(body: LogoutBody, request: Request) -> Response:
    """Revoke this session, or with ``all`` every session of the user (closing their sockets)."""
    await node_of(request).request_json(subjects.AUTH_LOGOUT, body.model_dump())
    return Response(status_code=204)


@router.post(
    "/api/auth/password", tags=["auth"], response_model=TokenPair, responses=errors(401, 403, 404, 429)
)
async def change_password(body: PasswordBody, claims: UserClaims, request: Request) -> Response:
    """Change the caller's password (user tokens only; 403 for a service token): 200 with a
    fresh token pair in a new session. Every other session of the user is revoked and their
    sockets closed ("session revoked"), the caller's current one included: continue with the
    answer's tokens. 401 for a wrong current password, throttled like logins (429)."""
    if claims.role != "user":
        raise ProtocolError(ErrorCode.FORBIDDEN, "Only users have passwords")
    payload = {**body.model_dump(), "user_id": claims.user_id, "client_ip": client_ip(request)}
    return JSONResponse(await node_of(request).request_json(subjects.AUTH_PASSWORD, payload))


@router.get("/api/me", tags=["auth"], response_model=Me, responses=errors(401, 404))
async def me(claims: UserClaims, request: Request) -> Response:
    """The authenticated user."""
    if claims.role != "user":
        return JSONResponse({"user_id": claims.user_id, "username": claims.username, "role": claims.role})
    reply = await node_of(request).request_json(subjects.AUTH_ME, {"user_id": claims.user_id})
    return JSONResponse({**reply, "role": claims.role})


@router.get("/.well-known/jwks.json", tags=["auth"], responses=errors())
async def jwks(request: Request) -> Response:
    """The auth service's public signing keys (RFC 7517): ``{"keys":[JWK]}``."""
    return json_bytes(await node_of(request).request(subjects.AUTH_JWKS, b"{}"))


# --- rooms -----------------------------------------------------------------------------------
@router.get("/api/rooms", tags=["rooms"], response_model=RoomList, responses=errors(401))
async def list_rooms(claims: UserClaims, request: Request) -> Response:
    """``{"rooms":[{"name","private","owner","last_seq","online"}]}``: rooms the user may join."""
    body = RoomsListRequest(user_id=claims.user_id)
    return json_bytes(
        await node_of(request).request(subjects.CHAT_ROOMS_LIST, body.model_dump_json().encode())
    )


@router.post(
    "/api/rooms",
    status_code=201,
    tags=["rooms"],
    response_model=RoomInfo,
    responses=errors(400, 401, 403, 409),
)
async def create_room(body: RoomCreateBody, claims: UserClaims, request: Request) -> Response:
    """Create a room (the caller owns it; a private room's only member is its owner); 400
    ``invalid_room`` for a name outside the pattern, 409 if it exists."""
    subjects.check_room(body.name)
    create = RoomCreateRequest(
        user_id=claims.user_id, username=claims.username, name=body.name, private=body.private
    )
    reply = await node_of(request).request(subjects.CHAT_ROOMS_CREATE, create.model_dump_json().encode())
    return json_bytes(reply, 201)


@router.get(
    "/api/rooms/{room}/messages",
    tags=["rooms"],
    response_model=RoomsPage,
    responses=errors(400, 401, 403, 404),
)
async def room_messages(
    room: RoomPath,
    claims: UserClaims,
    request: Request,
    before: Annotated[int | None, Query(ge=1)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    thread: Annotated[int | None, Query(ge=1, description="Page the replies to this message.")] = None,
) -> Response:
    """A page of history, as the WebSocket ``history`` frame: messages in their current state
    (edits, deletes, reactions, reply counts; PROTOCOL.md section 8)."""
    subjects.check_room(room)
    body = HistoryRequest(room=room, user_id=claims.user_id, before=before, limit=limit, thread=thread)
    node = node_of(request)
    answer = await node.request_msg(subjects.CHAT_HISTORY, body.model_dump_json(exclude_none=True).encode())
    return json_bytes(await complete(node.request, answer, room=room, user_id=claims.user_id))


@router.post(
    "/api/rooms/{room}/messages",
    tags=["rooms"],
    status_code=201,
    response_model=PostedReply,
    responses={
        200: {"model": PostedReply, "description": "A retry: the original's ack"},
        **errors(400, 401, 403, 404),
    },
)
async def post_message(
    room: RoomPath, body: PostMessageBody, claims: UserClaims, request: Request
) -> Response:
    """Post a message (PROTOCOL.md section 12), stored and delivered exactly like a socket's
    ``chat_message``: a user token posts as that user (who must be allowed to send in the
    room: 403 ``forbidden`` / ``muted``); a service or admin token posts as the service
    (``user_id`` ``svc:<name>``, ``"bot": true``) to any room that exists (404 otherwise).
    201 with the ``ack``; a repeated ``client_msg_id`` (10 minutes) is 200 with the original's."""
    subjects.check_room(room)
    send = SendRequest(
        user_id=claims.actor_id,
        username=claims.username,
        room=room,
        message=body.message,
        client_msg_id=body.client_msg_id,
        reply_to=body.reply_to,
        bot=claims.is_service,
    )
    answer = await node_of(request).request_msg(
        subjects.CHAT_SEND, send.model_dump_json(exclude_none=True).encode()
    )
    duplicate = (answer.headers or {}).get(subjects.HDR_DUPLICATE) == "1"
    return json_bytes(answer.data, 200 if duplicate else 201)


@router.delete(
    "/api/rooms/{room}/messages/{seq}",
    tags=["rooms"],
    status_code=204,
    response_class=Response,
    responses=errors(400, 401, 403, 404),
)
async def delete_message(
    room: RoomPath, seq: Annotated[int, Path(ge=1)], claims: UserClaims, request: Request
) -> Response:
    """Delete a message for good (PROTOCOL.md section 8): its author, a moderator or the owner
    of the room, or a service/admin token. 404 for a missing or already deleted message."""
    subjects.check_room(room)
    body = DeleteRequest(
        room=room,
        user_id=claims.actor_id,
        username=claims.username,
        target=seq,
        role=token_role(claims),
    )
    await node_of(request).request(subjects.CHAT_DELETE, body.model_dump_json(exclude_none=True).encode())
    return Response(status_code=204)


@router.post(
    "/api/rooms/{room}/members",
    tags=["rooms"],
    response_model=RoomInfo,
    responses=errors(400, 401, 403, 404, 409),
)
async def add_member(room: RoomPath, body: MemberBody, claims: UserClaims, request: Request) -> Response:
    """Add a member to a private room (owner only); 404 for an unknown room or user."""
    subjects.check_room(room)
    member = RoomMemberRequest(
        user_id=claims.actor_id,
        username=claims.username,
        room=room,
        member=body.username,
        role=token_role(claims),
    )
    reply = await node_of(request).request(subjects.CHAT_ROOMS_ADD_MEMBER, member.model_dump_json().encode())
    return json_bytes(reply)


@router.delete(
    "/api/rooms/{room}/members/{username}",
    tags=["rooms"],
    response_model=RoomInfo,
    responses=errors(400, 401, 403, 404, 409),
)
async def remove_member(
    room: RoomPath, username: UsernamePath, claims: UserClaims, request: Request
) -> Response:
    """Remove a member from a private room (the owner; or a member removing themselves). Their
    live sockets get ``removed`` within 2 s (PROTOCOL.md section 10)."""
    subjects.check_room(room)
    member = RoomMemberRequest(
        user_id=claims.actor_id, username=claims.username, room=room, member=username, role=token_role(claims)
    )
    reply = await node_of(request).request(
        subjects.CHAT_ROOMS_REMOVE_MEMBER, member.model_dump_json().encode()
    )
    return json_bytes(reply)


@router.put(
    "/api/rooms/{room}/members/{username}",
    tags=["rooms"],
    response_model=RoomInfo,
    responses=errors(400, 401, 403, 404, 409),
)
async def set_member_role(
    room: RoomPath, username: UsernamePath, body: RoleBody, claims: UserClaims, request: Request
) -> Response:
    """Make a member a moderator, or a member again (the owner, or a service/admin token)."""
    subjects.check_room(room)
    change = RoomRoleRequest(
        user_id=claims.actor_id,
        username=claims.username,
        room=room,
        member=username,
        role=token_role(claims),
        member_role=body.role,
    )
    reply = await node_of(request).request(subjects.CHAT_ROOMS_SET_ROLE, change.model_dump_json().encode())
    return json_bytes(reply)


async def _sanction(
    subject: str, room: str, username: str, duration_s: int | None, claims: Claims, request: Request
) -> Response:
    subjects.check_room(room)
    sanction = RoomSanctionRequest(
        user_id=claims.actor_id,
        username=claims.username,
        room=room,
        member=username,
        role=token_role(claims),
        duration_s=duration_s,
    )
    reply = await node_of(request).request(subject, sanction.model_dump_json(exclude_none=True).encode())
    return json_bytes(reply)


@router.post(
    "/api/rooms/{room}/bans",
    tags=["rooms"],
    response_model=RoomInfo,
    responses=errors(400, 401, 403, 404, 409),
)
async def ban_member(room: RoomPath, body: SanctionBody, claims: UserClaims, request: Request) -> Response:
    """Ban a user (owner, moderator): removed now (``removed`` within 2 s on every gateway), and
    ``join`` / ``history`` refused until unbanned or ``duration_s`` passes."""
    return await _sanction(subjects.CHAT_ROOMS_BAN, room, body.username, body.duration_s, claims, request)


@router.delete(
    "/api/rooms/{room}/bans/{username}",
    tags=["rooms"],
    response_model=RoomInfo,
    responses=errors(400, 401, 403, 404, 409),
)
async def unban_member(
    room: RoomPath, username: UsernamePath, claims: UserClaims, request: Request
) -> Response:
    """Lift a ban (owner, moderator)."""
    return await _sanction(subjects.CHAT_ROOMS_UNBAN, room, username, None, claims, request)


@router.post(
    "/api/rooms/{room}/mutes",
    tags=["rooms"],
    response_model=RoomInfo,
    responses=errors(400, 401, 403, 404, 409),
)
async def mute_member(room: RoomPath, body: SanctionBody, claims: UserClaims, request: Request) -> Response:
    """Mute a user (owner, moderator): they still read; ``chat_message``, ``edit`` and ``react``
    there are ``muted`` until ``duration_s`` passes."""
    return await _sanction(subjects.CHAT_ROOMS_MUTE, room, body.username, body.duration_s, claims, request)


@router.delete(
    "/api/rooms/{room}/mutes/{username}",
    tags=["rooms"],
    response_model=RoomInfo,
    responses=errors(400, 401, 403, 404, 409),
)
async def unmute_member(
    room: RoomPath, username: UsernamePath, claims: UserClaims, request: Request
) -> Response:
    """Lift a mute (owner, moderator)."""
    return await _sanction(subjects.CHAT_ROOMS_UNMUTE, room, username, None, claims, request)


@router.post(
    "/api/rooms/{room}/leave",
    tags=["rooms"],
    status_code=204,
    response_class=Response,
    responses=errors(400, 401, 403, 404, 409),
)
async def leave_room(room: RoomPath, claims: UserClaims, request: Request) -> Response:
    """Leave a room for good: it leaves ``GET /api/me/rooms``; a private room's member list loses
    you. 409 for a direct message, or the owner of a private room."""
    subjects.check_room(room)
    body = RoomLeaveRequest(user_id=claims.user_id, username=claims.username, room=room)
    await node_of(request).request(subjects.CHAT_ROOMS_LEAVE, body.model_dump_json().encode())
    return Response(status_code=204)


@router.get("/api/me/rooms", tags=["rooms"], response_model=MyRooms, responses=errors(401))
async def my_rooms(claims: UserClaims, request: Request) -> Response:
    """Your rooms, newest activity first, with unread counts and the latest message that is not
    deleted (PROTOCOL.md section 9)."""
    body = MyRoomsRequest(user_id=claims.user_id)
    return json_bytes(
        await node_of(request).request(subjects.CHAT_ROOMS_MINE, body.model_dump_json().encode())
    )


@router.post(
    "/api/dms",
    tags=["rooms"],
    status_code=201,
    response_model=DmReply,
    responses={
        200: {"model": DmReply, "description": "The direct message already existed."},
        **errors(401, 404, 409, 422),
    },
)
async def open_dm(body: DmBody, claims: UserClaims, request: Request) -> Response:
    """The direct message with ``username``: 201 when created, 200 after; the same room for the
    same two users whoever asks."""
    dm = DmRequest(user_id=claims.user_id, username=claims.username, peer=body.username)
    reply = json.loads(await node_of(request).request(subjects.CHAT_DMS_OPEN, dm.model_dump_json().encode()))
    created = bool(reply.pop("created", False))
    return JSONResponse(reply, status_code=201 if created else 200)


def token_role(claims: Claims) -> Literal["user", "service", "admin"]:
    """The caller's token role as the services take it (a user token is ``user``)."""
    return "service" if claims.role == "service" else "admin" if claims.role == "admin" else "user"


# --- notifications ---------------------------------------------------------------------------
@router.get(
    "/api/notifications", tags=["notifications"], response_model=NotificationsPage, responses=errors(401)
)
async def list_notifications(
    claims: UserClaims,
    request: Request,
    unread_only: bool = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Response:
    """The caller's notifications: ``{"type":"notifications","unread":N,"items":[..]}``."""
    body = NotifyListRequest(user_id=claims.user_id, unread_only=unread_only, limit=limit)
    return json_bytes(await node_of(request).request(subjects.NOTIFY_LIST, body.model_dump_json().encode()))


@router.post(
    "/api/notifications/read", tags=["notifications"], response_model=NotificationsPage, responses=errors(401)
)
async def mark_read(body: ReadBody, claims: UserClaims, request: Request) -> Response:
    """Mark ``ids`` (at least one) or ``"all": true`` read; answers the new summary."""
    read = NotifyReadRequest(user_id=claims.user_id, ids=body.ids, all=body.all)
    return json_bytes(await node_of(request).request(subjects.NOTIFY_READ, read.model_dump_json().encode()))


@router.post(
    "/api/notifications/send",
    status_code=202,
    tags=["notifications"],
    response_model=SentReply,
    responses=errors(401, 403, 404),
)
async def send_notification(body: NotificationSendBody, claims: UserClaims, request: Request) -> Response:
    """Notify one user (service/admin tokens only; 403 for a user token): 202
    ``{"status":"sent","id"}``; 404 for an unknown user; 422 unless exactly one of ``user_id`` /
    ``username`` is given."""
    require_service(claims)
    payload: dict[str, Any] = body.model_dump(exclude_none=True)
    reply = await node_of(request).request_json(subjects.NOTIFY_SEND, payload)
    return JSONResponse(reply, status_code=202)


@router.post(
    "/api/notifications/broadcast",
    status_code=202,
    tags=["notifications"],
    response_model=BroadcastReply,
    responses=errors(401, 403),
)
async def broadcast(body: BroadcastBody, claims: UserClaims, request: Request) -> Response:
    """Notify every connected socket (service/admin tokens only): 202 ``{"status":"broadcasted"}``."""
    require_service(claims)
    reply = await node_of(request).request_json(subjects.NOTIFY_BROADCAST, body.model_dump())
    return JSONResponse(reply, status_code=202)


# --- webhooks (PROTOCOL.md section 12) ------------------------------------------------------------
def require_admin(claims: Claims) -> None:
    """403 unless the token carries the ``admin`` role (webhooks see every room they ask for)."""
    if claims.role != "admin":
        raise ProtocolError(ErrorCode.FORBIDDEN, "An admin token is required")


@router.post(
    "/api/webhooks",
    tags=["webhooks"],
    status_code=201,
    response_model=WebhookCreated,
    responses=errors(400, 401, 403, 409),
)
async def create_webhook(body: WebhookBody, claims: UserClaims, request: Request) -> Response:
    """Register a webhook (admin token): ``url`` (http/https; one that resolves to a loopback,
    private or link-local address is 400 unless its host is in ``NATTER_WEBHOOK_ALLOWED_HOSTS``),
    ``events`` (feed types), ``secret`` (signs every delivery; made for you when absent) and
    optionally ``rooms`` (default: every public room). The answer is the only one with the
    secret."""
    require_admin(claims)
    create = WebhookCreateRequest(
        url=body.url, events=body.events, secret=body.secret, rooms=body.rooms, created_by=claims.user_id
    )
    reply = await node_of(request).request(
        subjects.NOTIFY_WEBHOOKS_CREATE, create.model_dump_json(exclude_none=True).encode()
    )
    return json_bytes(reply, 201)


@router.get("/api/webhooks", tags=["webhooks"], response_model=WebhookList, responses=errors(401, 403))
async def list_webhooks(claims: UserClaims, request: Request) -> Response:
    """Every registered webhook, without secrets (admin token)."""
    require_admin(claims)
    return json_bytes(await node_of(request).request(subjects.NOTIFY_WEBHOOKS_LIST, b"{}"))


@router.delete(
    "/api/webhooks/{webhook_id}",
    tags=["webhooks"],
    status_code=204,
    response_class=Response,
    responses=errors(401, 403, 404),
)
async def delete_webhook(webhook_id: WebhookIdPath, claims: UserClaims, request: Request) -> Response:
    """Remove a webhook, its pending deliveries and its log (admin token); 404 if unknown."""
    require_admin(claims)
    await node_of(request).request(
        subjects.NOTIFY_WEBHOOKS_DELETE, WebhookRef(id=webhook_id).model_dump_json().encode()
    )
    return Response(status_code=204)


@router.get(
    "/api/webhooks/{webhook_id}/deliveries",
    tags=["webhooks"],
    response_model=WebhookDeliveries,
    responses=errors(401, 403, 404),
)
async def webhook_deliveries(webhook_id: WebhookIdPath, claims: UserClaims, request: Request) -> Response:
    """The latest 100 delivery attempts, newest first: event id and type, attempt number, HTTP
    status (null when none came), duration in ms, error (admin token); 404 if unknown."""
    require_admin(claims)
    body = WebhookRef(id=webhook_id).model_dump_json().encode()
    return json_bytes(await node_of(request).request(subjects.NOTIFY_WEBHOOKS_DELIVERIES, body))
