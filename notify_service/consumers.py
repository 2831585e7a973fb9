"""Durable JetStream consumers on stream ``EVENTS`` (docs/subjects.md, "Events").

* ``notify-welcome`` (filter ``events.user.registered``): a welcome notification, id
  ``welcome-<user_id>``.
* ``notify-mentions`` (filter ``events.chat.message``): one ``info`` notification per mentioned
  existing user who may read the room, id ``mention-<room>-<seq>-<user_id>``, ``metadata``
  ``{"room","seq"}``, its excerpt taken from the message as chat has it now (none once deleted).
* ``notify-redactions`` (filter ``events.chat.message_deleted``): each of those notifications
  loses its text (``message`` ``""``, ``metadata.deleted`` true) and the copy with text is erased
  from ``NOTIFICATIONS`` (PROTOCOL.md section 8, "Delete means gone"). The event is handled twice,
  the second time :data:`REDACT_RECHECK` seconds later, to catch a mention written in the
  instant between its excerpt's read and the delete.

Guarantees: the consumers are durable pull consumers with explicit acks, so replicas share them
(each event is handled by one replica at a time) and an event published while every replica was
down is handled when one starts. An event is acknowledged only after its notifications are
stored; a failure (auth_service or JetStream unavailable) naks it with a growing delay, and after
``max_deliver`` deliveries it is dropped (logged). Delivery is at least once, the effect is exactly
once: notification ids are deterministic and double as ``Nats-Msg-Id``, and a redelivered or
old event first checks whether its notification is already stored (:func:`needs_stored_check`).
A body that can never be handled is terminated (``term``), not retried.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Final, TypeVar

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError, model_validator

from notify_service.config import Settings
from notify_service.notifications import (
    build_notification,
    mention_excerpt,
    mention_id,
    mention_title,
    welcome_id,
    welcome_text,
)
from notify_service.room_access import mention_context
from notify_service.runtime import Runtime
from notify_service.users import UserRef, lookup_user
from shared import subjects
from shared.errors import ErrorCode, ProtocolError
from shared.internal import RoomName, UserId
from shared.streams import DEDUP_WINDOW

logger = logging.getLogger(__name__)

#: At most this many distinct users are notified for one message (the rest are ignored, logged).
MAX_MENTIONS: Final = 50
#: Seconds of clock skew tolerated between NATS and this process (see needs_stored_check).
CLOCK_MARGIN: Final = 120.0
_USERNAME_RE: Final = re.compile(r"^[a-z0-9_]{3,32}$")


@dataclass(frozen=True, slots=True)
class ConsumerSpec:
    """A durable consumer: its name and the one subject it filters on."""

    durable: str
    filter_subject: str


WELCOME_CONSUMER: Final = ConsumerSpec("notify-welcome", subjects.EVENT_USER_REGISTERED)
MENTIONS_CONSUMER: Final = ConsumerSpec("notify-mentions", subjects.EVENT_CHAT_MESSAGE)
REDACTIONS_CONSUMER: Final = ConsumerSpec("notify-redactions", subjects.EVENT_CHAT_MESSAGE_DELETED)
#: Seconds after the first handling of a delete that it is handled again (module docstring).
REDACT_RECHECK: Final = 10.0


class BadEvent(Exception):
    """An event body that can never be handled (wrong shape); it is terminated, not retried."""


class Recheck(Exception):
    """The event was handled and must be handled once more after ``delay`` seconds (nak with
    delay, not an error)."""

    def __init__(self, delay: float) -> None:
        super().__init__(f"recheck in {delay:.0f}s")
        self.delay = delay


class UserRegistered(BaseModel):
    """``events.user.registered`` body: the event feed's envelope ``{"id","type":"user.registered",
    "created_at","data":{"user_id","username"}}`` (:mod:`shared.events`); events stored before the
    feed existed are flat ``{"user_id","username","timestamp"}`` and are read the same."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    user_id: UserId
    username: Annotated[StrictStr, Field(min_length=1, max_length=64)]

    @model_validator(mode="before")
    @classmethod
    def _unwrap(cls, value: Any) -> Any:
        if isinstance(value, dict) and isinstance(value.get("data"), dict):
            return value["data"]
        return value


