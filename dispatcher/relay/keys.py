"""The relay's keys: Fernet keys for real numbers at rest (with rotation) and the lookup HMAC key.

Configured in the settings (``RELAY_NUMBER_KEYS``, newest first; ``RELAY_LOOKUP_KEY``). On a developer
machine without them a random key is generated once and kept under ``home`` (mode 0600), as the
unsubscribe secret is. The lookup key cannot rotate without re-hashing every number, so it has one value.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
from functools import lru_cache
from pathlib import Path

from cryptography.fernet import Fernet, MultiFernet

from dispatcher.config import Settings
from dispatcher.relay.errors import InvalidRelayKey

NUMBER_KEY_FILE = "relay_number_key"
LOOKUP_KEY_FILE = "relay_lookup_key"
#: A configured lookup key shorter than this is refused (it would be guessable).
MIN_LOOKUP_KEY_CHARS = 32


def _kept_in_home(home: Path, name: str, make: str) -> str:
    path = Path(home) / name
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{name}.{secrets.token_hex(4)}.tmp")
        tmp.write_text(make)
        tmp.chmod(0o600)
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)  # first writer wins: concurrent processes agree on one key
        tmp.unlink(missing_ok=True)
    return path.read_text().strip()


def number_fernet(settings: Settings) -> MultiFernet:
    """Encrypts with the newest key, decrypts with any configured one."""
    return _number_fernet(settings.relay_number_keys, settings.home)


@lru_cache(maxsize=8)
def _number_fernet(configured: str | None, home: Path) -> MultiFernet:
    raw = configured or _kept_in_home(home, NUMBER_KEY_FILE, Fernet.generate_key().decode())
    keys = [part.strip() for part in raw.split(",") if part.strip()]
    if not keys:
        raise InvalidRelayKey("RELAY_NUMBER_KEYS holds no key")
    try:
        return MultiFernet([Fernet(key.encode()) for key in keys])
    except ValueError:
        raise InvalidRelayKey("RELAY_NUMBER_KEYS must be Fernet keys (32 url-safe base64 bytes each)") from None


def lookup_key(settings: Settings) -> bytes:
    """The HMAC key that turns a number into its lookup hash."""
    return _lookup_key(settings.relay_lookup_key, settings.home)


@lru_cache(maxsize=8)
def _lookup_key(configured: str | None, home: Path) -> bytes:
    if configured:
        if len(configured) < MIN_LOOKUP_KEY_CHARS:
            raise InvalidRelayKey(f"RELAY_LOOKUP_KEY must be at least {MIN_LOOKUP_KEY_CHARS} characters")
        return configured.encode()
    made = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    return _kept_in_home(home, LOOKUP_KEY_FILE, made).encode()
