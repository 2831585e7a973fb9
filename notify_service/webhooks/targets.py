"""Where a webhook may POST: SSRF protection (OWASP "Server-Side Request Forgery Prevention
Cheat Sheet"), PROTOCOL.md section 12.

A URL must be ``http`` or ``https`` with a host and no credentials. Its host is resolved, and
*every* address it resolves to must be a public one: loopback, private (RFC 1918, RFC 4193),
link-local (cloud metadata at 169.254.169.254 included), multicast, reserved, unspecified, and
shared (RFC 6598) addresses are refused, IPv4-mapped IPv6 forms included, unless the host is
listed in ``NATTER_WEBHOOK_ALLOWED_HOSTS``. The check runs at registration (400) and again at
each delivery, and the delivery connects to the address that passed the check (the URL's host
still goes in ``Host`` and in TLS SNI), so a DNS answer that changes in between (rebinding)
cannot redirect it. Redirects are not followed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from shared.errors import ErrorCode, ProtocolError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: RFC 6598 shared address space (carrier-grade NAT), not covered by ``is_private``.
_SHARED = ipaddress.ip_network("100.64.0.0/10")


@dataclass(frozen=True, slots=True)
class Target:
    """A checked destination: the URL to request (its host replaced by ``address``), the
    ``Host`` header and TLS server name of the original URL, and the ``address`` that passed."""

    url: str
    host_header: str
    server_name: str
    address: str


def parse_allowed(value: str) -> frozenset[str]:
    """``NATTER_WEBHOOK_ALLOWED_HOSTS`` (comma-separated host names or addresses) as a set of
    lowercase hosts."""
    return frozenset(part.strip().lower().strip("[]") for part in value.split(",") if part.strip())


def is_public(address: IPAddress) -> bool:
    """True for a globally routable unicast address (module docstring lists what is not)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if isinstance(address, ipaddress.IPv4Address) and address in _SHARED:
        return False
    return not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )


def split_url(url: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of a webhook URL.

    Raises:
        ProtocolError: ``invalid_url`` for anything but an absolute http(s) URL with a host
            and without user information.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise ProtocolError(ErrorCode.INVALID_URL, f"url: {error}") from None
    if parts.scheme not in ("http", "https"):
        raise ProtocolError(ErrorCode.INVALID_URL, "url: must be http or https")
    if not parts.hostname:
        raise ProtocolError(ErrorCode.INVALID_URL, "url: has no host")
    if parts.username is not None or parts.password is not None:
        raise ProtocolError(ErrorCode.INVALID_URL, "url: must not carry credentials")
    return parts.scheme, parts.hostname.lower(), port or (443 if parts.scheme == "https" else 80)


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (A and AAAA), or the literal address it is.

    Raises:
        ProtocolError: ``invalid_url`` when it does not resolve.
    """
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as error:
        raise ProtocolError(ErrorCode.INVALID_URL, f"url: {host} does not resolve ({error})") from None
    addresses: list[IPAddress] = []
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def first_allowed(host: str, addresses: Iterable[IPAddress], allowed: frozenset[str]) -> IPAddress:
    """The address to connect to: the first one when ``host`` (or the address itself) is
    allowed; otherwise the first one, provided every address is public.

    Raises:
        ProtocolError: ``invalid_url`` naming the refused address.
    """
    found = list(addresses)
    if not found:
        raise ProtocolError(ErrorCode.INVALID_URL, f"url: {host} has no address")
    if host in allowed:
        return found[0]
    for address in found:
        if str(address) in allowed:
            continue
        if not is_public(address):
            raise ProtocolError(
                ErrorCode.INVALID_URL,
                f"url: {host} resolves to {address}, a non-public address "
                "(list the host in NATTER_WEBHOOK_ALLOWED_HOSTS to allow it)",
            )
    return found[0]


async def check(url: str, allowed: frozenset[str]) -> Target:
    """Validate ``url`` and pin it to an address that passed the SSRF rules.

    Raises:
        ProtocolError: ``invalid_url`` (module docstring).
    """
    scheme, host, port = split_url(url)
    address = first_allowed(host, await resolve(host, port), allowed)
    parts = urlsplit(url)
    literal = f"[{address}]" if address.version == 6 else str(address)
    pinned = urlunsplit((scheme, f"{literal}:{port}", parts.path or "/", parts.query, ""))
    return Target(
        url=pinned,
        host_header=host if parts.port is None else f"{host}:{port}",
        server_name=host,
        address=str(address),
    )
