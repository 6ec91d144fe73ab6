"""Email through SendGrid v3 mail send: the sendgrid library's helpers, a shared keep-alive httpx client.

Residents of one request are grouped by what makes their email differ (camera or not, time zone,
and the locale their tag resolves to, so ``fr-CA`` and ``fr_ca`` share a group); each group's email
is rendered once per request (kept for the request's next batches) and sent with one API call per at
most 1,000 personalizations, a batch's calls side by side (a batch takes its slowest call, not their
sum). A personalization carries
the address, a one-click unsubscribe header and custom args with ids only (request and resident), so
webhook events can be traced back to ledger rows without any personal data.

Errors: 429 hands the residents back to wait until the reset SendGrid gives (``X-RateLimit-Reset``,
else Retry-After) and stops the batch's remaining calls; a 5xx or a failure before the body was
written (no connection, a refused or reset one) is tried again once inline after a short backoff, then
handed back; any other 4xx fails the chunk's rows with the status and the field SendGrid names (never
the message text, which may quote an address). Nothing is sent once the response window has ended:
those rows expire.

A call whose body was written but never answered (a read timeout, a connection dropped before the
status line) is ambiguous: SendGrid may have taken it, and it has no idempotency key, so sending again
could email every recipient twice. Such rows are closed as ``sent`` with the reason
:data:`~dispatcher.ledger.UNCONFIRMED_REASON` (at most once, never twice; ops count them by reason)
instead of being retried.
And a batch never outlives its lease: every call must end before the lease renewed right before the
batch does (:attr:`EmailChannel.batch_deadline_seconds`): its timeout is cut to the time left, and
once too little is left the rest is handed back, so no other worker can claim rows this one is still
sending.

The sendgrid library gives the request headers (API key, user agent); the body is JSON bytes sent
by one ``httpx.Client`` per process (keep-alive, thread-safe, its transport injectable for tests and
measurements). The envelope is encoded by orjson, the thousand personalizations are formatted from
fragments encoded once per call (``mail_body_json``, checked character for character against
orjson's encoding of ``mail_body``).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
import orjson
import psycopg
from sendgrid import SendGridAPIClient

from dispatcher import ledger
from dispatcher.channels.base import Eligible
from dispatcher.channels.content import EmailContent, Readers, email_content, one_line, readers
from dispatcher.channels.httpx_failures import NEVER_CONNECTED
from dispatcher.channels.result import SendResult
from dispatcher.channels.retry_after import retry_after_seconds, seconds_until
from dispatcher.config import SENDGRID_MAX_PERSONALIZATIONS, Settings
from dispatcher.contract import PublishedRequest
from dispatcher.errors import ConfigurationError
from dispatcher.ledger import UNCONFIRMED_REASON, WINDOW_ENDED, Outcome, Status
from dispatcher.preferences import eligibility
from dispatcher.unsubscribe import unsubscribe_link, unsubscribe_links


class Mailbox(Protocol):
    """What an email needs about one resident: the address and what shapes their email."""

    @property
    def email(self) -> str: ...

    @property
    def locale(self) -> str: ...

    @property
    def time_zone(self) -> str: ...

    @property
    def has_camera(self) -> bool: ...


#: One resident of a group: their id and their mailbox.
Addressee = tuple[int, Mailbox]


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
#: Time kept between a batch's last call and the end of its lease, for recording it.
RECORD_MARGIN_SECONDS = 2.0
#: A call is not started with less time than this left before the batch deadline.
MIN_CALL_SECONDS = 0.5
#: Failures that happen before SendGrid could have read the request: safe to send again (a body cut off
#: while being written is never processed either).
NOT_SENT_ERRORS: tuple[type[httpx.TransportError], ...] = (*NEVER_CONNECTED, httpx.WriteError, httpx.WriteTimeout)
#: Keep-alive connections to SendGrid per process (one call in flight each), and threads for a batch's
#: further calls: room for every batch the fan-out keeps in flight (``fanout.MAX_BATCHES_IN_FLIGHT``)
#: with a call or two more each; beyond it a call waits for a connection, within its lease.
CONNECTIONS = 64

#: Requests whose rendered emails a channel keeps (a worker process sends a few requests at a time).
REQUESTS_KEPT = 16

_ONE_CLICK = "List-Unsubscribe=One-Click"
#: One immutable outcome shared by every accepted recipient.
_SENT = Outcome(Status.SENT)
_EXPIRED = Outcome(Status.EXPIRED, WINDOW_ENDED)
_UNCONFIRMED = Outcome(Status.SENT, UNCONFIRMED_REASON)


def _json_inner(text: str) -> str:
    """``text`` JSON-encoded as orjson encodes it, without the surrounding quotes."""
    return orjson.dumps(text).decode()[1:-1]


class Rejected(Exception):
    """SendGrid answered a mail send with an error status (not a DispatcherError: sorted by the caller)."""

    def __init__(self, status: int, headers: httpx.Headers, body: bytes) -> None:
        super().__init__(f"SendGrid answered {status}")
        self.status = status
        self.headers = headers
        self.body = body


def _error_field(body: bytes) -> str | None:
    """The field SendGrid blames in its error body (``personalizations.0.to``...), if any."""
    try:
        errors = orjson.loads(body or b"{}").get("errors") or []
        found = errors[0].get("field") if errors and isinstance(errors[0], dict) else None
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        return None
    return str(found) if found else None


def rejection_reason(error: Rejected) -> str:
    """A ledger reason for a permanent 4xx: status and blamed field, no personal data."""
    found = _error_field(error.body)
    return f"sendgrid_{error.status}" + (f":{found}" if found else "")


def _reset_in_seconds(error: Rejected) -> float | None:
    """SendGrid's wait after a 429: its rate-limit reset (a Unix time), else Retry-After; None if neither reads."""
    reset = seconds_until(error.headers.get("X-RateLimit-Reset"), now=time.time())
    return reset if reset is not None else retry_after_seconds(error.headers.get("Retry-After"))


