"""Opaque page cursors: where the previous page ended, and the instant the first page was taken.

A cursor is the sort key of the last request shown (open or closed, published_at, id) plus the first
page's instant, so every page of one walk splits open from closed at the same moment and no request
is shown twice or skipped when its window closes mid-walk. It is base64url JSON: opaque to callers,
checked strictly when it comes back.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from dispatcher.contract import is_request_id
from dispatcher.feed.errors import InvalidCursor

#: Longest cursor accepted, in characters (a real one is well under half of it).
MAX_CURSOR_LENGTH = 512
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_VERSION = 1
_KEYS = frozenset({"v", "t", "o", "p", "i"})


@dataclass(frozen=True)
class PageKey:
    """The position after which the next page starts."""

    as_of: datetime
    open: bool
    published_at: datetime
    request_id: str


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _moment(micros: object) -> datetime:
    if not isinstance(micros, int) or isinstance(micros, bool) or not 0 <= micros < 2**62:
        raise InvalidCursor("cursor: not a cursor from this service")
    try:
        return _EPOCH + timedelta(microseconds=micros)
    except OverflowError:
        raise InvalidCursor("cursor: not a cursor from this service") from None


def encode_cursor(key: PageKey) -> str:
    """The opaque text of ``key``."""
    data = {"v": _VERSION, "t": _micros(key.as_of), "o": key.open, "p": _micros(key.published_at),
            "i": key.request_id}
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str) -> PageKey:
    """The key inside a cursor made by :func:`encode_cursor`; :class:`InvalidCursor` otherwise."""
    if not isinstance(text, str) or not 0 < len(text) <= MAX_CURSOR_LENGTH:
        raise InvalidCursor(f"cursor: must be 1 to {MAX_CURSOR_LENGTH} characters")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidCursor("cursor: not a cursor from this service") from None
    if (not isinstance(data, dict) or set(data) != _KEYS or data["v"] != _VERSION
            or not isinstance(data["o"], bool) or not is_request_id(data["i"])):
        raise InvalidCursor("cursor: not a cursor from this service")
    return PageKey(as_of=_moment(data["t"]), open=data["o"], published_at=_moment(data["p"]),
                   request_id=data["i"])