class ChatMessageEvent(BaseModel):
    """``events.chat.message`` body: ``{"room","seq","user_id","username","mentions"}`` (events
    stored before v2 also carry ``"message"``, which is ignored: the excerpt comes from chat)."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    room: RoomName
    seq: Annotated[StrictInt, Field(ge=1)]
    user_id: UserId
    username: Annotated[StrictStr, Field(min_length=1, max_length=64)]
    mentions: list[StrictStr] = Field(default_factory=list)


class MessageDeletedEvent(BaseModel):
    """``events.chat.message_deleted`` body: ``{"room","seq","mentions"}``."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    room: RoomName
    seq: Annotated[StrictInt, Field(ge=1)]
    mentions: list[StrictStr] = Field(default_factory=list)


EventHandler = Callable[[Runtime, Msg], Awaitable[None]]
_Model = TypeVar("_Model", bound=BaseModel)


def decode_event(model: type[_Model], data: bytes) -> _Model:
    """Validate an event body. Raises :class:`BadEvent` for anything that is not ``model``."""
    try:
        return model.model_validate_json(data)
    except ValidationError as error:
        raise BadEvent(f"{error.error_count()} validation errors") from error


def mention_targets(mentions: Iterable[str], *, sender: str, limit: int = MAX_MENTIONS) -> list[str]:
    """Lowercase usernames to notify: valid usernames only, each once, in order, never the
    sender (compared case-insensitively), at most ``limit``."""
    sender_key = sender.lower()
    out: list[str] = []
    for name in mentions:
        key = name.strip().lstrip("@").lower()
        if key == sender_key or key in out or _USERNAME_RE.fullmatch(key) is None:
            continue
        if len(out) >= limit:
            logger.warning("mention limit reached; %d kept", limit)
            break
        out.append(key)
    return out


def retry_delay(num_delivered: int, max_delay: float) -> float:
    """Seconds before retrying an event after its ``num_delivered``-th delivery failed:
    1, 2, 4, ... capped at ``max_delay``."""
    return float(min(max_delay, 2.0 ** max(0, min(num_delivered - 1, 16))))


def _num_delivered(msg: Msg) -> int:
    try:
        return int(msg.metadata.num_delivered)
    except Exception:  # not a JetStream message (never in practice)
        return 1


def needs_stored_check(*, num_delivered: int, age_seconds: float) -> bool:
    """Whether an event must look for its notification in storage before storing it.

    ``Nats-Msg-Id`` de-duplication only spans :data:`~shared.streams.DEDUP_WINDOW` (10 minutes)
    from the first store, which happened after the event was published. So a first delivery
    of an event younger than the window (minus :data:`CLOCK_MARGIN` for clock skew) is safe
    without a look-up; a redelivery, or an old event (a consumer created again replays the
    stream), is checked.
    """
    return num_delivered > 1 or age_seconds > DEDUP_WINDOW - CLOCK_MARGIN


def _needs_stored_check(msg: Msg) -> bool:
    try:
        age = (datetime.now(UTC) - msg.metadata.timestamp).total_seconds()
    except Exception:  # no metadata: be safe
        return True
    return needs_stored_check(num_delivered=_num_delivered(msg), age_seconds=age)


async def handle_user_registered(runtime: Runtime, msg: Msg) -> None:
    """Welcome a new user: notification ``welcome-<user_id>`` (``info``) with the configured
    title and message. Raises ``ProtocolError`` ``unavailable`` when storage fails."""
    event = decode_event(UserRegistered, msg.data)
    settings = runtime.settings
    data = build_notification(
        notification_id=welcome_id(event.user_id),
        title=settings.welcome_title,
        message=welcome_text(settings.welcome_message, event.username)[:4000],
        notification_type="info",
    )
    await runtime.notifier.notify(event.user_id, data, check_stored=_needs_stored_check(msg))