def _grouped(request: PublishedRequest, recipients: Mapping[int, Mailbox]) -> dict[Readers, list[Addressee]]:
    """Recipients by the email they get: residents with the same camera, zone and locale tag share a
    group, so :func:`readers` (locale resolution included) runs once per distinct tag, not per resident."""
    by_tag: dict[tuple[bool, str, str], list[Addressee]] = defaultdict(list)
    for rid, mailbox in recipients.items():
        by_tag[mailbox.has_camera, mailbox.time_zone, mailbox.locale].append((rid, mailbox))
    groups: dict[Readers, list[Addressee]] = defaultdict(list)
    for (camera, zone, locale), members in by_tag.items():
        groups[readers(request, has_camera=camera, time_zone=zone, locale=locale)].extend(members)
    return groups


def _call_threads() -> ThreadPoolExecutor:
    """The process's threads for a batch's further calls (made again in a forked child)."""
    global _calls, _calls_pid
    with _calls_lock:
        if _calls is None or _calls_pid != os.getpid():
            _calls = ThreadPoolExecutor(max_workers=CONNECTIONS, thread_name_prefix="dispatcher-email")
            _calls_pid = os.getpid()
        return _calls


_calls: ThreadPoolExecutor | None = None
_calls_pid = -1
_calls_lock = threading.Lock()


