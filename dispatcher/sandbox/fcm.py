"""FCM HTTP v1 as firebase-admin sees it: the token exchange and ``messages:send``.

A body is refused as FCM refuses it (:mod:`dispatcher.sandbox.fcm_rules`: Google's published discovery
document plus the prose rules), ``validateOnly`` is validated and not delivered, the project's quota is
enforced (FCM's default unless the fault plan sets another), and latency is drawn per call.

Errors are google.rpc.Status bodies with an ``FcmError`` detail, byte for byte the shape FCM returns,
so firebase-admin raises the same exception classes (``UnregisteredError``, ``QuotaExceededError``,
``UnavailableError``, ``InternalError``, ``InvalidArgumentError``...) it raises against Google.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import re
import secrets
import time
from typing import Any
from urllib.parse import parse_qs

import orjson

from dispatcher.sandbox.credentials import (
    ACCESS_TOKEN_SECONDS,
    JWT_BEARER_GRANT,
    InvalidGrant,
    TokenAuthority,
)
from dispatcher.sandbox.discovery import SchemaProblem
from dispatcher.sandbox.faults import FCM_DEFAULT_QUOTA_PER_MINUTE, Faults
from dispatcher.sandbox.fcm_rules import fcm_request_problem, is_validate_only
from dispatcher.sandbox.http import JSON_HEADERS, Response, json_response
from dispatcher.sandbox.quota import Quota
from dispatcher.sandbox.recorder import Recorder

FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"

#: HTTP status -> (google.rpc status, FCM error code, message), as FCM v1 answers.
FCM_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("INVALID_ARGUMENT", "INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: ("UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR", "Request had invalid authentication credentials."),
    403: ("PERMISSION_DENIED", "SENDER_ID_MISMATCH", "SenderId mismatch"),
    404: ("NOT_FOUND", "UNREGISTERED", "Requested entity was not found."),
    429: ("RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", "Quota exceeded for quota metric 'Send requests'."),
    500: ("INTERNAL", "INTERNAL", "Internal error encountered."),
    502: ("UNAVAILABLE", "UNAVAILABLE", "Bad gateway."),
    503: ("UNAVAILABLE", "UNAVAILABLE", "The service is currently unavailable."),
    504: ("DEADLINE_EXCEEDED", None, "Deadline exceeded."),
}


def fcm_error(status: int, message: str | None = None, retry_after: int | None = None) -> Response:
    """An FCM v1 error response for ``status`` (a google.rpc.Status with an FcmError detail)."""
    rpc_status, error_code, default_message = FCM_ERRORS.get(status, ("UNKNOWN", None, "Unknown error."))
    details = [{"@type": FCM_ERROR_TYPE, "errorCode": error_code}] if error_code else []
    payload = {"error": {"code": status, "message": message or default_message, "status": rpc_status,
                         "details": details}}
    extra = [(b"retry-after", str(retry_after).encode())] if retry_after is not None else []
    return json_response(status, payload, extra)


_UNAUTHENTICATED = json_response(
    401,
    {"error": {"code": 401, "status": "UNAUTHENTICATED",
               "message": "Request had invalid authentication credentials. Expected OAuth 2 access token, "
                          "login cookie or other valid authentication credential."}},
    [(b"www-authenticate", b'Bearer realm="https://accounts.google.com/"')],
)
#: Verdicts kept per message shape (the body without its token): the engine sends one shape per request.
VERDICT_CACHE_SIZE = 4096


def _invalid_argument(problem: str, field: str) -> Response:
    payload = {"error": {"code": 400, "message": problem, "status": "INVALID_ARGUMENT", "details": [
        {"@type": FCM_ERROR_TYPE, "errorCode": "INVALID_ARGUMENT"},
        {"@type": "type.googleapis.com/google.rpc.BadRequest",
         "fieldViolations": [{"field": field, "description": problem}]},
    ]}}
    return json_response(400, payload)


_WHITESPACE = re.compile(r"\s")


def _malformed_token(token: str) -> bool:
    return len(token) > 4096 or _WHITESPACE.search(token) is not None


class FcmSandbox:
    """Handles ``POST /token`` and ``POST /v1/projects/{project}/messages:send``."""

    def __init__(self, tokens: TokenAuthority, faults: Faults, recorder: Recorder) -> None:
        self.tokens = tokens
        self.faults = faults
        self.recorder = recorder
        self._ids = itertools.count(1)
        self._id_prefix = secrets.token_hex(3)
        self._verdicts: dict[bytes, SchemaProblem | None] = {}
        self._quota = Quota()

    def token(self, body: bytes) -> Response:
        """Google's OAuth2 token endpoint for service-account JWT assertions."""
        form = parse_qs(body.decode("utf-8", "replace"))
        if form.get("grant_type", [""])[0] != JWT_BEARER_GRANT:
            self.recorder.count("token.rejected")
            return json_response(400, {"error": "unsupported_grant_type",
                                       "error_description": "Invalid grant_type."})
        try:
            self.tokens.verify_assertion(form.get("assertion", [""])[0])
        except InvalidGrant as exc:
            self.recorder.count("token.rejected")
            return json_response(400, {"error": "invalid_grant", "error_description": str(exc)})
        self.recorder.count("token.issued")
        return json_response(200, {"access_token": self.tokens.issue(), "expires_in": ACCESS_TOKEN_SECONDS,
                                   "token_type": "Bearer"})

    async def send(self, project: str, authorization: bytes | None, body: bytes) -> Response:
        plan = self.faults.fcm
        delay = plan.latency_seconds() + plan.slow_headers_seconds()
        if delay:
            await asyncio.sleep(delay)
        if authorization is None or not authorization.startswith(b"Bearer ") or not self.tokens.is_valid(
            authorization[7:].decode("latin-1")
        ):
            self.recorder.count("fcm.unauthenticated")
            return _UNAUTHENTICATED
        limit = FCM_DEFAULT_QUOTA_PER_MINUTE if plan.quota is None else plan.quota
        if limit:
            wait = self._quota.take(limit, plan.quota_window_seconds)
            if wait:
                self.recorder.count("fcm.quota_exceeded")
                return fcm_error(429, retry_after=max(1, math.ceil(wait)))
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError:
            self.recorder.count("fcm.rejected")
            return _invalid_argument("Invalid JSON payload received.", "message")
        problem = self._problem(request, body)
        if problem is not None:
            self.recorder.count("fcm.rejected")
            return _invalid_argument(problem.message, problem.field)
        message: dict[str, Any] = request["message"]
        status = plan.call_fault()
        if status is not None:
            self.recorder.count(f"fcm.fault_{status}")
            retry_after = plan.retry_after if status in (429, 503) else None
            return fcm_error(status, retry_after=retry_after)
        token: str | None = message.get("token") or message.get("fid")
        if token is not None:
            if _malformed_token(token) or plan.is_invalid(token):
                self.recorder.count("fcm.invalid_token")
                return _invalid_argument("The registration token is not a valid FCM registration token",
                                         "message.token")
            if plan.is_unregistered(token):
                self.recorder.count("fcm.unregistered")
                return fcm_error(404)
        if is_validate_only(request):
            # FCM validates and answers with a fake message name; nothing is delivered.
            self.recorder.count("fcm.validated")
            name = f"projects/{project}/messages/fake_message_id"
        else:
            name = f"projects/{project}/messages/{self._id_prefix}:{next(self._ids)}"
            self._record(name, token, message)
        return Response(200, JSON_HEADERS, b'{"name":"' + name.encode() + b'"}', plan.resets())

    def _problem(self, request: Any, body: bytes) -> SchemaProblem | None:
        """:func:`fcm_request_problem`, remembered per message shape (the body without its token)."""
        message = request.get("message") if isinstance(request, dict) else None
        token = message.get("token") or message.get("fid") if isinstance(message, dict) else None
        if not isinstance(token, str) or not token:
            return fcm_request_problem(request)
        shape = body.replace(orjson.dumps(token), b"")
        verdicts = self._verdicts
        if shape in verdicts:
            return verdicts[shape]
        problem = fcm_request_problem(request)
        if len(verdicts) >= VERDICT_CACHE_SIZE:
            verdicts.clear()
        verdicts[shape] = problem
        return problem

    def _record(self, name: str, token: str | None, message: dict[str, Any]) -> None:
        self.recorder.count("fcm.accepted")
        self.recorder.record("fcm", {"ts": time.time(), "name": name, "token": token, "message": message})
