"""Twilio's REST API through the ``twilio`` library, pointed wherever the settings say.

The library builds absolute URLs on ``https://api.twilio.com`` (its ``region``/``edge`` options only
change the host name within twilio.com), so a sandbox or a test double is reached through the library's
own extension point: a custom ``http_client`` that rewrites the scheme and host to ``TWILIO_API_BASE``.

The library logs every request's parameters (``To``, ``From``, ``Body``) at INFO on the client's logger;
ours is a silent logger, so a real number or a body never reaches a log handler.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from dispatcher.config import Settings
from dispatcher.errors import ConfigurationError

#: Seconds for one call to Twilio (connect and read).
TIMEOUT_SECONDS = 10.0
#: Twilio's error codes that will never succeed for this recipient: unsubscribed (STOP), not a mobile
#: number, invalid number, unreachable, blocked.
PERMANENT_CODES = frozenset({21610, 21614, 21211, 21612, 21408, 30004, 30005, 30006})

_silent = logging.getLogger("dispatcher.relay.twilio_http")
_silent.setLevel(logging.CRITICAL + 10)
_silent.propagate = False


class BaseUrlHttpClient(TwilioHttpClient):  # type: ignore[misc]
    """twilio's requests-based client with every twilio.com URL sent to ``base_url`` instead."""

    def __init__(self, base_url: str, timeout: float = TIMEOUT_SECONDS) -> None:
        super().__init__(pool_connections=True, logger=_silent, timeout=timeout)
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigurationError("TWILIO_API_BASE must be an http(s) URL")
        self._scheme, self._netloc, self._prefix = parts.scheme, parts.netloc, parts.path.rstrip("/")

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        parts = urlsplit(url)
        if parts.netloc.endswith("twilio.com"):
            url = urlunsplit((self._scheme, self._netloc, self._prefix + parts.path, parts.query, ""))
        return super().request(method, url, *args, **kwargs)


@dataclass(frozen=True)
class SendRefused:
    """Twilio refused a text: ``permanent`` ones are dropped, the others retried."""

    status: int
    code: int | None
    permanent: bool


_clients: dict[tuple[str, str, str], Client] = {}
_clients_lock = threading.Lock()


def twilio_client(settings: Settings) -> Client:
    """One client per account and endpoint per process (keep-alive connections are reused)."""
    if not settings.twilio_account_sid or not settings.twilio_auth_token:
        raise ConfigurationError("TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN must be set for the relay")
    key = (settings.twilio_account_sid, settings.twilio_auth_token, settings.twilio_api_base)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = Client(settings.twilio_account_sid, settings.twilio_auth_token,
                            http_client=BaseUrlHttpClient(settings.twilio_api_base))
            _clients[key] = client
        return client


def send_text(settings: Settings, to: str, from_: str, body: str) -> str | SendRefused:
    """Send one text; the message SID, or why Twilio refused it. Connection errors propagate (retried)."""
    try:
        message = twilio_client(settings).messages.create(to=to, from_=from_, body=body)
    except TwilioRestException as error:
        permanent = error.code in PERMANENT_CODES or error.status in (400, 404)
        return SendRefused(error.status, error.code, permanent)
    return str(message.sid)
