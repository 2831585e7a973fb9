"""Connecting to NATS and talking to services over request/reply.

:func:`connect` retries the first connection and then reconnects forever (DESIGN.md rule 9);
:func:`request` sends one request to a service endpoint (over the connection's
:class:`~shared.request_mux.RequestMux`) and turns the NATS service API error
headers, ``NoRespondersError`` and timeouts into :class:`~shared.errors.ProtocolError`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any
from urllib.parse import urlsplit

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from shared.config import NatsLogin
from shared.errors import ErrorCode, ProtocolError, decode_service_error
from shared.request_mux import mux_for

logger = logging.getLogger(__name__)


async def connect(
    servers: list[str], *, name: str, login: NatsLogin | None = None, connect_timeout: float = 2.0
) -> Client:
    """Connect to NATS, retrying the first connect forever, then reconnecting forever.

    Args:
        servers: NATS URLs (``nats://host:port``; ``login`` wins over credentials in a URL).
        name: client name shown by ``nats server report connections``.
        login: the tier's NATS user; its inbox prefix is used for every reply subject.

    Returns:
        A connected :class:`nats.aio.client.Client`; callers ``drain()`` it on shutdown.
    """

    async def error_cb(error: Exception) -> None:
        logger.warning("nats error name=%s error=%r", name, error)

    async def disconnected_cb() -> None:
        logger.warning("nats disconnected name=%s", name)

    async def reconnected_cb() -> None:
        logger.info("nats reconnected name=%s", name)

    async def closed_cb() -> None:
        logger.info("nats connection closed name=%s", name)

    login = login or NatsLogin()
    if login.user is None and servers:
        # Credentials in the URL (nats://user:pass@host): reply inboxes must still be the user's.
        login = NatsLogin(user=urlsplit(servers[0]).username)
    credentials: dict[str, Any] = {}
    if login.user and login.password is not None:
        credentials = {"user": login.user, "password": login.password}
    delay = 0.1
    while True:
        try:
            return await nats.connect(
                servers=servers,
                name=name,
                inbox_prefix=login.inbox_prefix,
                **credentials,
                connect_timeout=connect_timeout,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                allow_reconnect=True,
                ping_interval=10,
                max_outstanding_pings=3,
                error_cb=error_cb,
                disconnected_cb=disconnected_cb,
                reconnected_cb=reconnected_cb,
                closed_cb=closed_cb,
            )
        except (TimeoutError, OSError, NatsTimeoutError, nats.errors.NoServersError) as error:
            logger.warning("nats connect failed name=%s error=%r; retrying in %.1fs", name, error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


def check_reply(msg: Msg) -> bytes:
    """Return the reply's body, or raise the :class:`ProtocolError` its headers carry."""
    error = decode_service_error(msg.headers, msg.data)
    if error is not None:
        raise error
    return msg.data


async def request(
    nc: Client,
    subject: str,
    payload: bytes,
    *,
    timeout: float,
    headers: dict[str, str] | None = None,
) -> bytes:
    """Send ``payload`` to a service endpoint and return the reply body.

    Raises:
        ProtocolError: as :func:`request_msg`.
    """
    return (await request_msg(nc, subject, payload, timeout=timeout, headers=headers)).data


async def request_msg(
    nc: Client,
    subject: str,
    payload: bytes,
    *,
    timeout: float,
    headers: dict[str, str] | None = None,
) -> Msg:
    """Send ``payload`` to a service endpoint and return the reply message (body and headers).

    Raises:
        ProtocolError: the service's own error; ``unavailable`` at once while the connection
            is down (reconnecting), or when nobody answers in ``timeout`` seconds or no replica
            is subscribed (STYLE.md: map ``NoRespondersError``
            and timeouts to ``unavailable``).
    """
    if not nc.is_connected:
        # Disconnected or reconnecting: answer now instead of holding the caller for the whole
        # timeout; "unavailable" tells clients to retry (PROTOCOL.md section 7).
        raise ProtocolError(ErrorCode.UNAVAILABLE)
    try:
        msg = await mux_for(nc).request(subject, payload, timeout=timeout, headers=headers)
    except (TimeoutError, NoRespondersError, NatsTimeoutError) as error:
        raise ProtocolError(ErrorCode.UNAVAILABLE) from error
    except nats.errors.Error as error:  # closed, draining, reconnect buffer full
        raise ProtocolError(ErrorCode.UNAVAILABLE) from error
    check_reply(msg)
    return msg


async def request_json(
    nc: Client,
    subject: str,
    body: dict[str, Any],
    *,
    timeout: float,
) -> Any:
    """:func:`request` with a JSON body and a JSON reply (``None`` for an empty reply)."""
    data = await request(nc, subject, json.dumps(body, separators=(",", ":")).encode(), timeout=timeout)
    return json.loads(data) if data else None
