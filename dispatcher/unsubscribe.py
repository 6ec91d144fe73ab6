"""Signed one-click unsubscribe links (RFC 8058), and the endpoint that applies them.

A link that only named a resident id could be replayed for every id by counting, switching other
residents' email off. So each link carries an expiry and an HMAC-SHA256 over (resident, request,
expiry) with a server secret:

    {UNSUBSCRIBE_URL}?resident=31&request=req-1&expires=1767225600&sig=<base64url HMAC>

Links are signed with ``UNSUBSCRIBE_SECRET`` and verified (constant-time) against it and against
``UNSUBSCRIBE_PREVIOUS_SECRET``, so the secret can be rotated without breaking the links already in
inboxes; they expire after ``UNSUBSCRIBE_LINK_DAYS``. Without a configured secret a random one is kept
in ``DISPATCHER_HOME/unsubscribe.key`` (enough for one host; several hosts must share the setting).

The endpoint (mounted by the webhook process, ``dispatcher webhooks``, at the path of
``UNSUBSCRIBE_URL``) applies a POST whose body is ``List-Unsubscribe=One-Click``, as mail clients send
it: the resident's email for Community Requests is switched off through the resident index's own
update function, and doing it twice changes nothing. A GET (a link scanner, or a person opening the
link) changes nothing: it answers a page with a button that sends that POST.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import hmac
import html
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

from dispatcher.asgi import Receive, Scope, Send, read_body, respond
from dispatcher.config import Settings, get_settings
from dispatcher.contract import is_request_id
from dispatcher.db.types import Conn
from dispatcher.errors import ConfigurationError, InvalidUnsubscribeLink
from dispatcher.keyfile import secret_in_file

logger = logging.getLogger(__name__)

#: What a one-click unsubscribe POST carries (RFC 8058 section 3.1), and the header that announces it.
ONE_CLICK_BODY = "List-Unsubscribe=One-Click"
#: File under ``home`` holding the generated secret when ``UNSUBSCRIBE_SECRET`` is not set.
KEY_FILE = "unsubscribe.key"
#: A configured secret shorter than this is refused (it would be guessable).
MIN_SECRET_CHARS = 32
#: Largest one-click POST body read; the real one is 25 bytes (a multipart one a few hundred).
MAX_BODY_BYTES = 4096
_DIGITS = re.compile(r"^[0-9]{1,19}$")
_SIGNATURE = re.compile(r"^[A-Za-z0-9_-]{43}$")



def signing_keys(settings: Settings) -> list[bytes]:
    """The current key first, then the previous one (still accepted, never used to sign)."""
    keys = [_current_key(settings)]
    if settings.unsubscribe_previous_secret:
        keys.append(_checked(settings.unsubscribe_previous_secret, "UNSUBSCRIBE_PREVIOUS_SECRET"))
    return keys


def _checked(secret: str, name: str) -> bytes:
    if len(secret) < MIN_SECRET_CHARS:
        raise ConfigurationError(f"{name} must be at least {MIN_SECRET_CHARS} characters")
    return secret.encode()


def _current_key(settings: Settings) -> bytes:
    if settings.unsubscribe_secret:
        return _checked(settings.unsubscribe_secret, "UNSUBSCRIBE_SECRET")
    return secret_in_file(Path(settings.home) / KEY_FILE)


def sign(key: bytes, resident_id: int, request_id: str, expires: int) -> str:
    """The link's signature: HMAC-SHA256 over the three values, base64url without padding."""
    message = f"unsubscribe\x00{resident_id}\x00{request_id}\x00{expires}".encode()
    return base64.urlsafe_b64encode(hmac.digest(key, message, "sha256")).rstrip(b"=").decode()


#: Standard base64's two symbols as base64url spells them (RFC 4648 section 5).
_URL_SAFE = bytes.maketrans(b"+/", b"-_")
#: SHA-256's block size, over which HMAC pads its key (RFC 2104).
_BLOCK = 64


