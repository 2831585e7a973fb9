"""Every NATS subject, stream and bucket name natter uses, and the only place they are built.

Subject tokens that come from user input (room names, user ids) are validated here so that no
input can widen a subscription: NATS treats ``.`` as a token separator and ``*`` / ``>`` as
wildcards, and whitespace ends a subject (NATS docs, "Subject-Based Messaging"). The rule is
the one centrifuge's NATS broker applies to channel names.
"""

from __future__ import annotations

import re
from typing import Final

from shared.errors import ErrorCode, ProtocolError

#: Room names, PROTOCOL.md section 3.
ROOM_RE: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
#: User ids are minted by auth_service as 32 lowercase hex characters (uuid4().hex);
#: service principals are ``svc-<name>``.
USER_ID_RE: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: Gateway ids are minted by each gateway process at start.
GATEWAY_ID_RE: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
WEBHOOK_ID_RE: Final = re.compile(r"^[0-9a-f]{16}$")

# --- request/reply endpoints (micro services, queue groups) ----------------------------------
AUTH_REGISTER: Final = "auth.register"
AUTH_LOGIN: Final = "auth.login"
AUTH_REFRESH: Final = "auth.refresh"
AUTH_LOGOUT: Final = "auth.logout"
AUTH_JWKS: Final = "auth.jwks"
AUTH_SERVICE_TOKEN: Final = "auth.service_token"
AUTH_SERVICE_TOKEN_LIST: Final = "auth.service_token.list"
AUTH_SERVICE_TOKEN_REVOKE: Final = "auth.service_token.revoke"
AUTH_ROTATE_KEYS: Final = "auth.rotate_keys"
AUTH_PASSWORD: Final = "auth.password"
AUTH_LOOKUP: Final = "auth.lookup"
AUTH_ME: Final = "auth.me"

CHAT_JOIN: Final = "chat.join"
CHAT_LEAVE: Final = "chat.leave"
CHAT_SEND: Final = "chat.send"
CHAT_SEND_BATCH: Final = "chat.send.batch"
CHAT_HISTORY: Final = "chat.history"
CHAT_EDIT: Final = "chat.edit"
CHAT_DELETE: Final = "chat.delete"
CHAT_REACT: Final = "chat.react"
CHAT_PRESENCE: Final = "chat.presence"
CHAT_TYPING: Final = "chat.typing"
CHAT_ROOMS_LIST: Final = "chat.rooms.list"
CHAT_ROOMS_CREATE: Final = "chat.rooms.create"
CHAT_ROOMS_ADD_MEMBER: Final = "chat.rooms.add_member"
CHAT_ROOMS_REMOVE_MEMBER: Final = "chat.rooms.remove_member"
CHAT_ACCESS: Final = "chat.access"
CHAT_READ: Final = "chat.read"
CHAT_ROOMS_MINE: Final = "chat.rooms.mine"
CHAT_ROOMS_LEAVE: Final = "chat.rooms.leave"
CHAT_ROOMS_SET_ROLE: Final = "chat.rooms.set_role"
CHAT_ROOMS_BAN: Final = "chat.rooms.ban"
CHAT_ROOMS_UNBAN: Final = "chat.rooms.unban"
CHAT_ROOMS_MUTE: Final = "chat.rooms.mute"
CHAT_ROOMS_UNMUTE: Final = "chat.rooms.unmute"
CHAT_DMS_OPEN: Final = "chat.dms.open"

CHAT_ATTACHMENTS_REGISTER: Final = "chat.attachments.register"
CHAT_ATTACHMENTS_GET: Final = "chat.attachments.get"
NOTIFY_SEND: Final = "notify.send"
NOTIFY_BROADCAST: Final = "notify.broadcast"
NOTIFY_LIST: Final = "notify.list"
NOTIFY_READ: Final = "notify.read"
#: Webhook registrations (admin, PROTOCOL.md section 12), served by notify_service.
NOTIFY_WEBHOOKS_CREATE: Final = "notify.webhooks.create"
NOTIFY_WEBHOOKS_LIST: Final = "notify.webhooks.list"
NOTIFY_WEBHOOKS_DELETE: Final = "notify.webhooks.delete"
NOTIFY_WEBHOOKS_DELIVERIES: Final = "notify.webhooks.deliveries"
#: One job per (webhook, event) waiting for delivery: ``hook.<webhook id>``.
WEBHOOKS_STREAM: Final = "WEBHOOKS"
WEBHOOKS_SUBJECTS: Final = "hook.>"
#: The latest attempts per webhook: ``hooklog.<webhook id>``.
WEBHOOK_LOG_STREAM: Final = "WEBHOOK_LOG"
WEBHOOK_LOG_SUBJECTS: Final = "hooklog.>"
#: The webhook dispatcher's checkpoint: the last ``EVENTS`` sequence it fanned out (a webhook id
#: is 16 hex digits, so it never meets a webhook's log).
WEBHOOK_CHECKPOINT: Final = "hooklog._dispatch"

