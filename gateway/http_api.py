"""The HTTP API (PROTOCOL.md section 6): thin relays to the services over NATS.

Bodies are validated here for the OpenAPI schema and clear 422s, then forwarded; services
validate again. Errors are ``{"detail": "..."}`` with the status of the protocol code.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, StrictBool, StrictStr

from gateway.node import Node
from gateway.tokens import Claims
from shared import subjects
from shared.errors import ErrorCode, ProtocolError
from shared.internal import (
    HistoryRequest,
    NotifyListRequest,
    NotifyReadRequest,
    RoomCreateRequest,
    RoomMemberRequest,
    RoomsListRequest,
)

router = APIRouter()


def node_of(request: Request) -> Node:
    """The gateway :class:`Node` of this app."""
    node: Node = request.app.state.node
    return node


async def bearer_claims(request: Request, authorization: Annotated[str | None, Header()] = None) -> Claims:
    """Verified claims of the ``Authorization: Bearer`` token; 401 otherwise."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ProtocolError(ErrorCode.UNAUTHORIZED, "Missing bearer token")
    verifier = node_of(request).verifier
    assert verifier is not None
    try:
        return await verifier.verify(token.strip())
    except ProtocolError as error:
        if error.code in (ErrorCode.AUTH_FAILED, ErrorCode.TOKEN_EXPIRED):
            raise ProtocolError(ErrorCode.UNAUTHORIZED, error.message) from error
        raise


UserClaims = Annotated[Claims, Depends(bearer_claims)]


def json_bytes(body: bytes, status: int = 200) -> Response:
    """A response carrying a service's JSON bytes as they are."""
    return Response(content=body, status_code=status, media_type="application/json")


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


# --- bodies ----------------------------------------------------------------------------------
class Credentials(BaseModel):
    username: StrictStr = Field(max_length=64)
    password: StrictStr = Field(max_length=1024)


class RefreshBody(BaseModel):
    refresh_token: StrictStr = Field(max_length=512)


class LogoutBody(BaseModel):
    refresh_token: StrictStr = Field(max_length=512)
    all: StrictBool = False


class RoomCreateBody(BaseModel):
    name: StrictStr = Field(max_length=256)
    private: StrictBool = False


class MemberBody(BaseModel):
    username: StrictStr = Field(max_length=64)


class ReadBody(BaseModel):
    ids: list[StrictStr] = Field(default_factory=list, max_length=500)
    all: StrictBool = False


class NotificationSendBody(BaseModel):
    user_id: StrictStr | None = None
    username: StrictStr | None = None
    title: StrictStr = Field(min_length=1, max_length=200)
    message: StrictStr = Field(min_length=1, max_length=4000)
    notification_type: Literal["info", "warning", "error", "success"] = "info"
    metadata: dict[str, Any] = Field(default_factory=dict)


class BroadcastBody(BaseModel):
    title: StrictStr = Field(min_length=1, max_length=200)
    message: StrictStr = Field(min_length=1, max_length=4000)
    notification_type: Literal["info", "warning", "error", "success"] = "info"


# --- auth ------------------------------------------------------------------------------------
@router.post("/api/auth/register", status_code=201, tags=["auth"])
async def register(body: Credentials, request: Request) -> Response:
    """Create an account: 201 ``{"user_id","username"}``; 409 if the name is taken."""
    payload = {**body.model_dump(), "client_ip": client_ip(request)}
    reply = await node_of(request).request_json(subjects.AUTH_REGISTER, payload)
    return JSONResponse(reply, status_code=201)


@router.post("/api/auth/login", tags=["auth"])
async def login(body: Credentials, request: Request) -> Response:
    """Exchange credentials for an access token and a refresh token."""
    payload = {**body.model_dump(), "client_ip": client_ip(request)}
    return JSONResponse(await node_of(request).request_json(subjects.AUTH_LOGIN, payload))


@router.post("/api/auth/refresh", tags=["auth"])
async def refresh(body: RefreshBody, request: Request) -> Response:
    """Rotate a refresh token; reuse of a rotated one revokes the session (401)."""
    return JSONResponse(await node_of(request).request_json(subjects.AUTH_REFRESH, body.model_dump()))


@router.post("/api/auth/logout", status_code=204, tags=["auth"])
async def logout(body: LogoutBody, request: Request) -> Response:
    """Revoke this session, or with ``all`` every session of the user (closing their sockets)."""
    await node_of(request).request_json(subjects.AUTH_LOGOUT, body.model_dump())
    return Response(status_code=204)


@router.get("/api/me", tags=["auth"])
async def me(claims: UserClaims, request: Request) -> Response:
    """The authenticated user."""
    if claims.role != "user":
        return JSONResponse({"user_id": claims.user_id, "username": claims.username, "role": claims.role})
    reply = await node_of(request).request_json(subjects.AUTH_ME, {"user_id": claims.user_id})
    return JSONResponse({**reply, "role": claims.role})


