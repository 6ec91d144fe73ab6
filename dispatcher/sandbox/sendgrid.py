"""SendGrid v3 ``POST /v3/mail/send`` as the sendgrid library sees it.

Validation (:mod:`dispatcher.sandbox.sendgrid_rules`, each rule with its source) refuses what SendGrid
refuses, answering 400 with its ``{"errors": [{"message", "field", "help"}]}`` body, 401 for a wrong
key, and 202 with an ``X-Message-Id`` for accepted mail. Each accepted request is recorded once, and
each recipient once, with the custom_args SendGrid would echo in its webhook events.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections.abc import Iterator, Sequence
from typing import Any, overload

import orjson

from dispatcher.sandbox.faults import Faults
from dispatcher.sandbox.http import Response, json_response
from dispatcher.sandbox.quota import Quota
from dispatcher.sandbox.recorder import Recorder
from dispatcher.sandbox.sendgrid_rules import RECIPIENT_KINDS, is_sandbox_mode, mail_problem

#: Recipients kept waiting for webhook events; beyond this, events are not generated.
MAX_PENDING_EVENTS = 200_000
_MESSAGES = {
    400: "Bad Request",
    401: "The provided authorization grant is invalid, expired, or revoked",
    403: "access forbidden",
    404: "not found",
    429: "too many requests",
    500: "internal error",
    502: "bad gateway",
    503: "service unavailable",
    504: "gateway timeout",
}


def sendgrid_error(status: int, message: str | None = None, field: str | None = None,
                   headers: list[tuple[bytes, bytes]] | None = None) -> Response:
    """A SendGrid v3 error response."""
    payload = {"errors": [{"message": message or _MESSAGES.get(status, "error"), "field": field, "help": None}]}
    return json_response(status, payload, headers)


#: X-RateLimit-Limit reported with an injected 429 when no quota is set.
DEFAULT_RATE_LIMIT = 600


def _rate_limit_headers(retry_after: float, limit: int) -> list[tuple[bytes, bytes]]:
    """SendGrid's rate limit headers: the limit, none remaining, and the epoch second it resets."""
    reset = math.ceil(time.time() + max(retry_after, 1))
    return [(b"x-ratelimit-limit", str(limit).encode()), (b"x-ratelimit-remaining", b"0"),
            (b"x-ratelimit-reset", str(reset).encode())]


class PendingRecipients(Sequence[dict[str, Any]]):
    """Recipients waiting for webhook events, kept as their records' JSON bytes and decoded when read.

    Up to 200,000 wait at a time; as bytes they cost the garbage collector nothing (as dicts every full
    collection walked them all, on the path that accepts mail).
    """

    def __init__(self, lines: list[bytes]) -> None:
        self._lines = lines

    def __len__(self) -> int:
        return len(self._lines)

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(index, slice):
            return [orjson.loads(line) for line in self._lines[index]]
        record: dict[str, Any] = orjson.loads(self._lines[index])
        return record

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for line in self._lines:
            yield orjson.loads(line)