# --- delivery (core pub/sub, final client frames as bytes) -----------------------------------
DELIVER_ALL: Final = "deliver.all"
DELIVER_ROOM_WILDCARD: Final = "deliver.room.*"
DELIVER_USER_WILDCARD: Final = "deliver.user.*"

# --- events (JetStream stream EVENTS, durable consumers) -------------------------------------
EVENTS_STREAM: Final = "EVENTS"
#: Backend services post messages into rooms (PROTOCOL.md section 12), served by chat_service.
API_ROOMS_POST: Final = "api.rooms.post"
EVENTS_ALL: Final = "events.>"
EVENT_USER_REGISTERED: Final = "events.user.registered"
EVENT_CHAT_MESSAGE: Final = "events.chat.message"
EVENT_CHAT_MESSAGE_DELETED: Final = "events.chat.message_deleted"
EVENT_SESSION_REVOKED: Final = "events.session.revoked"
#: The event feed's notification.created (shared.events; notify publishes it).
EVENT_NOTIFICATION_CREATED: Final = "events.notification.created"

# --- gateway liveness ------------------------------------------------------------------------
GATEWAY_HEARTBEAT_PREFIX: Final = "gateway.heartbeat"

# --- streams and KV buckets ------------------------------------------------------------------
MESSAGES_STREAM: Final = "CHAT_MESSAGES"
MESSAGES_SUBJECTS: Final = "msgs.>"
NOTIFICATIONS_STREAM: Final = "NOTIFICATIONS"
NOTIFICATIONS_SUBJECTS: Final = "notif.>"
#: Changes that take a user's right to read a room away (removal, later bans), watched by every
#: gateway (DESIGN.md rule 14: authorisation is live).
ROOM_ACCESS_STREAM: Final = "ROOM_ACCESS"
ROOM_ACCESS_SUBJECTS: Final = "access.>"

KV_USERS: Final = "natter_users"
KV_SESSIONS: Final = "natter_sessions"
KV_REFRESH: Final = "natter_refresh"
KV_AUTH_KEYS: Final = "natter_auth_keys"
KV_LOGIN_FAILURES: Final = "natter_login_failures"
KV_LOGIN_KNOWN: Final = "natter_login_known"
KV_SERVICE_TOKENS: Final = "natter_service_tokens"
KV_TOKEN_REVOCATIONS: Final = "natter_token_revocations"
KV_REVOCATIONS: Final = "natter_revocations"
KV_ROOMS: Final = "natter_rooms"
KV_PRESENCE: Final = "natter_presence"
KV_GATEWAYS: Final = "natter_gateways"
KV_NOTIFY_READ: Final = "natter_notify_read"
KV_WEBHOOKS: Final = "natter_webhooks"
#: Attachment records (chat owns them) and the Object Store bucket with the files (PROTOCOL.md s11).
KV_ATTACHMENTS: Final = "natter_attachments"
OBJ_ATTACHMENTS: Final = "natter_attachments"
#: The JetStream stream behind the Object Store bucket (nats-py's ``OBJ_<bucket>``).
OBJ_ATTACHMENTS_STREAM: Final = f"OBJ_{OBJ_ATTACHMENTS}"
#: ``<user_id>.<room>`` -> ``{"read_seq","since"}``: memberships and read markers (v2).
KV_MEMBERSHIPS: Final = "natter_memberships"
#: Leases: which replica does a singleton job now (chat's feed relay per shard, notify's webhook
#: dispatcher; :mod:`shared.leases`); entries expire 10 s after their holder stops renewing them.
KV_LEASES: Final = "natter_leases"
#: The webhook dispatcher's lease (notify may write this key of ``natter_leases`` only).
LEASE_WEBHOOK_DISPATCH: Final = "webhooks-dispatch"

