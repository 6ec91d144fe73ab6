"""Checks shared by the bulk import and the incremental updates of the resident index.

Each check returns a problem that names the field and never the value: problems end up in logs and
import reports, and a value may be personal data (an email, a token, a location).
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from zoneinfo import available_timezones

from dispatcher.preferences.quiet_hours import parse_clock

#: Largest resident id PostgreSQL's BIGINT holds.
MAX_RESIDENT_ID = 2**63 - 1
#: Longest email address a mailbox can have (RFC 5321 path limit).
MAX_EMAIL_LENGTH = 254
#: FCM registration tokens are about 160 characters; anything far longer is not a token.
MAX_TOKEN_LENGTH = 4096
#: Longest language tag kept (RFC 5646 recommends supporting at least 35 characters).
MAX_LOCALE_LENGTH = 35

# No whitespace, control characters (NUL included) or list separators in any part.
_EMAIL = re.compile(r"^[^@\s\\;,<>\"\x00-\x1f\x7f]+@[^@\s\\;,<>\"\x00-\x1f\x7f]+\.[^@\s\\;,<>\"\x00-\x1f\x7f]+\Z")
_LOCALE = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*$")
_TOKEN = re.compile(r"^[A-Za-z0-9_:.~+/=-]+$")  # FCM and APNs token alphabets
_TRUE = frozenset({"true", "t", "1", "yes", "y", "on"})
_FALSE = frozenset({"false", "f", "0", "no", "n", "off"})


@lru_cache(maxsize=1)
def known_time_zones() -> frozenset[str]:
    """IANA zone names this machine knows (plus UTC)."""
    return frozenset(available_timezones()) | {"UTC"}


def resident_id_problem(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return "id must be an integer"
    if not 0 < value <= MAX_RESIDENT_ID:
        return "id must be a positive 64-bit integer"
    return None


def location_problem(lat: object, lng: object) -> str | None:
    """A location must be finite WGS84 degrees: latitude in [-90, 90], longitude in [-180, 180]."""
    for name, value, bound in (("lat", lat, 90.0), ("lng", lng, 180.0)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{name} must be a number"
        if not (math.isfinite(value) and -bound <= value <= bound):
            return f"{name} must be between -{bound:g} and {bound:g}"
    return None


def email_problem(email: object) -> str | None:
    if not isinstance(email, str) or len(email) > MAX_EMAIL_LENGTH or not _EMAIL.match(email):
        return "email is not a valid address"
    return None


def locale_problem(locale: object) -> str | None:
    if isinstance(locale, str) and len(locale) <= MAX_LOCALE_LENGTH and _LOCALE.match(locale):
        return None
    return "locale is not a language tag like en-US"


def time_zone_problem(time_zone: object) -> str | None:
    if isinstance(time_zone, str) and time_zone in known_time_zones():
        return None
    return "time_zone is not an IANA time zone"


def token_problem(token: object) -> str | None:
    if (not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH or ";" in token
            or not _TOKEN.match(token)):
        return "push token is malformed"
    return None


def flag_problem(name: str, value: object, *, optional: bool = False) -> str | None:
    """A switch must be a JSON boolean: ``"no"`` is not false (and PostgreSQL would read "yes" as true)."""
    if isinstance(value, bool) or (optional and value is None):
        return None
    return f"{name} must be true or false"


def clock_problem(name: str, value: object, *, optional: bool = False) -> str | None:
    """A time of day on the resident's clock must be ``"HH:MM"`` (24-hour, zero-padded)."""
    if (optional and value is None) or (isinstance(value, str) and parse_clock(value) is not None):
        return None
    return f"{name} must be a time of day like 22:00"


def version_problem(version: object) -> str | None:
    if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version <= MAX_RESIDENT_ID:
        return "version must be a non-negative 64-bit integer"
    return None


def parse_bool(text: str) -> bool | None:
    """``true``/``false`` in the spellings spreadsheets produce; ``None`` when it is neither."""
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    return None