class SendgridSandbox:
    """Handles ``POST /v3/mail/send``; accepted recipients wait in :attr:`pending` for webhook events."""

    def __init__(self, api_key: str, faults: Faults, recorder: Recorder) -> None:
        self.api_key = api_key
        self._expected_auth = f"Bearer {api_key}".encode()
        self.faults = faults
        self.recorder = recorder
        self._pending: list[bytes] = []
        self._quota = Quota()

    @property
    def pending(self) -> Sequence[dict[str, Any]]:
        """Recipients accepted but not yet reported through the event webhook (their records)."""
        return PendingRecipients(self._pending)

    @pending.setter
    def pending(self, recipients: Sequence[dict[str, Any]]) -> None:
        self._pending = [orjson.dumps(recipient) for recipient in recipients]

    async def send(self, authorization: bytes | None, body: bytes) -> Response:
        plan = self.faults.sendgrid
        delay = plan.latency_seconds() + plan.slow_headers_seconds()
        if delay:
            await asyncio.sleep(delay)
        if authorization != self._expected_auth:
            self.recorder.count("sendgrid.unauthorized")
            return sendgrid_error(401, field=None)
        if plan.quota:
            wait = self._quota.take(plan.quota, plan.quota_window_seconds)
            if wait:
                self.recorder.count("sendgrid.rate_limited")
                return sendgrid_error(429, headers=_rate_limit_headers(wait, plan.quota))
        try:
            mail = orjson.loads(body)
        except orjson.JSONDecodeError:
            self.recorder.count("sendgrid.rejected")
            return sendgrid_error(400, "Bad Request")
        problem = mail_problem(mail)
        if problem is not None:
            self.recorder.count("sendgrid.rejected")
            return sendgrid_error(400, *problem)
        if is_sandbox_mode(mail):
            # SendGrid's sandbox mode: validated, answered 200 with no body, nothing sent, no events.
            self.recorder.count("sendgrid.sandbox_mode")
            return Response(200, [], b"")
        status = plan.call_fault()
        if status is not None:
            self.recorder.count(f"sendgrid.fault_{status}")
            headers = _rate_limit_headers(plan.retry_after, plan.quota or DEFAULT_RATE_LIMIT) if status == 429 else None
            return sendgrid_error(status, headers=headers)
        message_id = secrets.token_urlsafe(16)[:22]
        self._record(message_id, mail)
        return Response(202, [(b"x-message-id", message_id.encode())], b"", plan.resets())

    def _record(self, message_id: str, mail: dict[str, Any]) -> None:
        self.recorder.count("sendgrid.accepted")
        now = time.time()
        base_args = mail.get("custom_args") or {}
        categories = mail.get("categories") or []
        asm_group = (mail.get("asm") or {}).get("group_id")
        mail_headers = mail.get("headers") or {}
        mail_subject = mail.get("subject")
        personalizations = mail["personalizations"]
        self.recorder.record("sendgrid_requests", {
            "ts": now, "message_id": message_id, "personalizations": len(personalizations),
            "template_id": mail.get("template_id"), "subject": mail_subject,
            "custom_args": base_args, "categories": categories,
            "from": mail.get("from"), "reply_to": mail.get("reply_to"), "content": mail.get("content"),
            "headers": mail.get("headers"), "asm": mail.get("asm"),
        })
        # One JSON line per recipient, serialised once: the same bytes go to the file, to memory and
        # to the webhook queue. A personalization's own custom_args and headers are used as they are
        # when the mail has none to merge in (the merge would copy them unchanged).
        dumps = orjson.dumps
        sg_prefix = f"{message_id}.filterdrecv-sandbox-"
        lines: list[bytes] = []
        for p_index, personalization in enumerate(personalizations):
            own_args = personalization.get("custom_args") or {}
            custom_args = own_args if not base_args and type(own_args) is dict else {**base_args, **own_args}
            own_headers = personalization.get("headers") or {}
            headers = (own_headers if not mail_headers and type(own_headers) is dict
                       else {**mail_headers, **own_headers})
            subject = personalization.get("subject") or mail_subject
            recipient_index = 0
            for kind in RECIPIENT_KINDS:
                for address in personalization.get(kind) or ():
                    lines.append(dumps({
                        "ts": now, "message_id": message_id, "email": address["email"], "kind": kind,
                        "personalization": p_index, "custom_args": custom_args, "subject": subject,
                        "sg_message_id": f"{sg_prefix}{p_index}-{recipient_index}.0",
                        "categories": categories, "asm_group_id": asm_group, "headers": headers,
                    }))
                    recipient_index += 1
        self.recorder.record_lines("sendgrid", lines)
        room = MAX_PENDING_EVENTS - len(self._pending)
        if room > 0:
            self._pending.extend(lines if room >= len(lines) else lines[:room])