class EmailChannel:
    """Sends Community Request emails through one SendGrid client configured from the settings."""

    kind = ledger.Channel.EMAIL
    provider = "sendgrid"

    def __init__(self, settings: Settings, *, transport: httpx.BaseTransport | None = None) -> None:
        """Cheap: the client is made on the first send, so checking eligibility needs no API key."""
        self.settings = settings
        #: Time from the start of a batch by which its last call must have ended (the lease renewed
        #: right before the batch, less the time to record it).
        self.batch_deadline_seconds = max(0.0, settings.lease_seconds - RECORD_MARGIN_SECONDS)
        self._transport = transport
        self._lock = threading.Lock()
        self._pid = -1
        self._client: httpx.Client | None = None
        self._mail_send_url = ""
        self._contents: OrderedDict[int, tuple[PublishedRequest, dict[Readers, EmailContent]]] = OrderedDict()

    def endpoint(self) -> tuple[str, dict[str, str]]:
        """The mail send URL and the request headers the sendgrid library would send (API key, user agent)."""
        if not self.settings.sendgrid_api_key:
            raise ConfigurationError("SENDGRID_API_KEY is not configured")
        host = self.settings.sendgrid_endpoint.rstrip("/")
        library = SendGridAPIClient(self.settings.sendgrid_api_key, host=host)
        return f"{host}/v3/mail/send", {**library.client.request_headers,
                                         "Content-Type": "application/json; charset=utf-8"}

    def _http(self) -> httpx.Client:
        """The process's keep-alive client (made again in a forked child: sockets are not shared)."""
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                self._mail_send_url, headers = self.endpoint()
                self._client = httpx.Client(
                    headers=headers, timeout=REQUEST_TIMEOUT_SECONDS, transport=self._transport,
                    limits=httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS))
                self._pid = os.getpid()
            return self._client

    def warm_up(self) -> None:
        """Make the process's client (API key and headers checked); connections still open on first use."""
        self._http()

    def close(self) -> None:
        """Close the keep-alive connections."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None and self._pid == os.getpid():
            client.close()

    def eligible(self, conn: psycopg.Connection[Any], request_id: str,
                 resident_ids: Sequence[int]) -> Eligible[Mailbox]:
        """Residents with an address and email on; the rest skipped (or suppressed) with the reason."""
        reachable, skipped = eligibility.eligible_email_targets(conn, request_id, resident_ids)
        not_sent = {rid: Outcome(Status.SUPPRESSED if reason == eligibility.EMAIL_SUPPRESSED else Status.SKIPPED,
                                 reason) for rid, reason in skipped.items()}
        return Eligible(dict(reachable), not_sent)

    def after_recording(self, result: SendResult) -> None:
        """Nothing to do: bounces and unsubscribes come back through the event webhook."""

    def unsubscribe_link(self, resident_id: int, request_id: str) -> str:
        """The signed one-click unsubscribe URL for one resident (ids only)."""
        return unsubscribe_link(self.settings, resident_id, request_id)

    def _envelope(self, request: PublishedRequest, content: EmailContent) -> dict[str, Any]:
        """Everything in a mail send body but the personalizations."""
        inv = request.investigator  # None only for an agency announcement (which goes by push only)
        body: dict[str, Any] = {
            "from": {"email": self.settings.email_from, "name": one_line(self.settings.email_from_name)},
            "reply_to": {"email": inv.email, "name": one_line(inv.name)} if inv else None,
            "subject": content.subject,
            "content": [
                {"type": "text/plain", "value": content.text},
                {"type": "text/html", "value": content.html},
            ],
            "categories": ["community_request"],
            "tracking_settings": {"click_tracking": {"enable": False}, "open_tracking": {"enable": False}},
        }
        if inv is None:
            del body["reply_to"]
        if self.settings.sendgrid_unsubscribe_group:
            body["asm"] = {"group_id": self.settings.sendgrid_unsubscribe_group}
        return body

    def mail_body(self, request: PublishedRequest, content: EmailContent,
                  group: Sequence[Addressee]) -> dict[str, Any]:
        """The mail send body for one group, as a dict (the readable reference for :meth:`mail_body_json`)."""
        links = unsubscribe_links(self.settings, request.id)
        personalizations = [
            {
                "to": [{"email": mailbox.email}],
                "custom_args": {"request_id": request.id, "resident_id": str(rid)},
                "headers": {"List-Unsubscribe": f"<{links.link(rid)}>",
                            "List-Unsubscribe-Post": _ONE_CLICK},
            }
            for rid, mailbox in group
        ]
        return {"personalizations": personalizations, **self._envelope(request, content)}

    def mail_body_json(self, request: PublishedRequest, content: EmailContent,
                       group: Sequence[Addressee]) -> str:
        """``orjson.dumps(mail_body(...))``, character for character, built for a thousand recipients a call.

        Each personalization is one string formatted from fragments JSON-encoded once per call (the
        request id and the unsubscribe link around the resident id); only addresses vary, and they are
        used as they are unless one needs JSON escaping (quote, backslash, control characters), when
        orjson encodes each.
        """
        links = unsubscribe_links(self.settings, request.id)
        emails = [mailbox.email for _, mailbox in group]
        joined = "".join(emails)
        if '"' in joined or "\\" in joined or not joined.isprintable():
            emails = [_json_inner(email) for email in emails]
        before_id = f'"}}],"custom_args":{{"request_id":{orjson.dumps(request.id).decode()},"resident_id":"'
        link = f'"}},"headers":{{"List-Unsubscribe":"<{_json_inner(links.head)}'
        after_link = f'>","List-Unsubscribe-Post":"{_ONE_CLICK}"}}}}'
        ids = [rid for rid, _ in group]
        personalizations = ",".join([  # a link's tail (request, expiry, signature) is URL-safe: no escaping
            f'{{"to":[{{"email":"{email}{before_id}{rid}{link}{rid}{tail}{after_link}'
            for email, rid, tail in zip(emails, ids, links.tails(ids), strict=True)
        ])
        envelope = orjson.dumps(self._envelope(request, content)).decode()
        return f'{{"personalizations":[{personalizations}],{envelope[1:]}'

    def send(self, request: PublishedRequest, respond_until: datetime,
             recipients: Mapping[int, Mailbox]) -> EmailResult:
        """Send to every recipient; one API call per group and at most 1,000 recipients.

        Nothing is sent once ``respond_until`` has passed: those residents' rows expire.
        """
        groups = _grouped(request, recipients)
        deadline = time.monotonic() + self.batch_deadline_seconds
        size = min(self.settings.email_batch_size, SENDGRID_MAX_PERSONALIZATIONS)
        calls = [(self._content(request, group), members[start:start + size])
                 for group, members in groups.items() for start in range(0, len(members), size)]
        stop = threading.Event()  # set by a 429: the batch's calls not yet started hand their residents back
        later = [_call_threads().submit(self._send_chunk, request, respond_until, content, chunk, deadline, stop)
                 for content, chunk in calls[1:]]
        result = EmailResult()
        try:
            if calls:
                result.absorb(self._send_chunk(request, respond_until, *calls[0], deadline, stop))
        finally:  # every call has ended before the batch is recorded (or fails): none outlives its lease
            wait(later)
        for call in later:
            result.absorb(call.result())
        return result

    def _content(self, request: PublishedRequest, group: Readers) -> EmailContent:
        """The group's email, rendered once per request object and kept for its next batches.

        A drain sends every batch of a request with the same request object, and a published request
        never changes, so the templates run once per group, not once per call. The emails of the last
        :data:`REQUESTS_KEPT` request objects are kept (each entry holds its request, so an id is never
        reused while it lives, and at most that many areas stay in memory).
        """
        with self._lock:
            kept = self._contents.get(id(request))
            if kept is not None and kept[0] is request:
                self._contents.move_to_end(id(request))
                content = kept[1].get(group)
                if content is not None:
                    return content
        camera, zone, locale = group
        content = email_content(request, has_camera=camera, time_zone=zone, settings=self.settings, locale=locale)
        with self._lock:
            kept = self._contents.get(id(request))
            if kept is None or kept[0] is not request:
                kept = self._contents[id(request)] = (request, {})
                while len(self._contents) > REQUESTS_KEPT:
                    self._contents.popitem(last=False)
            kept[1][group] = content
        return content

    def _post(self, body: bytes, timeout: float = REQUEST_TIMEOUT_SECONDS) -> None:
        """One mail send call; raises :class:`Rejected` for an error status, ``httpx.TransportError`` else."""
        client = self._http()
        response = client.post(self._mail_send_url, content=body, timeout=timeout)
        if response.status_code >= 300:
            raise Rejected(response.status_code, response.headers, response.content)

    def _send_chunk(self, request: PublishedRequest, respond_until: datetime, content: EmailContent,
                    chunk: Sequence[Addressee], deadline: float, stop: threading.Event) -> EmailResult:
        """One call (and its inline retry) for at most 1,000 residents of one group."""
        result = EmailResult()
        ids = [rid for rid, _ in chunk]
        if stop.is_set():
            result.retry.extend(ids)
            return result
        body = self.mail_body_json(request, content, chunk).encode()
        for attempt in range(1, INLINE_ATTEMPTS + 1):
            if datetime.now(UTC) >= respond_until:
                result.outcomes.update(dict.fromkeys(ids, _EXPIRED))
                return result
            left = deadline - time.monotonic()
            if left < MIN_CALL_SECONDS:  # the lease could end before SendGrid answers
                result.problems["lease_deadline"] += 1
                break
            result.calls += 1
            try:
                self._post(body, min(REQUEST_TIMEOUT_SECONDS, left))
            except Rejected as error:
                result.problems[str(error.status)] += 1
                if error.status == 429:
                    stop.set()
                    result.quota_exceeded = True
                    result.retry.extend(ids)
                    reset = _reset_in_seconds(error)
                    result.retry_after = QUOTA_DEFAULT_WAIT_SECONDS if reset is None else reset
                    return result
                if error.status < 500:
                    reason = rejection_reason(error)
                    result.outcomes.update({i: Outcome(Status.FAILED, reason) for i in ids})
                    return result
            except NOT_SENT_ERRORS as error:
                result.problems[type(error).__name__] += 1  # SendGrid never read it: temporary, like a 5xx
            except httpx.TransportError as error:
                result.problems[type(error).__name__] += 1  # written, never answered: taken or not, never sent twice
                result.outcomes.update(dict.fromkeys(ids, _UNCONFIRMED))
                return result
            else:
                result.accepted += len(ids)
                result.outcomes.update(dict.fromkeys(ids, _SENT))
                return result
            if attempt < INLINE_ATTEMPTS:
                result.inline_retries += 1
                time.sleep(INLINE_BACKOFF_SECONDS * (0.5 + random.random() / 2))
        result.retry.extend(ids)
        result.retry_after = TEMPORARY_DEFAULT_WAIT_SECONDS
        return result