async def handle_chat_message(runtime: Runtime, msg: Msg) -> None:
    """Notify each mentioned existing user once (not the sender, not unknown users), and only
    users who may read the room now (``chat.access``): a private room's text never reaches a
    non-member (PROTOCOL.md section 10). The excerpt is the message's text now; a message
    deleted by then notifies nobody (PROTOCOL.md section 8).

    Raises:
        ProtocolError: ``unavailable`` when auth_service or storage does not answer; the event
            is then retried and users already notified are not notified again.
    """
    event = decode_event(ChatMessageEvent, msg.data)
    check_stored = _needs_stored_check(msg)
    timeout = runtime.settings.request_timeout
    users = await _mentioned_users(runtime, event.mentions, sender=event.username)
    users = [user for user in users if user.user_id != event.user_id]
    if not users:
        return
    try:
        context = await mention_context(
            runtime.nc,
            room=event.room,
            seq=event.seq,
            user_ids=[user.user_id for user in users],
            timeout=timeout,
        )
    except ProtocolError as error:
        if error.code is not ErrorCode.ROOM_NOT_FOUND:
            raise
        return
    if context.text is None:
        logger.info("room=%s seq=%d mentions not notified: the message is gone", event.room, event.seq)
        return
    for user in users:
        if user.user_id not in context.readers:
            logger.info("room=%s seq=%d mention of a non-reader not notified", event.room, event.seq)
            continue
        data = build_notification(
            notification_id=mention_id(event.room, event.seq, user.user_id),
            title=mention_title(event.username, event.room),
            message=mention_excerpt(context.text),
            notification_type="info",
            metadata={"room": event.room, "seq": event.seq},
        )
        await runtime.notifier.notify(user.user_id, data, check_stored=check_stored)
        await _in_progress(msg)


async def handle_message_deleted(runtime: Runtime, msg: Msg) -> None:
    """Strip the text from every mention notification of the deleted message (module
    docstring), then ask for the second pass (:class:`Recheck`) on the first delivery.

    Raises:
        Recheck: after the first delivery's pass.
        ProtocolError: ``unavailable`` when auth_service or storage does not answer (retried).
    """
    event = decode_event(MessageDeletedEvent, msg.data)
    for user in await _mentioned_users(runtime, event.mentions, sender=""):
        notification_id = mention_id(event.room, event.seq, user.user_id)
        if await runtime.notifier.redact(user.user_id, notification_id):
            logger.info("room=%s seq=%d mention of %s redacted", event.room, event.seq, user.user_id)
        await _in_progress(msg)
    if _num_delivered(msg) <= 1:
        raise Recheck(REDACT_RECHECK)


async def _mentioned_users(runtime: Runtime, mentions: Iterable[str], *, sender: str) -> list[UserRef]:
    """The existing users among ``mentions`` (see :func:`mention_targets`), each once.

    Raises:
        ProtocolError: ``unavailable`` when auth_service does not answer.
    """
    users: list[UserRef] = []
    for name in mention_targets(mentions, sender=sender):
        try:
            user = await lookup_user(runtime.nc, username=name, timeout=runtime.settings.request_timeout)
        except ProtocolError as error:
            if error.code is ErrorCode.NOT_FOUND:
                continue
            raise
        if user not in users:
            users.append(user)
    return users


async def _in_progress(msg: Msg) -> None:
    try:
        await msg.in_progress()
    except nats.errors.Error:  # best effort: at worst the event is redelivered and de-duplicated
        pass


def consumer_config(spec: ConsumerSpec, settings: Settings) -> ConsumerConfig:
    """The durable pull consumer's configuration (explicit ack, from the start of the stream)."""
    return ConsumerConfig(
        name=spec.durable,
        durable_name=spec.durable,
        filter_subject=spec.filter_subject,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=settings.ack_wait,
        max_deliver=settings.max_deliver,
        max_ack_pending=1000,
    )


