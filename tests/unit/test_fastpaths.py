"""shared.fastpaths: the one capability check per library that fences natter's fast paths."""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.server_protocol import STOCK_WS, protocol_class
from gateway.wire import RAW_SEND_KEY, direct_sink
from shared import fastpaths

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("NATTER_FAST_PATHS", raising=False)
    fastpaths.reset()
    yield
    monkeypatch.undo()
    fastpaths.reset()


def test_the_installed_versions_are_verified_and_on() -> None:
    assert fastpaths.nats_fast_path().enabled, fastpaths.nats_fast_path()
    assert fastpaths.uvicorn_fast_path().enabled, fastpaths.uvicorn_fast_path()
    line = fastpaths.describe(gateway=True)
    assert line.startswith("fast paths: nats-py 2.16.") and "uvicorn 0.5" in line and "off" not in line
    assert "uvicorn" not in fastpaths.describe(gateway=False)


def test_off_switches_every_fast_path_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NATTER_FAST_PATHS", "off")
    fastpaths.reset()
    for capability in (fastpaths.nats_fast_path(), fastpaths.uvicorn_fast_path()):
        assert not capability.enabled and capability.reason == "NATTER_FAST_PATHS=off"
    assert protocol_class() == STOCK_WS

    class FakeProtocol:  # would pass every attribute check of direct_sink
        transport = writable = close_sent = disconnected = conn = None

        def send(self) -> None: ...

    assert direct_sink({RAW_SEND_KEY: FakeProtocol().send}) is None


def test_a_bad_switch_value_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NATTER_FAST_PATHS", "fast")
    with pytest.raises(ValueError, match="NATTER_FAST_PATHS"):
        fastpaths.nats_fast_path()


@pytest.mark.parametrize(
    ("distribution", "version", "check"),
    [
        ("nats-py", "2.17.0", fastpaths.nats_fast_path),
        ("nats-py", "2.15.3", fastpaths.nats_fast_path),
        ("uvicorn", "0.56.0", fastpaths.uvicorn_fast_path),
        ("websockets", "18.0", fastpaths.uvicorn_fast_path),
    ],
)
def test_an_unverified_version_takes_the_public_api(
    monkeypatch: pytest.MonkeyPatch, distribution: str, version: str, check: object
) -> None:
    real = fastpaths._version
    monkeypatch.setattr(fastpaths, "_version", lambda name: version if name == distribution else real(name))
    capability = check()  # type: ignore[operator]
    assert not capability.enabled
    assert capability.reason.startswith(f"{distribution} {version} not verified")


def test_a_missing_internal_takes_the_public_api(monkeypatch: pytest.MonkeyPatch) -> None:
    from nats.aio.client import Client

    monkeypatch.delattr(Client, "_process_msg")
    capability = fastpaths.nats_fast_path()
    assert not capability.enabled and "_process_msg" in capability.reason


def test_an_unexpected_fallback_is_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="shared.fastpaths")
    fastpaths.log_active(gateway=True)
    assert caplog.records[-1].levelno == logging.INFO
    monkeypatch.setenv("NATTER_FAST_PATHS", "off")
    fastpaths.reset()
    fastpaths.log_active(gateway=True)
    assert caplog.records[-1].levelno == logging.INFO  # the operator asked for it
    monkeypatch.delenv("NATTER_FAST_PATHS")
    monkeypatch.setattr(fastpaths, "_version", lambda name: "99.0")
    fastpaths.reset()
    fastpaths.log_active(gateway=True)
    assert caplog.records[-1].levelno == logging.WARNING


def test_pyproject_pins_exactly_the_verified_ranges() -> None:
    """The pins and VERIFIED must move together: a pin wider than VERIFIED would install a
    version that silently runs slow; narrower, one that can never be used."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {
        "nats-py": "nats-py>=2.16,<2.17",
        "uvicorn": "uvicorn[standard]>=0.54,<0.56",
        "websockets": "websockets>=17.4,<17.5",
    }
    assert set(pins) == set(fastpaths.VERIFIED)
    for distribution, pin in pins.items():
        assert pin in deps, (distribution, deps)
        (low_major, low_minor), (high_major, high_minor) = fastpaths.VERIFIED[distribution]
        assert f">={low_major}.{low_minor}," in pin and f"<{high_major}.{high_minor + 1}" in pin
