"""Email through SendGrid v3 mail send, by the sendgrid library.

Residents of one request are grouped by what makes their email differ (camera or not, time zone);
each group is sent with one API call per at most 1,000 personalizations. A personalization carries
the address, a one-click unsubscribe header and custom args with ids only (request and resident), so
webhook events can be traced back to ledger rows without any personal data.

Errors: 429 hands the residents back to wait until the reset SendGrid gives (``X-RateLimit-Reset``)
and stops the batch's remaining calls; a 5xx or a network failure is tried again once inline after a
short backoff, then handed back; any other 4xx fails the chunk's rows with the status and the field
SendGrid names (never the message text, which may quote an address).

The body is JSON bytes sent through the sendgrid library's mail send client (its URL, headers and
error mapping, see ``EmailChannel.__init__``): the envelope is encoded by orjson, the thousand
personalizations are formatted from fragments encoded once per call (``mail_body_json``, checked
character for character against orjson's encoding of ``mail_body``). The stdlib encoder took five
times as long as orjson; formatting takes a quarter of building dicts and encoding them with orjson.
"""

from __future__ import annotations

import random
import time
import urllib.request
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import orjson
from python_http_client import exceptions as http_errors
from sendgrid import SendGridAPIClient

from dispatcher.channels.content import EmailContent, email_content, one_line
from dispatcher.channels.result import SendResult
from dispatcher.channels.retry_after import retry_after_seconds, seconds_until
from dispatcher.config import SENDGRID_MAX_PERSONALIZATIONS, Settings
from dispatcher.contract import CommunityRequest
from dispatcher.errors import ConfigurationError
from dispatcher.ledger import Outcome, Status


@dataclass(frozen=True)
class EmailTarget:
    """One resident's address and what shapes their email."""

    resident_id: int
    email: str
    time_zone: str
    has_camera: bool


class EmailResult(SendResult):
    """What happened to one email batch; ``accepted`` counts recipients."""


#: Seconds for one mail send call.
REQUEST_TIMEOUT_SECONDS = 30.0
#: Calls per chunk for 5xx and network failures (the first and one inline retry).
INLINE_ATTEMPTS = 2
#: Backoff before the inline retry (before jitter).
INLINE_BACKOFF_SECONDS = 0.5
#: Wait before trying a chunk again after a 5xx when SendGrid gives no hint.
TEMPORARY_DEFAULT_WAIT_SECONDS = 5.0
#: Wait after a 429 without rate-limit headers.
QUOTA_DEFAULT_WAIT_SECONDS = 60.0

_ONE_CLICK = "List-Unsubscribe=One-Click"
#: One immutable outcome shared by every accepted recipient.
_SENT = Outcome(Status.SENT)


def _json_inner(text: str) -> str:
    """``text`` JSON-encoded as orjson encodes it, without the surrounding quotes."""
    return orjson.dumps(text).decode()[1:-1]


def _error_field(error: http_errors.HTTPError) -> str | None:
    """The field SendGrid blames in its error body (``personalizations.0.to``...), if any."""
    try:
        errors = orjson.loads(error.body or b"{}").get("errors") or []
        found = errors[0].get("field") if errors and isinstance(errors[0], dict) else None
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        return None
    return str(found) if found else None


def rejection_reason(error: http_errors.HTTPError) -> str:
    """A ledger reason for a permanent 4xx: status and blamed field, no personal data."""
    found = _error_field(error)
    return f"sendgrid_{error.status_code}" + (f":{found}" if found else "")


def _reset_in_seconds(error: http_errors.HTTPError) -> float | None:
    """SendGrid's wait after a 429: its rate-limit reset (a Unix time), else Retry-After; None if neither reads."""
    headers = error.headers or {}
    reset = seconds_until(headers.get("X-RateLimit-Reset"), now=time.time())
    return reset if reset is not None else retry_after_seconds(headers.get("Retry-After"))


