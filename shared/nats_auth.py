"""Who may do what on NATS: one user per tier with least-privilege permissions (DESIGN.md rule 15).

nats-server checks every ``PUB`` and ``SUB`` of a client against its user's allow lists (NATS
docs, "Authorization"); anything not listed is refused with ``Permissions Violation``. natter's
tiers and what each may do:

=========  ==================================================================================
operator   everything (``>``): provisioning streams and buckets (``natter provision``), minting
           service tokens (``auth.service_token``), health probes, tests, the operator's tools.
auth       serve ``auth.*``; its own buckets (users, sessions, refresh tokens, **the private
           signing keys**, login failures, service tokens) and the revocations it writes;
           ``events.user.*`` and ``events.session.*``. Of its endpoints, the gateway may ask
           only the public ones; ``auth.service_token*`` and ``auth.rotate_keys`` are the
           operator's.
chat       serve ``chat.*`` and ``api.rooms.post``; ``roomlog.>`` and ``roomview.>`` (the room
           log shards ``ROOMS_<k>``, reading them, following them for the event feed, erasing
           deleted text), ``access.>`` (removals), its buckets (rooms, presence, leases;
           gateways read-only), ``events.chat.*`` and the room events of the feed
           (``events.message.*``, ``events.reaction.*``, ``events.member.*``, and erasing a
           deleted message's copies there), ``deliver.room.*``; ask ``auth.lookup``.
notify     serve ``notify.*``; ``notif.>`` (and erasing a deleted message's mention text), its
           read-state bucket, the ``EVENTS`` consumers, ``deliver.user.*`` and ``deliver.all``;
           the webhook streams and bucket, one key of the leases bucket (the dispatcher's);
           ask ``auth.lookup`` and ``chat.access``.
gateway    ask exactly the service subjects the HTTP API and the WebSocket protocol use (never
           ``auth.service_token``, ``auth.lookup`` or ``chat.access``); receive ``deliver.>``;
           publish ``deliver.room.*`` (typing); its heartbeat bucket; follow the revocations and
           ``ROOM_ACCESS``. It never reads a KV value: public keys come from ``auth.jwks``.
backend    other services inside the NATS network: ``notify.send``, ``notify.broadcast`` and
           ``api.rooms.post``; read and consume the event feed (``EVENTS``) with consumers of
           their own, never natter's own durable consumers (denied by name).
=========  ==================================================================================

No tier but the operator may create, change or delete a stream or bucket: a client that may
create any stream can make it *source* another one (JetStream copies it inside the account), so
stream creation rights would let any tier read the signing keys. Streams are therefore
provisioned by the operator (:mod:`shared.provisioning`) and services only open them.

Each user also gets its own inbox prefix (``_INBOX.<user>``, :func:`inbox_prefix`) and may only
subscribe below it, so no tier can read another's replies (login answers carry tokens).
Services answer requests through ``allow_responses`` (a publish right to the reply subject of
each request they receive, NATS docs "allow_responses").
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from typing import Final

from shared import room_shards, subjects

OPERATOR: Final = "operator"
AUTH: Final = "auth"
CHAT: Final = "chat"
NOTIFY: Final = "notify"
GATEWAY: Final = "gateway"
BACKEND: Final = "backend"
#: Every NATS user natter defines, in the order the server config lists them.
TIERS: Final = (OPERATOR, AUTH, CHAT, NOTIFY, GATEWAY, BACKEND)
#: natter's own durable consumers on ``EVENTS`` (notify_service): backends may not touch them.
INTERNAL_EVENT_CONSUMERS: Final = (
    "notify-welcome",
    "notify-mentions",
    "notify-redactions",
    "notify-webhooks",
)

#: The request subjects the gateway relays (PROTOCOL.md sections 2-6) and nothing else.
GATEWAY_REQUESTS: Final = (
    subjects.AUTH_REGISTER,
    subjects.AUTH_LOGIN,
    subjects.AUTH_REFRESH,
    subjects.AUTH_LOGOUT,
    subjects.AUTH_JWKS,
    subjects.AUTH_ME,
    subjects.AUTH_PASSWORD,
    subjects.CHAT_JOIN,
    subjects.CHAT_LEAVE,
    subjects.CHAT_SEND,
    subjects.CHAT_SEND_BATCH,
    subjects.CHAT_HISTORY,
    subjects.CHAT_EDIT,
    subjects.CHAT_DELETE,
    subjects.CHAT_REACT,
    subjects.CHAT_PRESENCE,
    subjects.CHAT_ROOMS_LIST,
    subjects.CHAT_ROOMS_CREATE,
    subjects.CHAT_ROOMS_ADD_MEMBER,
    subjects.CHAT_ROOMS_REMOVE_MEMBER,
    subjects.CHAT_READ,
    subjects.CHAT_ROOMS_MINE,
    subjects.CHAT_ROOMS_LEAVE,
    subjects.CHAT_ROOMS_SET_ROLE,
    subjects.CHAT_ROOMS_BAN,
    subjects.CHAT_ROOMS_UNBAN,
    subjects.CHAT_ROOMS_MUTE,
    subjects.CHAT_ROOMS_UNMUTE,
    subjects.CHAT_DMS_OPEN,
    subjects.CHAT_ATTACHMENTS_REGISTER,
    subjects.CHAT_ATTACHMENTS_GET,
    subjects.NOTIFY_SEND,
    subjects.NOTIFY_BROADCAST,
    subjects.NOTIFY_LIST,
    subjects.NOTIFY_READ,
    subjects.NOTIFY_WEBHOOKS_CREATE,
    subjects.NOTIFY_WEBHOOKS_LIST,
    subjects.NOTIFY_WEBHOOKS_DELETE,
    subjects.NOTIFY_WEBHOOKS_DELIVERIES,
)

#: Buckets only auth_service may read or write (the signing keys are in ``natter_auth_keys``).
AUTH_BUCKETS: Final = (
    subjects.KV_USERS,
    subjects.KV_SESSIONS,
    subjects.KV_REFRESH,
    subjects.KV_AUTH_KEYS,
    subjects.KV_LOGIN_FAILURES,
    subjects.KV_LOGIN_KNOWN,
    subjects.KV_SERVICE_TOKENS,
)


def inbox_prefix(user: str) -> str:
    """``_INBOX.<user>``: the prefix of every reply subject the user's connections create."""
    return f"_INBOX.{user}"


