"""The OAuth2 access token for FCM: google-auth refreshes it, off the event loop, once for every lane."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from google.auth import credentials as google_credentials
from google.auth.transport import requests as google_requests

#: Refresh the OAuth2 access token this long before it expires.
TOKEN_REFRESH_MARGIN = timedelta(minutes=5)


class AccessToken:
    """``Bearer <token>`` for the lanes of one loop; a refused or ageing token is exchanged once, not per lane."""

    def __init__(self, credential: google_credentials.Credentials) -> None:
        self.credential = credential
        self._lock: asyncio.Lock | None = None

    def _fresh(self) -> bool:
        expiry = self.credential.expiry  # naive UTC, as google-auth keeps it
        return bool(self.credential.token) and (
            expiry is None or expiry - TOKEN_REFRESH_MARGIN > datetime.now(UTC).replace(tzinfo=None)
        )

    def _value(self) -> str:
        return f"Bearer {self.credential.token}"

    async def authorization(self, rejected: str | None = None) -> str:
        """``Bearer <access token>``, refreshed through google-auth off the loop when close to expiry.

        ``rejected``: the value FCM just refused; it is refreshed unless another lane already did, so
        a revoked token costs one exchange, not one per connection. Call on the loop thread only.
        """
        if self._lock is None:
            self._lock = asyncio.Lock()

        def stale() -> bool:
            return self._value() == rejected or not self._fresh()

        if stale():
            async with self._lock:
                if stale():
                    loop = asyncio.get_running_loop()
                    await loop.run_in_executor(None, self.credential.refresh, google_requests.Request())
        return self._value()