async def run_consumer(runtime: Runtime, spec: ConsumerSpec, handler: EventHandler) -> None:
    """Fetch and handle events of ``spec`` forever (until cancelled).

    Survives NATS reconnects and a deleted consumer: fetches wait at most ``fetch_timeout``
    seconds, errors back off, and the subscription (and the durable consumer, if it is gone) is
    created again.
    """
    while True:
        sub = await _subscribe(runtime.js, spec, runtime.settings)
        logger.info("durable=%s consuming %s", spec.durable, spec.filter_subject)
        try:
            await _fetch_loop(runtime, spec, handler, sub)
        finally:
            try:
                await sub.unsubscribe()
            except Exception:  # connection gone; nothing to clean up
                pass
        await asyncio.sleep(1.0)


async def _subscribe(
    js: JetStreamContext, spec: ConsumerSpec, settings: Settings
) -> JetStreamContext.PullSubscription:
    delay = 0.5
    while True:
        try:
            return await js.pull_subscribe(
                spec.filter_subject,
                durable=spec.durable,
                stream=subjects.EVENTS_STREAM,
                config=consumer_config(spec, settings),
            )
        except (nats.errors.Error, TimeoutError) as error:
            logger.warning("durable=%s subscribe failed: %r; retrying in %.1fs", spec.durable, error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def _fetch_loop(
    runtime: Runtime, spec: ConsumerSpec, handler: EventHandler, sub: JetStreamContext.PullSubscription
) -> None:
    """Returns when the subscription should be created again (the consumer is gone)."""
    settings = runtime.settings
    last_seen = time.monotonic()
    while True:
        started = time.monotonic()
        try:
            msgs = await sub.fetch(batch=settings.fetch_batch, timeout=settings.fetch_timeout)
        except TimeoutError:  # no events, a reconnect ate the pull request, or the consumer is gone
            if time.monotonic() - started < 0.1:  # never spin hot
                await asyncio.sleep(0.5)
            if time.monotonic() - last_seen >= settings.consumer_check_interval:
                last_seen = time.monotonic()
                if not await _consumer_exists(sub, spec):
                    return
            continue
        except nats.js.errors.APIError as error:  # e.g. no stream / consumer: create it again
            logger.warning("durable=%s fetch failed: %r", spec.durable, error)
            return
        except nats.errors.Error as error:  # closed / reconnecting
            logger.warning("durable=%s fetch failed: %r", spec.durable, error)
            await asyncio.sleep(1.0)
            continue
        last_seen = time.monotonic()
        for msg in msgs:
            await _process(runtime, spec, handler, msg)


async def _consumer_exists(sub: JetStreamContext.PullSubscription, spec: ConsumerSpec) -> bool:
    """False only when JetStream says the durable consumer (or its stream) does not exist."""
    try:
        await sub.consumer_info()
    except nats.js.errors.NotFoundError:
        logger.warning("durable=%s consumer is gone; creating it again", spec.durable)
        return False
    except (nats.errors.Error, TimeoutError):  # cannot tell now (reconnecting): keep fetching
        return True
    return True


async def _process(runtime: Runtime, spec: ConsumerSpec, handler: EventHandler, msg: Msg) -> None:
    delivered = _num_delivered(msg)
    try:
        await handler(runtime, msg)
    except BadEvent as error:
        logger.warning("durable=%s dropping malformed event: %s", spec.durable, error)
        await _settle(msg.term())
        return
    except Recheck as again:
        await _settle(msg.nak(delay=again.delay))
        return
    except asyncio.CancelledError:
        raise
    except Exception as error:
        delay = retry_delay(delivered, runtime.settings.retry_delay_max)
        if isinstance(error, ProtocolError):
            log = logger.warning
        else:
            log = logger.exception
        if delivered >= runtime.settings.max_deliver:
            logger.error("durable=%s giving up on event after %d deliveries", spec.durable, delivered)
        log(
            "durable=%s event failed (delivery %d): %s; retry in %.0fs", spec.durable, delivered, error, delay
        )
        await _settle(msg.nak(delay=delay))
        return
    await _settle(msg.ack())


async def _settle(action: Awaitable[None]) -> None:
    """Await an ack/nak/term; if the connection is gone the server redelivers after ack_wait."""
    try:
        await action
    except nats.errors.Error as error:
        logger.warning("could not settle event: %r", error)