@router.get("/.well-known/jwks.json", tags=["auth"])
async def jwks(request: Request) -> Response:
    """The auth service's public signing keys (RFC 7517)."""
    return json_bytes(await node_of(request).request(subjects.AUTH_JWKS, b"{}"))


# --- rooms -----------------------------------------------------------------------------------
@router.get("/api/rooms", tags=["rooms"])
async def list_rooms(claims: UserClaims, request: Request) -> Response:
    """``{"rooms":[{"name","private","owner","last_seq","online"}]}``: rooms the user may join."""
    body = RoomsListRequest(user_id=claims.user_id)
    return json_bytes(
        await node_of(request).request(subjects.CHAT_ROOMS_LIST, body.model_dump_json().encode())
    )


@router.post("/api/rooms", status_code=201, tags=["rooms"])
async def create_room(body: RoomCreateBody, claims: UserClaims, request: Request) -> Response:
    """Create a room (the caller owns it; a private room's only member is its owner)."""
    subjects.check_room(body.name)
    create = RoomCreateRequest(
        user_id=claims.user_id, username=claims.username, name=body.name, private=body.private
    )
    reply = await node_of(request).request(subjects.CHAT_ROOMS_CREATE, create.model_dump_json().encode())
    return json_bytes(reply, 201)


@router.get("/api/rooms/{room}/messages", tags=["rooms"])
async def room_messages(
    room: str,
    claims: UserClaims,
    request: Request,
    before: Annotated[int | None, Query(ge=1)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> Response:
    """A page of history, as the WebSocket ``history`` frame."""
    subjects.check_room(room)
    body = HistoryRequest(room=room, user_id=claims.user_id, before=before, limit=limit)
    reply = await node_of(request).request(
        subjects.CHAT_HISTORY, body.model_dump_json(exclude_none=True).encode()
    )
    return json_bytes(reply)


@router.post("/api/rooms/{room}/members", tags=["rooms"])
async def add_member(room: str, body: MemberBody, claims: UserClaims, request: Request) -> Response:
    """Add a member to a private room (owner only)."""
    subjects.check_room(room)
    member = RoomMemberRequest(
        user_id=claims.user_id, username=claims.username, room=room, member=body.username
    )
    reply = await node_of(request).request(subjects.CHAT_ROOMS_ADD_MEMBER, member.model_dump_json().encode())
    return json_bytes(reply)


@router.delete("/api/rooms/{room}/members/{username}", tags=["rooms"])
async def remove_member(room: str, username: str, claims: UserClaims, request: Request) -> Response:
    """Remove a member from a private room (owner only)."""
    subjects.check_room(room)
    member = RoomMemberRequest(user_id=claims.user_id, username=claims.username, room=room, member=username)
    reply = await node_of(request).request(
        subjects.CHAT_ROOMS_REMOVE_MEMBER, member.model_dump_json().encode()
    )
    return json_bytes(reply)


# --- notifications ---------------------------------------------------------------------------
@router.get("/api/notifications", tags=["notifications"])
async def list_notifications(
    claims: UserClaims,
    request: Request,
    unread_only: bool = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Response:
    """The caller's notifications: ``{"type":"notifications","unread":N,"items":[..]}``."""
    body = NotifyListRequest(user_id=claims.user_id, unread_only=unread_only, limit=limit)
    return json_bytes(await node_of(request).request(subjects.NOTIFY_LIST, body.model_dump_json().encode()))


@router.post("/api/notifications/read", tags=["notifications"])
async def mark_read(body: ReadBody, claims: UserClaims, request: Request) -> Response:
    """Mark ``ids`` (or ``all``) read; answers the new summary."""
    if not body.all and not body.ids:
        raise ProtocolError(ErrorCode.VALIDATION_ERROR, "Give 'ids' or 'all': true")
    read = NotifyReadRequest(user_id=claims.user_id, ids=body.ids, all=body.all)
    return json_bytes(await node_of(request).request(subjects.NOTIFY_READ, read.model_dump_json().encode()))


def require_service(claims: Claims) -> None:
    if claims.role not in ("service", "admin"):
        raise ProtocolError(ErrorCode.FORBIDDEN, "A service or admin token is required")


@router.post("/api/notifications/send", status_code=202, tags=["notifications"])
async def send_notification(body: NotificationSendBody, claims: UserClaims, request: Request) -> Response:
    """Notify one user (service/admin tokens only): 202 ``{"status":"sent","id"}``."""
    require_service(claims)
    reply = await node_of(request).request_json(subjects.NOTIFY_SEND, body.model_dump(exclude_none=True))
    return JSONResponse(reply, status_code=202)


@router.post("/api/notifications/broadcast", status_code=202, tags=["notifications"])
async def broadcast(body: BroadcastBody, claims: UserClaims, request: Request) -> Response:
    """Notify every connected socket (service/admin tokens only): 202 ``{"status":"broadcasted"}``."""
    require_service(claims)
    reply = await node_of(request).request_json(subjects.NOTIFY_BROADCAST, body.model_dump())
    return JSONResponse(reply, status_code=202)