def sign_many(key: bytes, resident_ids: Sequence[int], request_id: str, expires: int) -> list[str]:
    """:func:`sign` for many residents of one request, character for character.

    An email batch signs a thousand links a call, so this is HMAC (RFC 2104) from the two SHA-256
    states its key gives, each copied per message: a third of the CPU of ``hmac.digest``, which
    builds both states again every call (about 1 against 3 µs a link). The test holds it equal to
    :func:`sign`.
    """
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    inner = hashlib.sha256(bytes(byte ^ 0x36 for byte in key.ljust(_BLOCK, b"\0")))
    outer = hashlib.sha256(bytes(byte ^ 0x5C for byte in key.ljust(_BLOCK, b"\0")))
    before = b"unsubscribe\x00"
    after = f"\x00{request_id}\x00{expires}".encode()
    encode = binascii.b2a_base64
    signatures = []
    for rid in resident_ids:
        message = inner.copy()
        message.update(b"%s%d%s" % (before, rid, after))
        mac = outer.copy()
        mac.update(message.digest())
        signatures.append(encode(mac.digest(), newline=False).translate(_URL_SAFE)[:43].decode())
    return signatures


@dataclass(frozen=True)
class UnsubscribeLinks:
    """The links of one request's emails, all with the same expiry: ``head + resident id + tail(id)``."""

    base_url: str
    request_id: str
    expires: int
    key: bytes

    @property
    def head(self) -> str:
        return f"{self.base_url}?resident="

    @functools.cached_property
    def _before_signature(self) -> str:
        # The same for every resident of the request: encoded once, not once per email.
        return f"&{urlencode({'request': self.request_id})}&expires={self.expires}&sig="

    def tail(self, resident_id: int) -> str:
        """Everything after the resident id; URL-safe characters only (no JSON escaping needed)."""
        return self._before_signature + sign(self.key, resident_id, self.request_id, self.expires)

    def tails(self, resident_ids: Sequence[int]) -> list[str]:
        """:meth:`tail` of every resident, signed in one pass (:func:`sign_many`)."""
        before = self._before_signature
        return [before + signature
                for signature in sign_many(self.key, resident_ids, self.request_id, self.expires)]

    def link(self, resident_id: int) -> str:
        return f"{self.head}{resident_id}{self.tail(resident_id)}"


def unsubscribe_links(settings: Settings, request_id: str, *, now: float | None = None) -> UnsubscribeLinks:
    """Links for ``request_id``'s emails, valid for ``UNSUBSCRIBE_LINK_DAYS`` from ``now``."""
    expires = int(time.time() if now is None else now) + settings.unsubscribe_link_days * 86_400
    return UnsubscribeLinks(settings.unsubscribe_url, request_id, expires, _current_key(settings))


def unsubscribe_link(settings: Settings, resident_id: int, request_id: str, *, now: float | None = None) -> str:
    """One resident's signed link."""
    return unsubscribe_links(settings, request_id, now=now).link(resident_id)


def verify_link(settings: Settings, params: Mapping[str, str], *, now: float | None = None) -> int:
    """The resident id a link's query parameters were signed for.

    Raises :class:`InvalidUnsubscribeLink` when a parameter is missing or malformed, the signature
    matches no key, or the link has expired.
    """
    resident, request, expires, signature = (params.get(name, "") for name in
                                             ("resident", "request", "expires", "sig"))
    if not (_DIGITS.match(resident) and _DIGITS.match(expires) and is_request_id(request)
            and _SIGNATURE.match(signature)):
        raise InvalidUnsubscribeLink("the unsubscribe link is incomplete or malformed")
    resident_id, expiry = int(resident), int(expires)
    given = signature.encode()
    # Every key is tried (no early exit), so the time taken does not say which key nearly matched.
    matches = [hmac.compare_digest(sign(key, resident_id, request, expiry).encode(), given)
               for key in signing_keys(settings)]
    if not any(matches):
        raise InvalidUnsubscribeLink("the unsubscribe link's signature is not valid")
    if expiry < (time.time() if now is None else now):
        raise InvalidUnsubscribeLink("the unsubscribe link has expired", status=410)
    return resident_id


