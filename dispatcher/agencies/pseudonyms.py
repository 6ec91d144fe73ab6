""""Neighbor #" pseudonyms: how an agency tells one sharing resident from another, and nothing more.

``Neighbor #<key id>-<10 digits>``, the digits from HMAC-SHA256(key, agency id, resident id):

- **stable per agency**: the same resident is the same neighbour across that agency's requests;
- **unlinkable across agencies**: the agency id is inside the hash, so two agencies' numbers for one
  resident share nothing;
- **not reversible without the key**: without it the number is a keyed hash of two ids, and guessing
  ids needs the key for every guess.

Key rotation: keys are configured as ``PSEUDONYM_KEYS=id:secret,id:secret`` (current first). The key id
is part of the pseudonym, and the first share of a resident with an agency records the key id it was
shown under (``request_responses.key_id``); while that key is still configured, later shares keep it, so
rotation never renumbers a neighbour an agency already knows. New (agency, resident) pairs use the
current key. Removing an old key from the list retires it: the neighbours it numbered get new numbers
under the current key (do that when a key may have leaked). With the setting unset, a random key is kept
in ``home`` (``pseudonym.key``): good for one machine, so production sets the keys.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from pathlib import Path

from dispatcher.config import Settings
from dispatcher.errors import ConfigurationError
from dispatcher.keyfile import secret_in_file

#: Prefix residents and agencies read.
PREFIX = "Neighbor #"
#: Digits of the number: 10^10 per agency, so two sharing residents collide with negligible odds.
DIGITS = 10
#: A configured secret shorter than this is refused (it would be guessable).
MIN_SECRET_CHARS = 32
#: File under ``home`` with the generated key when ``PSEUDONYM_KEYS`` is unset.
KEY_FILE = "pseudonym.key"
#: Id of the generated key.
GENERATED_KEY_ID = "k0"
_KEY_ID = re.compile(r"^[a-z0-9]{1,8}$")


@dataclass(frozen=True)
class PseudonymKey:
    """One HMAC key and the short id shown in its pseudonyms."""

    id: str
    secret: bytes


def pseudonym_keys(settings: Settings) -> list[PseudonymKey]:
    """The configured keys, current first (or the generated one)."""
    if not settings.pseudonym_keys:
        return [PseudonymKey(GENERATED_KEY_ID, secret_in_file(Path(settings.home) / KEY_FILE))]
    keys: list[PseudonymKey] = []
    for item in settings.pseudonym_keys.split(","):
        key_id, sep, secret = item.strip().partition(":")
        if not sep or not _KEY_ID.match(key_id):
            raise ConfigurationError("PSEUDONYM_KEYS must be id:secret pairs separated by commas, "
                                     "ids of 1-8 lower-case letters or digits")
        if len(secret) < MIN_SECRET_CHARS:
            raise ConfigurationError(f"PSEUDONYM_KEYS: the secret of key {key_id!r} must be at least "
                                     f"{MIN_SECRET_CHARS} characters")
        if any(k.id == key_id for k in keys):
            raise ConfigurationError(f"PSEUDONYM_KEYS: key id {key_id!r} appears twice")
        keys.append(PseudonymKey(key_id, secret.encode()))
    return keys


def pseudonym(key: PseudonymKey, agency_id: str, resident_id: int) -> str:
    """The pseudonym of ``resident_id`` as ``agency_id`` sees it under ``key``."""
    message = f"{agency_id}\x1f{int(resident_id)}".encode()
    digest = hmac.new(key.secret, message, hashlib.sha256).digest()
    number = int.from_bytes(digest[:8], "big") % 10**DIGITS
    return f"{PREFIX}{key.id}-{number:0{DIGITS}d}"


def key_for(keys: list[PseudonymKey], recorded_key_id: str | None) -> PseudonymKey:
    """The key to number a neighbour with: the one first used for them if still configured, else current."""
    for key in keys:
        if key.id == recorded_key_id:
            return key
    return keys[0]
