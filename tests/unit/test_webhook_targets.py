"""notify_service.webhooks.targets: the SSRF rules for webhook URLs (OWASP SSRF cheat sheet)."""

from __future__ import annotations

import ipaddress

import pytest

from notify_service.webhooks.targets import check, first_allowed, is_public, parse_allowed, split_url
from shared.errors import ProtocolError


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
        "0.0.0.0", "224.0.0.1", "240.0.0.1", "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1",
        "::ffff:169.254.169.254", "::",
    ],
)  # fmt: skip
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))
    with pytest.raises(ProtocolError, match="non-public"):
        first_allowed("example.com", [ipaddress.ip_address(address)], frozenset())


@pytest.mark.parametrize("address", ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


def test_one_private_address_among_public_ones_is_enough_to_refuse() -> None:
    addresses = [ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("10.0.0.5")]
    with pytest.raises(ProtocolError):
        first_allowed("mixed.example", addresses, frozenset())


def test_allowed_hosts_lift_the_rule_for_those_hosts_only() -> None:
    allowed = parse_allowed(" Receiver.Internal ,127.0.0.1,[::1]")
    assert allowed == frozenset({"receiver.internal", "127.0.0.1", "::1"})
    loopback = [ipaddress.ip_address("127.0.0.1")]
    assert str(first_allowed("receiver.internal", [ipaddress.ip_address("10.0.0.1")], allowed)) == "10.0.0.1"
    assert str(first_allowed("localhost", loopback, allowed)) == "127.0.0.1"  # the address is listed
    with pytest.raises(ProtocolError):
        first_allowed("other.internal", [ipaddress.ip_address("10.0.0.1")], allowed)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/x",
        "http:///nohost",
        "https://user:pw@example.com/",
        "javascript:alert(1)",
        "http://[::1",
    ],
)
def test_bad_urls_are_validation_errors(url: str) -> None:
    with pytest.raises(ProtocolError) as refused:
        split_url(url)
    assert refused.value.code.value == "invalid_url"


async def test_check_pins_the_checked_address_and_keeps_the_host() -> None:
    target = await check("http://127.0.0.1:8080/hook?x=1", frozenset({"127.0.0.1"}))
    assert target.url == "http://127.0.0.1:8080/hook?x=1" and target.address == "127.0.0.1"
    assert target.host_header == "127.0.0.1:8080" and target.server_name == "127.0.0.1"
    with pytest.raises(ProtocolError):
        await check("http://127.0.0.1:8080/hook", frozenset())
    with pytest.raises(ProtocolError):
        await check("http://localhost/hook", frozenset())  # resolves to loopback