# --- headers ---------------------------------------------------------------------------------
HDR_ROOM: Final = "Natter-Room"
HDR_SEQ: Final = "Natter-Seq"
HDR_USER: Final = "Natter-User"
HDR_CLIENT_MSG_ID: Final = "Natter-Client-Msg-Id"
HDR_KIND: Final = "Natter-Kind"
#: On ``deliver.user.<id>``: the socket (connection id) that already has this frame as an answer.
HDR_SKIP_CONN: Final = "Natter-Skip-Conn"
#: Revision of the room's registry entry (``natter_rooms``) a join was authorised at, or a
#: removal took effect at: a removal applies to sockets that joined at an older revision.
HDR_ROOM_REV: Final = "Natter-Room-Rev"
#: A ``joined`` / ``history`` reply that did not fit one NATS message: the gateway fetches the
#: messages with ``seq`` > this one (up to the frame's ``last_seq``) and appends them...
HDR_MORE_AFTER: Final = "Natter-More-After"
#: ...or ``Natter-More-Count`` messages with ``seq`` < this one, prepended (gateway.pages).
HDR_MORE_BEFORE: Final = "Natter-More-Before"
HDR_MORE_COUNT: Final = "Natter-More-Count"
#: On a ``chat.send`` reply: the message was stored before (a retry); the ack is the original's.
HDR_DUPLICATE: Final = "Natter-Duplicate"
#: On a room event delivery: when chat published it (Unix ms), for the gateways' delivery latency.
HDR_STORED_MS: Final = "Natter-Stored-Ms"
#: ``Natter-Kind`` of the ``removed`` frame chat publishes on ``deliver.room.<room>``.
KIND_REMOVED: Final = "removed"


def is_valid_room(name: object) -> bool:
    """True when ``name`` is a str matching ``^[a-z0-9][a-z0-9_-]{0,63}$`` (PROTOCOL.md s3)."""
    return isinstance(name, str) and ROOM_RE.fullmatch(name) is not None


def check_room(name: object) -> str:
    """Return ``name`` if it is a valid room name.

    Raises:
        ProtocolError: ``invalid_room`` for anything else (dots, wildcards, spaces, uppercase...).
    """
    if not is_valid_room(name):
        raise ProtocolError(ErrorCode.INVALID_ROOM, "Invalid room name")
    assert isinstance(name, str)
    return name


def check_user_id(user_id: object) -> str:
    """Return ``user_id`` if it is safe as one subject token; raise ``validation_error`` if not."""
    if not isinstance(user_id, str) or USER_ID_RE.fullmatch(user_id) is None:
        raise ProtocolError(ErrorCode.VALIDATION_ERROR, "Invalid user id")
    return user_id


def deliver_room(room: str) -> str:
    """``deliver.room.<room>``: final frames for every local subscriber of ``room``."""
    return f"deliver.room.{check_room(room)}"


def deliver_user(user_id: str) -> str:
    """``deliver.user.<user_id>``: final frames for every socket of one user."""
    return f"deliver.user.{check_user_id(user_id)}"


def room_from_deliver_subject(subject: str) -> str:
    """Inverse of :func:`deliver_room`; raises ``ValueError`` for any other subject."""
    prefix = "deliver.room."
    if not subject.startswith(prefix):
        raise ValueError(subject)
    return subject[len(prefix) :]


def messages_subject(room: str) -> str:
    """``msgs.<room>``: the stream subject holding one room's messages, in room ``seq`` order."""
    return f"msgs.{check_room(room)}"


def room_access_subject(room: str) -> str:
    """``access.<room>``: the ``ROOM_ACCESS`` stream subject of one room's access changes."""
    return f"access.{check_room(room)}"


def notifications_subject(user_id: str) -> str:
    """``notif.<user_id>``: the stream subject holding one user's notifications."""
    return f"notif.{check_user_id(user_id)}"


def webhook_subject(webhook_id: str) -> str:
    """``hook.<webhook id>``: the webhook's delivery jobs.

    Raises:
        ValueError: not a webhook id (16 hex digits).
    """
    if WEBHOOK_ID_RE.fullmatch(webhook_id) is None:
        raise ValueError(webhook_id)
    return f"hook.{webhook_id}"


def webhook_log_subject(webhook_id: str) -> str:
    """``hooklog.<webhook id>``: the webhook's latest attempts."""
    return f"hooklog.{webhook_subject(webhook_id).split('.', 1)[1]}"


def gateway_heartbeat(gateway_id: str) -> str:
    """``gateway.heartbeat.<gateway_id>``."""
    if GATEWAY_ID_RE.fullmatch(gateway_id) is None:
        raise ValueError(gateway_id)
    return f"{GATEWAY_HEARTBEAT_PREFIX}.{gateway_id}"


def presence_key(room: str, user_id: str, gateway_id: str) -> str:
    """KV key in ``natter_presence``: ``<room>.<user_id>.<gateway_id>``."""
    if GATEWAY_ID_RE.fullmatch(gateway_id) is None:
        raise ValueError(gateway_id)
    return f"{check_room(room)}.{check_user_id(user_id)}.{gateway_id}"