def _info(stream: str) -> list[str]:
    """Open a stream (``js.key_value`` / ``stream_info``)."""
    return [f"$JS.API.STREAM.INFO.{stream}"]


def _read(stream: str) -> list[str]:
    """Open and read a stream by direct get (``allow_direct``; both request forms)."""
    return [*_info(stream), f"$JS.API.DIRECT.GET.{stream}", f"$JS.API.DIRECT.GET.{stream}.>"]


def _consume(stream: str) -> list[str]:
    """Create, inspect and delete consumers on a stream, pull from them, ack and answer flow
    control (KV watchers are ordered consumers; notify's are durable pull consumers)."""
    return [
        f"$JS.API.CONSUMER.CREATE.{stream}",
        f"$JS.API.CONSUMER.CREATE.{stream}.>",
        f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.>",
        f"$JS.API.CONSUMER.INFO.{stream}.>",
        f"$JS.API.CONSUMER.DELETE.{stream}.>",
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.>",
        f"$JS.ACK.{stream}.>",
        f"$JS.FC.{stream}.>",
    ]


def _object_store() -> list[str]:
    """Open the attachments' Object Store, read object metadata and chunks (an ordered
    consumer, or direct gets of a chunk subject), write objects (``$O.<bucket>.C.*`` chunks,
    ``$O.<bucket>.M.*`` metadata) and purge an object's chunks (nats-py does when a write fails
    midway, e.g. on a full bucket; deleting files with their message)."""
    stream = subjects.OBJ_ATTACHMENTS_STREAM
    return [
        *_read(stream),  # direct gets: a download streams the chunks (gateway.attachments)
        f"$JS.API.STREAM.MSG.GET.{stream}",
        f"$JS.API.STREAM.PURGE.{stream}",
        *_consume(stream),
        f"$O.{subjects.OBJ_ATTACHMENTS}.>",
        # nats-py finds the stream of an object's chunks by subject (a list of stream names)
        "$JS.API.STREAM.NAMES",
    ]


def _kv(bucket: str) -> str:
    return f"KV_{bucket}"


def _kv_write(bucket: str) -> list[str]:
    """Put, create, update and delete keys of a bucket (publishes to ``$KV.<bucket>.<key>``)."""
    return [f"$KV.{bucket}.>"]


def _service(name: str) -> tuple[list[str], list[str]]:
    """(publish, subscribe) every micro service needs: its endpoints, NATS service discovery
    (``$SRV.PING|INFO|STATS``, DESIGN.md rule 3) and its own inbox."""
    return [f"$SRV.PING.{name}"], [f"{name}.>", "$SRV.>", f"{inbox_prefix(name)}.>"]