def apply_unsubscribe(conn: Conn, resident_id: int) -> bool:
    """Switch the resident's email for Community Requests off; ``False`` if it was off (or unknown).

    The change goes through :func:`dispatcher.preferences.updates.change_settings` at a version just
    above the newest the index holds for the resident, so it wins over what is known and the resident's
    next change in the app (a newer version) can switch email on again.
    """
    from dispatcher.preferences.updates import change_settings

    row = conn.execute(
        "SELECT GREATEST(r.version, r.email_version, COALESCE(s.version, 0)), COALESCE(s.email_enabled, TRUE)"
        " FROM residents r LEFT JOIN resident_settings s ON s.resident_id = r.id WHERE r.id = %s",
        (resident_id,),
    ).fetchone()
    if row is None or not row[1]:
        return False
    return change_settings(conn, resident_id, version=int(str(row[0])) + 1, email=False)


def apply_with_pool(resident_id: int) -> bool:
    """:func:`apply_unsubscribe` on a pooled connection (what the endpoint runs)."""
    from dispatcher.db import get_pool

    with get_pool().connection() as conn:
        return apply_unsubscribe(conn, resident_id)


class UnsubscribeApp:
    """The ASGI endpoint of the links; ``apply`` runs in a thread because it talks to PostgreSQL."""

    def __init__(self, settings: Settings | None = None, apply: Callable[[int], bool] = apply_with_pool,
                 *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings or get_settings()
        self.path = urlsplit(self.settings.unsubscribe_url).path or "/unsubscribe"
        self.apply = apply
        self.clock = clock
        signing_keys(self.settings)  # a malformed secret stops the process at start, not at the first click

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in ("GET", "HEAD", "POST"):
            await _respond(send, 405, "use POST with List-Unsubscribe=One-Click")
            return
        try:
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"), max_num_fields=8)
            params = {name: values[0] for name, values in query.items() if len(values) == 1}
            resident_id = verify_link(self.settings, params, now=self.clock())
        except ValueError:  # more query fields than a link has
            await _respond(send, 403, "the unsubscribe link is incomplete or malformed")
            return
        except InvalidUnsubscribeLink as refused:
            logger.warning("unsubscribe refused: %s", refused)
            await _respond(send, refused.status, str(refused))
            return
        if scope["method"] != "POST":  # opening the link changes nothing: scanners open links too
            await _respond(send, 200, _CONFIRM_PAGE, content_type=b"text/html; charset=utf-8")
            return
        body = await read_body(receive, MAX_BODY_BYTES)
        if not _is_one_click(body, _content_type(scope)):
            await _respond(send, 400, f"the body must be {ONE_CLICK_BODY}")
            return
        try:
            changed = await asyncio.to_thread(self.apply, resident_id)
        except Exception as error:  # answer 500 so the client may retry; log the kind of failure only
            logger.error("unsubscribe could not be applied: %s", type(error).__name__)
            await _respond(send, 500, "try again later")
            return
        logger.info("unsubscribe applied", extra={"resident_id": resident_id, "changed": changed})
        await _respond(send, 200, "unsubscribed")


_CONFIRM_PAGE = f"""<!doctype html>
<html><body style="font-family:Arial,Helvetica,sans-serif">
<p>Stop receiving Community Requests by email?</p>
<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">
<button type="submit">Unsubscribe</button></form>
<p>{html.escape("You can switch them on again in the app's settings.")}</p>
</body></html>"""


def _content_type(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-type":
            return str(value.decode("latin-1")).lower()
    return ""


def _is_one_click(body: bytes | None, content_type: str) -> bool:
    if body is None:
        return False
    if content_type.startswith("multipart/form-data"):
        return b'name="List-Unsubscribe"' in body and b"One-Click" in body
    try:
        fields = parse_qs(body.decode("latin-1"), max_num_fields=8)
    except ValueError:
        return False
    return fields.get("List-Unsubscribe") == ["One-Click"]


async def _respond(send: Send, status: int, text: str, content_type: bytes = b"text/plain; charset=utf-8") -> None:
    await respond(send, status, text.encode(), content_type)
