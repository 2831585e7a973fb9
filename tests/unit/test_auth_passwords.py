"""auth_service.passwords: argon2id parameters, verification and rehash detection (no I/O)."""

from __future__ import annotations

from auth_service.config import Settings
from auth_service.passwords import PasswordService


def service(time_cost: int = 1, memory_cost_kib: int = 64) -> PasswordService:
    return PasswordService(time_cost=time_cost, memory_cost_kib=memory_cost_kib, parallelism=1, concurrency=2)


async def test_hash_is_argon2id_with_the_configured_parameters() -> None:
    password_hash = await service(time_cost=2, memory_cost_kib=128).hash("correct horse 1")
    assert password_hash.startswith("$argon2id$v=19$m=128,t=2,p=1$")


async def test_verify() -> None:
    passwords = service()
    password_hash = await passwords.hash("correct horse 1")
    assert await passwords.verify(password_hash, "correct horse 1") is True
    assert await passwords.verify(password_hash, "correct horse 2") is False
    assert await passwords.verify("not a hash", "correct horse 1") is False
    assert await passwords.verify_dummy("correct horse 1") is False


async def test_needs_rehash_when_parameters_change() -> None:
    old = await service(time_cost=1).hash("correct horse 1")
    assert service(time_cost=1).needs_rehash(old) is False
    assert service(time_cost=2).needs_rehash(old) is True
    assert service().needs_rehash("garbage") is True


def test_default_settings_are_the_owasp_minimum() -> None:
    settings = Settings()
    assert (settings.argon2_memory_cost_kib, settings.argon2_time_cost, settings.argon2_parallelism) == (
        19_456,
        2,
        1,
    )