def permissions(tier: str) -> dict[str, object]:
    """The nats-server ``permissions`` map of ``tier`` (one of :data:`TIERS`).

    Raises:
        ValueError: an unknown tier.
    """
    if tier == OPERATOR:
        return {"publish": {"allow": [">"]}, "subscribe": {"allow": [">"]}}
    if tier == AUTH:
        publish, subscribe = _service(AUTH)
        publish += ["events.user.>", "events.session.>", *_info(subjects.EVENTS_STREAM)]
        for bucket in (*AUTH_BUCKETS, subjects.KV_REVOCATIONS, subjects.KV_TOKEN_REVOCATIONS):
            publish += [*_read(_kv(bucket)), *_kv_write(bucket), *_consume(_kv(bucket))]
        return _with_responses(publish, subscribe)
    if tier == CHAT:
        publish, subscribe = _service(CHAT)
        subscribe.append(subjects.API_ROOMS_POST)  # backend services post as bots (section 12)
        publish += [
            subjects.AUTH_LOOKUP,
            room_shards.LOG_SUBJECTS,
            room_shards.VIEW_SUBJECTS,
            subjects.ROOM_ACCESS_SUBJECTS,
            "events.chat.>",
            # the room events of the event feed (chat_service.feed)
            "events.message.>",
            "events.reaction.>",
            "events.member.>",
            f"$JS.API.STREAM.MSG.DELETE.{subjects.EVENTS_STREAM}",
            subjects.DELIVER_ROOM_WILDCARD,
            *_info(subjects.ROOM_ACCESS_STREAM),
            *_info(subjects.EVENTS_STREAM),
        ]
        for shard in range(room_shards.MAX_SHARDS):
            stream = room_shards.stream_name(shard)
            # Erasing single messages is how deleted text is purged (PROTOCOL.md section 8).
            publish += [*_read(stream), f"$JS.API.STREAM.MSG.DELETE.{stream}", *_consume(stream)]
        for bucket in (
            subjects.KV_ROOMS,
            subjects.KV_PRESENCE,
            subjects.KV_GATEWAYS,
            subjects.KV_MEMBERSHIPS,
            subjects.KV_LEASES,
        ):
            publish += [*_read(_kv(bucket)), *_consume(_kv(bucket))]
        for bucket in (
            subjects.KV_ROOMS,
            subjects.KV_PRESENCE,
            subjects.KV_MEMBERSHIPS,
            subjects.KV_LEASES,
            subjects.KV_ATTACHMENTS,
        ):
            publish += _kv_write(bucket)
        # attachments (PROTOCOL.md section 11): records; deleting files with their message
        publish += [
            *_read(_kv(subjects.KV_ATTACHMENTS)),
            *_object_store(),
        ]
        # read markers go to the user's other sockets (PROTOCOL.md section 9)
        publish.append(subjects.DELIVER_USER_WILDCARD)
        return _with_responses(publish, subscribe)
    if tier == NOTIFY:
        publish, subscribe = _service(NOTIFY)
        publish += [
            subjects.AUTH_LOOKUP,
            subjects.CHAT_ACCESS,
            subjects.NOTIFICATIONS_SUBJECTS,
            subjects.DELIVER_USER_WILDCARD,
            subjects.DELIVER_ALL,
            *_read(subjects.NOTIFICATIONS_STREAM),
            # erasing the copy with text of a deleted message's mention (PROTOCOL.md section 8)
            f"$JS.API.STREAM.MSG.DELETE.{subjects.NOTIFICATIONS_STREAM}",
            *_info(subjects.EVENTS_STREAM),
            *_consume(subjects.EVENTS_STREAM),
            "events.notification.>",  # the event feed's notification.created
            *_read(_kv(subjects.KV_NOTIFY_READ)),
            *_kv_write(subjects.KV_NOTIFY_READ),
            # webhooks (PROTOCOL.md section 12): registrations, jobs, the log; events by seq
            *_read(subjects.EVENTS_STREAM),
            *_read(_kv(subjects.KV_WEBHOOKS)),
            *_kv_write(subjects.KV_WEBHOOKS),
            *_consume(_kv(subjects.KV_WEBHOOKS)),
            subjects.WEBHOOKS_SUBJECTS,
            subjects.WEBHOOK_LOG_SUBJECTS,
            # the dispatcher's lease (one key of the leases bucket, shared.leases)
            *_info(_kv(subjects.KV_LEASES)),
            f"$KV.{subjects.KV_LEASES}.{subjects.LEASE_WEBHOOK_DISPATCH}",
            *_info(subjects.WEBHOOKS_STREAM),
            *_consume(subjects.WEBHOOKS_STREAM),
            *_read(subjects.WEBHOOK_LOG_STREAM),
            f"$JS.API.STREAM.PURGE.{subjects.WEBHOOKS_STREAM}",
            f"$JS.API.STREAM.PURGE.{subjects.WEBHOOK_LOG_STREAM}",
        ]
        return _with_responses(publish, subscribe)
    if tier == GATEWAY:
        publish = [
            *GATEWAY_REQUESTS,
            subjects.DELIVER_ROOM_WILDCARD,
            *_info(_kv(subjects.KV_GATEWAYS)),
            *_kv_write(subjects.KV_GATEWAYS),
            # attachments: the gateway streams files in and out (DESIGN.md rule 16)
            *_object_store(),
        ]
        for stream in (
            _kv(subjects.KV_REVOCATIONS),
            _kv(subjects.KV_TOKEN_REVOCATIONS),
            subjects.ROOM_ACCESS_STREAM,
        ):
            publish += [*_info(stream), *_consume(stream)]
        subscribe = ["deliver.>", f"{inbox_prefix(GATEWAY)}.>"]
        return {"publish": {"allow": publish}, "subscribe": {"allow": subscribe}}
    if tier == BACKEND:
        deny: list[str] = []
        for durable in INTERNAL_EVENT_CONSUMERS:  # natter's own: no backend may take them over
            deny += [
                f"$JS.API.CONSUMER.CREATE.{subjects.EVENTS_STREAM}.{durable}",
                f"$JS.API.CONSUMER.CREATE.{subjects.EVENTS_STREAM}.{durable}.>",
                f"$JS.API.CONSUMER.DURABLE.CREATE.{subjects.EVENTS_STREAM}.{durable}",
                f"$JS.API.CONSUMER.DELETE.{subjects.EVENTS_STREAM}.{durable}",
                f"$JS.API.CONSUMER.MSG.NEXT.{subjects.EVENTS_STREAM}.{durable}",
                f"$JS.ACK.{subjects.EVENTS_STREAM}.{durable}.>",
            ]
        return {
            "publish": {
                "allow": [
                    subjects.NOTIFY_SEND,
                    subjects.NOTIFY_BROADCAST,
                    subjects.API_ROOMS_POST,
                    *_read(subjects.EVENTS_STREAM),
                    *_consume(subjects.EVENTS_STREAM),
                ],
                "deny": deny,
            },
            "subscribe": {"allow": [f"{inbox_prefix(BACKEND)}.>"]},
        }
    raise ValueError(f"unknown NATS tier {tier!r}")


