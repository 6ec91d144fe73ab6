"""The only door to firebase-admin internals: what the push channel needs and the library keeps private.

firebase-admin is the authority on two things it offers no public call for:

- the FCM v1 JSON of a ``messaging.Message`` (its encoder validates and shapes every field), and
- turning an FCM error response into its exception classes (``UnregisteredError``,
  ``QuotaExceededError``, ...), which it only does inside its own HTTP clients.

Both are reached here and nowhere else; ``tests/test_channels_internals.py`` proves the encoding
equals the library's own and fails loudly (naming the missing name) when a release moves one. The
version is bounded in ``pyproject.toml`` for the same reason.
"""

from __future__ import annotations

from typing import Any

import httpx
from firebase_admin import _utils, exceptions, messaging

#: The private names used below, for the test that checks they are still there.
PRIVATE_NAMES = (
    ("firebase_admin.messaging", "_MessagingService.encode_message"),
    ("firebase_admin.messaging", "_MessagingService._build_fcm_error_httpx"),
    ("firebase_admin._utils", "handle_platform_error_from_httpx"),
)


def encode_message(message: messaging.Message) -> dict[str, Any]:
    """The ``message`` object of an FCM v1 ``messages:send`` body, as firebase-admin encodes it."""
    encoded: dict[str, Any] = messaging._MessagingService.encode_message(message)
    return encoded


def fcm_error(url: str, status: int, headers: list[tuple[str, str]], content: bytes) -> exceptions.FirebaseError:
    """The exception firebase-admin raises for this FCM response (its own parser and classes)."""
    request = httpx.Request("POST", url)
    response = httpx.Response(status, headers=headers, content=content, request=request)
    error = httpx.HTTPStatusError(f"FCM answered {status}", request=request, response=response)
    mapped: exceptions.FirebaseError = _utils.handle_platform_error_from_httpx(
        error, messaging._MessagingService._build_fcm_error_httpx)
    return mapped
