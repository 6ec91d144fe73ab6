"""Bearer-token authentication for the one caller, the main application.

The token is compared in constant time (:func:`hmac.compare_digest`), so response timing says nothing
about how much of a guess was right. Without a configured token the service does not start, unless it
is explicitly in insecure development mode.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException

from dispatcher.errors import ConfigurationError

#: Shortest token accepted: a guessable token is no authentication.
MIN_TOKEN_LENGTH = 16

_CHALLENGE = {"WWW-Authenticate": "Bearer"}
#: Reads the ``Authorization`` header and documents the scheme in the OpenAPI document.
_BEARER = HTTPBearer(auto_error=False, description="The token configured as API_TOKEN.")


def check_token_setting(token: str | None, *, insecure_dev: bool) -> None:
    """Refuse to serve without a usable token, unless in insecure development mode."""
    if token is None:
        if not insecure_dev:
            raise ConfigurationError("API_TOKEN is not set; set it, or API_INSECURE_DEV=true on a "
                                     "developer's machine")
        return
    if len(token) < MIN_TOKEN_LENGTH or not token.isascii() or not token.isprintable() or " " in token:
        raise ConfigurationError(f"API_TOKEN must be at least {MIN_TOKEN_LENGTH} printable ASCII characters "
                                 "without spaces")


def bearer_token_check(
    token: str | None,
) -> Callable[[HTTPAuthorizationCredentials | None], Coroutine[Any, Any, None]]:
    """A dependency that lets a request through only with ``Authorization: Bearer <token>``
    (every request when ``token`` is ``None``: insecure development mode). It is a coroutine because
    it never waits: a plain function would cost a hop to the thread pool on every call."""
    expected = None if token is None else token.encode()

    async def require_token(credentials: HTTPAuthorizationCredentials | None = Depends(_BEARER)) -> None:
        if expected is None:
            return
        if credentials is None or not hmac.compare_digest(credentials.credentials.encode(), expected):
            raise HTTPException(401, "a valid bearer token is required", headers=_CHALLENGE)

    return require_token