def _with_responses(publish: list[str], subscribe: list[str]) -> dict[str, object]:
    return {"publish": {"allow": publish}, "subscribe": {"allow": subscribe}, "allow_responses": True}


#: The lines around the generated block in deploy/nats/*.conf (``natter nats-config --update``).
CONFIG_BEGIN: Final = "# BEGIN natter nats-auth: generated by `natter nats-config`, do not edit by hand"
CONFIG_END: Final = "# END natter nats-auth"


#: Where compose passes the cluster routes' password (deploy/nats/cluster.conf).
ROUTE_PASSWORD_ENV: Final = "NATTER_NATS_ROUTE_PASSWORD"


def new_password() -> str:
    """A random password nats-server reads back verbatim from an environment variable: it parses
    ``$VAR`` values as config values, so one starting with a digit or ``-`` breaks the config
    ("Expected a digit"); this one is ``n`` plus 48 hex digits (192 bits)."""
    return "n" + secrets.token_hex(24)


def password_env(tier: str) -> str:
    """``NATTER_NATS_PASSWORD_<TIER>``: where compose passes a tier's password to nats-server."""
    return f"NATTER_NATS_PASSWORD_{tier.upper()}"


def authorization_block(passwords: Mapping[str, str] | None = None) -> str:
    """The nats-server ``authorization { users = [...] }`` block for every tier.

    Args:
        passwords: tier -> password, written into the config (``natter up``, tests: the file is
            mode 0600 in the data dir); ``None`` references the environment variables of
            :func:`password_env` instead (compose: the server reads them at start).

    Raises:
        KeyError: ``passwords`` lacks a tier.
    """
    lines = ["authorization {", "  users = ["]
    for tier in TIERS:
        secret = json.dumps(passwords[tier]) if passwords is not None else f"${password_env(tier)}"
        perms = json.dumps(permissions(tier), indent=2).replace("\n", "\n      ")
        lines += [f'    {{user: "{tier}", password: {secret}', f"      permissions: {perms}", "    }"]
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"
