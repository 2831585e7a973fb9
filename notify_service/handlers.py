"""The request/reply endpoints ``notify.send``, ``notify.broadcast``, ``notify.list`` and
``notify.read`` (bodies: shared/internal.py; replies: docs/subjects.md).

A body that fails validation raises ``pydantic.ValidationError`` (the service runner answers
``validation_error``); every other failure is a :class:`~shared.errors.ProtocolError`.
"""

from __future__ import annotations

from typing import Any

from notify_service.notifications import api_notification_id, build_notification
from notify_service.runtime import Runtime
from notify_service.summary import build_summary
from notify_service.users import lookup_user
from notify_service.webhooks.registry import new_webhook
from notify_service.webhooks.targets import check, parse_allowed
from shared import subjects
from shared.errors import ErrorCode, ProtocolError
from shared.internal import (
    NotifyBroadcastRequest,
    NotifyListRequest,
    NotifyReadRequest,
    NotifySendRequest,
    WebhookCreateRequest,
    WebhookRef,
)
from shared.service_runner import Reply, ServiceApp


class NotifyEndpoints:
    """The endpoint handlers of one replica; :meth:`bind` gives them the connected runtime.

    Until bound (during startup) every handler answers ``unavailable``.
    """

    def __init__(self) -> None:
        self._runtime: Runtime | None = None

    def bind(self, runtime: Runtime) -> None:
        """Use ``runtime`` from now on."""
        self._runtime = runtime

    @property
    def runtime(self) -> Runtime:
        """The bound runtime. Raises ``ProtocolError`` ``unavailable`` before :meth:`bind`."""
        if self._runtime is None:
            raise ProtocolError(ErrorCode.UNAVAILABLE)
        return self._runtime

    def register(self, app: ServiceApp) -> None:
        """Add the four endpoints to ``app``."""
        app.add_endpoint(subjects.NOTIFY_SEND, self.send)
        app.add_endpoint(subjects.NOTIFY_BROADCAST, self.broadcast)
        app.add_endpoint(subjects.NOTIFY_LIST, self.list_notifications)
        app.add_endpoint(subjects.NOTIFY_READ, self.mark_read)
        app.add_endpoint(subjects.NOTIFY_WEBHOOKS_CREATE, self.create_webhook)
        app.add_endpoint(subjects.NOTIFY_WEBHOOKS_LIST, self.list_webhooks)
        app.add_endpoint(subjects.NOTIFY_WEBHOOKS_DELETE, self.delete_webhook)
        app.add_endpoint(subjects.NOTIFY_WEBHOOKS_DELIVERIES, self.webhook_deliveries)

    # --- webhooks (PROTOCOL.md section 12; the gateway lets only admin tokens ask) ---------------
    async def create_webhook(self, body: dict[str, Any], headers: dict[str, str]) -> Reply:
        """``notify.webhooks.create``: check the URL (SSRF rules, ``validation_error``), store
        the registration; answers it with its ``secret`` (the only time it is answered)."""
        request = WebhookCreateRequest.model_validate(body)
        runtime = self.runtime
        await check(request.url, parse_allowed(runtime.settings.webhook_allowed_hosts))
        webhook = new_webhook(
            url=request.url,
            events=list(request.events),
            secret=request.secret,
            rooms=list(request.rooms) if request.rooms is not None else None,
            created_by=request.created_by,
        )
        await runtime.webhooks.put(webhook)
        return {**webhook.public(), "secret": webhook.secret}

    async def list_webhooks(self, body: dict[str, Any], headers: dict[str, str]) -> Reply:
        """``notify.webhooks.list``: ``{"webhooks":[...]}`` without secrets."""
        return {"webhooks": [w.public() for w in await self.runtime.webhooks.all()]}

    async def delete_webhook(self, body: dict[str, Any], headers: dict[str, str]) -> Reply:
        """``notify.webhooks.delete``: ``{}``; ``not_found``."""
        request = WebhookRef.model_validate(body)
        if not await self.runtime.webhooks.delete(request.id):
            raise ProtocolError(ErrorCode.NOT_FOUND, "Webhook not found")
        return {}

    async def webhook_deliveries(self, body: dict[str, Any], headers: dict[str, str]) -> Reply:
        """``notify.webhooks.deliveries``: ``{"deliveries":[...]}``, the latest 100 attempts,
        newest first; ``not_found``."""
        request = WebhookRef.model_validate(body)
        webhooks = self.runtime.webhooks
        if await webhooks.get(request.id) is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, "Webhook not found")
        return {"deliveries": await webhooks.deliveries(request.id)}

    async def send(self, body: dict[str, Any], headers: dict[str, str]) -> Reply:
        """``notify.send``: store a notification for one user and push it; ``{"status":"sent","id"}``.

        Exactly one of ``user_id`` / ``username`` (else ``validation_error``); the user must
        exist according to ``auth.lookup`` (else ``not_found`` "User not found").
        """
        request = NotifySendRequest.model_validate(body)
        if (request.user_id is None) == (request.username is None):
            raise ProtocolError(ErrorCode.VALIDATION_ERROR, "Give exactly one of user_id or username")
        runtime = self.runtime
        timeout = runtime.settings.request_timeout
        if request.user_id is not None:
            subjects.check_user_id(request.user_id)
            user = await lookup_user(runtime.nc, user_id=request.user_id, timeout=timeout)
        else:
            user = await lookup_user(runtime.nc, username=request.username, timeout=timeout)
        data = build_notification(
            notification_id=api_notification_id(),
            title=request.title,
            message=request.message,
            notification_type=request.notification_type,
            metadata=request.metadata,
        )
        await runtime.notifier.notify(user.user_id, data)
        return {"status": "sent", "id": data["id"]}

    async def broadcast(self, body: dict[str, Any], headers: dict[str, str]) -> Reply:
        """``notify.broadcast``: publish ``broadcast_notification`` to ``deliver.all``;
        ``{"status":"broadcasted"}``. Broadcasts are not stored (PROTOCOL.md section 5 stores
        per-user notifications only): a socket that is not connected now never sees it."""
        request = NotifyBroadcastRequest.model_validate(body)
        await self.runtime.notifier.broadcast(
            title=request.title, message=request.message, notification_type=request.notification_type
        )
        return {"status": "broadcasted"}

    async def list_notifications(self, body: dict[str, Any], headers: dict[str, str]) -> Reply:
        """``notify.list``: the ``notifications`` frame (no ``id``): total ``unread`` and up to
        ``limit`` items, newest first, only unread ones with ``unread_only``."""
        request = NotifyListRequest.model_validate(body)
        runtime = self.runtime
        stored = await runtime.store.load(request.user_id)
        state, _ = await runtime.store.read_state(request.user_id)
        return build_summary(stored, state, unread_only=request.unread_only, limit=request.limit)

    async def mark_read(self, body: dict[str, Any], headers: dict[str, str]) -> Reply:
        """``notify.read``: mark ``ids`` (or ``all``) read; answers the ``notifications`` frame
        with the new ``unread`` count and the remaining unread items (at most ``summary_limit``).
        Ids the user does not have are ignored."""
        request = NotifyReadRequest.model_validate(body)
        runtime = self.runtime
        stored, state = await runtime.store.mark_read(request.user_id, ids=request.ids, mark_all=request.all)
        return build_summary(stored, state, unread_only=True, limit=runtime.settings.summary_limit)
