"""NATS credentials of a local natter: one password per tier, kept in the data dir.

``natter up`` generates them on first start (``<data-dir>/nats-credentials.json``, mode 0600,
``{"<tier>": "<password>", ...}`` for every tier of :data:`shared.nats_auth.TIERS`), writes the
embedded nats-server's ``authorization`` block from them and gives each process its own tier's
login through ``NATTER_NATS_USER`` / ``NATTER_NATS_PASSWORD``. The operator's CLI actions
(``natter service-token``, ``natter provision``) find the operator's password in the same file:
:func:`operator_login` looks in ``--data-dir``, else ``$NATTER_DATA_DIR``, else ``./.natter``,
unless ``NATTER_NATS_USER`` / ``NATTER_NATS_PASSWORD`` are set.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit, urlunsplit

from shared.config import NatsLogin
from shared.nats_auth import OPERATOR, TIERS, authorization_block, new_password

CREDENTIALS_FILE: Final = "nats-credentials.json"
#: Where the operator's CLI looks for the data dir when ``--data-dir`` is not given.
DATA_DIR_ENV: Final = "NATTER_DATA_DIR"
DEFAULT_DATA_DIR: Final = Path(".natter")


class CredentialsError(Exception):
    """The credentials file is unreadable or incomplete (the text says which file)."""


@dataclass(frozen=True)
class NatsCredentials:
    """One password per NATS tier (:data:`shared.nats_auth.TIERS`)."""

    passwords: dict[str, str]

    @classmethod
    def generate(cls) -> NatsCredentials:
        """Fresh random passwords for every tier (:func:`shared.nats_auth.new_password`)."""
        return cls({tier: new_password() for tier in TIERS})

    @classmethod
    def load(cls, path: Path) -> NatsCredentials | None:
        """The credentials in ``path``; ``None`` when the file does not exist.

        Raises:
            CredentialsError: the file is not a JSON object with a password for every tier.
        """
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            raise CredentialsError(f"{path}: unreadable ({error})") from error
        if not isinstance(data, dict) or not all(isinstance(data.get(tier), str) for tier in TIERS):
            raise CredentialsError(f"{path}: expected a password for each of {', '.join(TIERS)}")
        return cls({tier: data[tier] for tier in TIERS})

    @classmethod
    def load_or_create(cls, data_dir: Path) -> NatsCredentials:
        """The data dir's credentials, generated and saved on first use."""
        path = data_dir / CREDENTIALS_FILE
        found = cls.load(path)
        if found is not None:
            return found
        fresh = cls.generate()
        fresh.save(path)
        return fresh

    def save(self, path: Path) -> None:
        """Write ``path`` atomically, readable by its owner only (0600)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(self.passwords, out, indent=2)
            out.write("\n")
        os.replace(tmp, path)

    def login(self, tier: str) -> NatsLogin:
        """The :class:`NatsLogin` of ``tier``."""
        return NatsLogin(user=tier, password=self.passwords[tier])

    def env(self, tier: str) -> dict[str, str]:
        """``NATTER_NATS_USER`` / ``NATTER_NATS_PASSWORD`` for a process of ``tier``."""
        return {"NATTER_NATS_USER": tier, "NATTER_NATS_PASSWORD": self.passwords[tier]}

    def url(self, tier: str, servers: str) -> str:
        """``servers`` (comma-separated ``nats://host:port``) with ``tier``'s login in each URL,
        for clients that take one URL (tests, probes, ``nats`` CLI)."""
        return ",".join(with_userinfo(url, tier, self.passwords[tier]) for url in servers.split(","))

    def authorization(self) -> str:
        """The nats-server ``authorization`` block with these passwords."""
        return authorization_block(self.passwords)


def with_userinfo(url: str, user: str, password: str) -> str:
    """``nats://host:port`` as ``nats://user:password@host:port`` (existing userinfo replaced)."""
    parts = urlsplit(url.strip() if "://" in url else f"nats://{url.strip()}")
    host = parts.hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:{password}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def data_dir_of(data_dir: Path | None) -> Path:
    """``data_dir``, else ``$NATTER_DATA_DIR``, else ``./.natter``."""
    if data_dir is not None:
        return data_dir
    return Path(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR)


def operator_login(data_dir: Path | None = None) -> tuple[NatsLogin, str]:
    """The operator's NATS login for CLI actions and where it came from (for messages).

    ``NATTER_NATS_USER`` with ``NATTER_NATS_PASSWORD`` win; otherwise the operator entry of the
    credentials file in :func:`data_dir_of`; otherwise anonymous (a NATS without authentication).

    Raises:
        CredentialsError: the credentials file exists but is unreadable.
    """
    user, password = os.environ.get("NATTER_NATS_USER"), os.environ.get("NATTER_NATS_PASSWORD")
    if user and password is not None:
        return NatsLogin(user=user, password=password), "NATTER_NATS_USER/NATTER_NATS_PASSWORD"
    path = data_dir_of(data_dir) / CREDENTIALS_FILE
    found = NatsCredentials.load(path)
    if found is not None:
        return found.login(OPERATOR), str(path)
    return NatsLogin(), f"no credentials ({path} does not exist)"