class EmailChannel:
    """Sends Community Request emails through one SendGrid client configured from the settings."""

    def __init__(self, settings: Settings) -> None:
        if not settings.sendgrid_api_key:
            raise ConfigurationError("SENDGRID_API_KEY is not configured")
        self.settings = settings
        self.client = SendGridAPIClient(settings.sendgrid_api_key, host=settings.sendgrid_endpoint.rstrip("/"))
        self.client.client.timeout = REQUEST_TIMEOUT_SECONDS
        self.client.client.request_headers["Content-Type"] = "application/json; charset=utf-8"
        # The mail send endpoint of the library's client: its URL, headers (API key, user agent) and
        # error mapping (``_make_request`` turns an HTTP error into python_http_client's exception
        # classes). Calls go straight to ``_make_request``: the public ``post`` formats the whole body
        # into debug-log strings before every call, whatever the log level (a millisecond for a
        # thousand recipients, and the addresses would be in them).
        self._mail_send = self.client.client.mail.send
        self._mail_send_url: str = self._mail_send._build_url(None)

    def unsubscribe_link(self, resident_id: int, request_id: str) -> str:
        """The one-click unsubscribe URL for one resident (ids only)."""
        query = urlencode({"resident": resident_id, "request": request_id})
        return f"{self.settings.unsubscribe_url}?{query}"

    def _unsubscribe_parts(self, request: CommunityRequest) -> tuple[str, str]:
        # ``unsubscribe_link``'s exact output around the resident id, with the request part quoted once.
        return f"<{self.settings.unsubscribe_url}?resident=", f"&{urlencode({'request': request.id})}>"

    def _envelope(self, request: CommunityRequest, content: EmailContent) -> dict[str, Any]:
        """Everything in a mail send body but the personalizations."""
        body: dict[str, Any] = {
            "from": {"email": self.settings.email_from, "name": one_line(self.settings.email_from_name)},
            "reply_to": {"email": request.investigator.email, "name": one_line(request.investigator.name)},
            "subject": content.subject,
            "content": [
                {"type": "text/plain", "value": content.text},
                {"type": "text/html", "value": content.html},
            ],
            "categories": ["community_request"],
            "tracking_settings": {"click_tracking": {"enable": False}, "open_tracking": {"enable": False}},
        }
        if self.settings.sendgrid_unsubscribe_group:
            body["asm"] = {"group_id": self.settings.sendgrid_unsubscribe_group}
        return body

    def mail_body(self, request: CommunityRequest, content: EmailContent,
                  group: Sequence[EmailTarget]) -> dict[str, Any]:
        """The mail send body for one group, as a dict (the readable reference for :meth:`mail_body_json`)."""
        head, tail = self._unsubscribe_parts(request)
        personalizations = [
            {
                "to": [{"email": t.email}],
                "custom_args": {"request_id": request.id, "resident_id": str(t.resident_id)},
                "headers": {"List-Unsubscribe": f"{head}{t.resident_id}{tail}",
                            "List-Unsubscribe-Post": _ONE_CLICK},
            }
            for t in group
        ]
        return {"personalizations": personalizations, **self._envelope(request, content)}

    def mail_body_json(self, request: CommunityRequest, content: EmailContent,
                       group: Sequence[EmailTarget]) -> str:
        """``orjson.dumps(mail_body(...))``, character for character, built for a thousand recipients a call.

        Each personalization is one string formatted from fragments JSON-encoded once per call (the
        request id and the unsubscribe link around the resident id); only addresses vary, and they are
        used as they are unless one needs JSON escaping (quote, backslash, control characters), when
        orjson encodes each.
        """
        head, tail = self._unsubscribe_parts(request)
        emails = [t.email for t in group]
        joined = "".join(emails)
        if '"' in joined or "\\" in joined or not joined.isprintable():
            emails = [_json_inner(email) for email in emails]
        before_id = f'"}}],"custom_args":{{"request_id":{orjson.dumps(request.id).decode()},"resident_id":"'
        link = f'"}},"headers":{{"List-Unsubscribe":"{_json_inner(head)}'
        after_link = f'{_json_inner(tail)}","List-Unsubscribe-Post":"{_ONE_CLICK}"}}}}'
        personalizations = ",".join([
            f'{{"to":[{{"email":"{email}{before_id}{t.resident_id}{link}{t.resident_id}{after_link}'
            for email, t in zip(emails, group, strict=True)
        ])
        envelope = orjson.dumps(self._envelope(request, content)).decode()
        return f'{{"personalizations":[{personalizations}],{envelope[1:]}'

    def send(self, request: CommunityRequest, targets: Sequence[EmailTarget]) -> EmailResult:
        """Send to every target; one API call per group and at most 1,000 recipients."""
        groups: dict[tuple[bool, str], list[EmailTarget]] = defaultdict(list)
        for target in targets:
            groups[(target.has_camera, target.time_zone)].append(target)
        result = EmailResult()
        size = min(self.settings.email_batch_size, SENDGRID_MAX_PERSONALIZATIONS)
        for (camera, zone), members in groups.items():
            content = email_content(request, has_camera=camera, time_zone=zone, settings=self.settings)
            for start in range(0, len(members), size):
                chunk = members[start:start + size]
                self._send_chunk(request, content, chunk, result)
        return result

    def _post(self, body: bytes) -> None:
        """One mail send call; raises python_http_client's ``HTTPError`` subclasses or ``OSError``."""
        call = urllib.request.Request(self._mail_send_url, data=body, method="POST",
                                      headers=self._mail_send.request_headers)
        self._mail_send._make_request(urllib.request.build_opener(), call, timeout=REQUEST_TIMEOUT_SECONDS)

    def _send_chunk(self, request: CommunityRequest, content: EmailContent, chunk: Sequence[EmailTarget],
                    result: EmailResult) -> None:
        ids = [t.resident_id for t in chunk]
        if result.quota_exceeded:
            result.retry.extend(ids)
            return
        body = self.mail_body_json(request, content, chunk).encode()
        for attempt in range(1, INLINE_ATTEMPTS + 1):
            result.calls += 1
            try:
                self._post(body)
            except http_errors.TooManyRequestsError as error:
                result.quota_exceeded = True
                result.retry.extend(ids)
                wait = _reset_in_seconds(error)
                result.retry_after = max(result.retry_after or 0.0,
                                         QUOTA_DEFAULT_WAIT_SECONDS if wait is None else wait)
                return
            except http_errors.HTTPError as error:
                if error.status_code < 500:
                    reason = rejection_reason(error)
                    result.outcomes.update({i: Outcome(Status.FAILED, reason) for i in ids})
                    return
            except OSError:
                pass  # a network failure (URLError, timeout): temporary, like a 5xx
            else:
                result.accepted += len(ids)
                result.outcomes.update(dict.fromkeys(ids, _SENT))
                return
            if attempt < INLINE_ATTEMPTS:
                result.inline_retries += 1
                time.sleep(INLINE_BACKOFF_SECONDS * (0.5 + random.random() / 2))
        result.retry.extend(ids)
        result.retry_after = max(result.retry_after or 0.0, TEMPORARY_DEFAULT_WAIT_SECONDS)
