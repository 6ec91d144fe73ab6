"""The sandbox as one raw ASGI app: FCM v1, SendGrid v3 and a small control API on one port (FCM's
``messages:send`` also on a listener of its own, :mod:`.fcm_listener`, on the same loop).

No framework: a request is routed by a couple of string comparisons, so the sandbox costs little next
to the worker it is measuring. Paths:

* ``POST /token`` (OAuth2 for service accounts), ``POST /v1/projects/{p}/messages:send`` (FCM v1)
* ``POST /v3/mail/send`` (SendGrid v3)
* ``POST /2010-04-01/Accounts/{sid}/Messages.json`` and ``Calls.json`` (Twilio, see :mod:`.twilio`)
* ``GET|PUT|PATCH|DELETE /_sandbox/faults``, ``GET|DELETE /_sandbox/records``, ``GET /_sandbox/stats``,
  ``GET /_sandbox/info``, ``POST /_sandbox/events`` (post signed webhook events for accepted mail),
  ``POST /_sandbox/keys`` (trust another service-account key), ``POST /_sandbox/twilio/inbound`` (a phone
  texts or calls one of our numbers), ``POST /_sandbox/twilio/block`` (a phone blocks a number), ``GET /healthz``

The control API hands out the SendGrid API key and can change or clear everything, so a sandbox that
listens beyond loopback requires a control token on it (``Authorization: Bearer <token>``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx

from dispatcher.errors import DispatcherError
from dispatcher.sandbox.credentials import TokenAuthority, TrustedAccount, trust_account
from dispatcher.sandbox.faults import Faults, InvalidFaultPlan
from dispatcher.sandbox.fcm import FcmSandbox
from dispatcher.sandbox.fcm_listener import FcmProtocol
from dispatcher.sandbox.http import Response, header, json_response
from dispatcher.sandbox.recorder import MEMORY_LIMIT, STREAMS, Recorder
from dispatcher.sandbox.sendgrid import SendgridSandbox
from dispatcher.sandbox.twilio import API_PREFIX as TWILIO_PREFIX
from dispatcher.sandbox.twilio import TwilioSandbox, parse_control
from dispatcher.sandbox.webhook import (
    WebhookDeliveryFailed,
    build_event,
    load_or_create_webhook_key,
    post_events,
    public_key_text,
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: How often buffered records are written to their files.
FLUSH_INTERVAL_SECONDS = 0.5
#: How often a worker looks for fault plans changed through another worker (multi-worker mode).
FAULTS_POLL_SECONDS = 0.25

_FCM_PREFIX = "/v1/projects/"
_FCM_SUFFIX = "/messages:send"
_CONTROL_UNAUTHORIZED = json_response(
    401, {"error": "the control API needs the sandbox's control token as 'Authorization: Bearer <token>'"},
    [(b"www-authenticate", b'Bearer realm="dispatcher-sandbox"')])
_NOT_FOUND = json_response(404, {"error": {"code": 404, "message": "Not Found", "status": "NOT_FOUND"}})


def _read_or_create(path: Path, make: Callable[[], str]) -> str:
    """A small secret shared by every worker using the same records directory."""
    if path.is_file():
        return path.read_text().strip()
    value = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{secrets.token_hex(4)}.tmp")
    tmp.write_text(value)
    tmp.chmod(0o600)
    with contextlib.suppress(FileExistsError):
        # First writer wins, so concurrent workers agree on one value.
        os.link(tmp, path)
    tmp.unlink(missing_ok=True)
    return path.read_text().strip()


class SandboxApp:
    """State and routing of one sandbox process; see the module docstring for the paths."""

    def __init__(
        self,
        records_dir: str | Path,
        *,
        api_key: str | None = None,
        webhook_url: str | None = None,
        events_interval: float | None = None,
        memory_limit: int = MEMORY_LIMIT,
        shared_faults: bool = False,
        control_token: str | None = None,
        twilio_webhook_base: str | None = None,
    ) -> None:
        self.records_dir = Path(records_dir).resolve()
        state_dir = self.records_dir / "state"
        self.keys_dir = state_dir / "keys"
        self.keys_dir.mkdir(parents=True, exist_ok=True)
        self.api_key = api_key or _read_or_create(
            state_dir / "sendgrid_api_key", lambda: "SG.sandbox." + secrets.token_urlsafe(24)
        )
        secret = _read_or_create(state_dir / "token_secret", lambda: secrets.token_hex(32)).encode()
        self.webhook_key = load_or_create_webhook_key(state_dir / "webhook_key.pem")
        self.webhook_public_key = public_key_text(self.webhook_key)
        (self.records_dir / "webhook_public_key.txt").write_text(self.webhook_public_key + "\n")
        self.webhook_url = webhook_url
        self.events_interval = events_interval
        self.faults = Faults()
        self.recorder = Recorder(self.records_dir, memory_limit)
        self.tokens = TokenAuthority(secret, self.keys_dir)
        self.fcm = FcmSandbox(self.tokens, self.faults, self.recorder)
        self.sendgrid = SendgridSandbox(self.api_key, self.faults, self.recorder)
        self.twilio = TwilioSandbox(
            _read_or_create(state_dir / "twilio_account_sid", lambda: "AC" + secrets.token_hex(16)),
            _read_or_create(state_dir / "twilio_auth_token", lambda: secrets.token_hex(16)),
            self.faults, self.recorder, twilio_webhook_base)
        self._faults_file = state_dir / "faults.json"
        self._shared_faults = shared_faults
        self._faults_seen = 0.0
        self._next_faults_poll = 0.0
        self._pending_lock = threading.Lock()
        self._unsent: list[dict[str, Any]] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.info: dict[str, Any] = {}
        #: FCM's own listener (:mod:`.fcm_listener`): a bound socket and its TLS context, served from startup.
        self.fcm_listener: tuple[socket.socket, ssl.SSLContext | None] | None = None
        #: Bearer token the control API requires (None: no token, only for a sandbox bound to loopback).
        self._control_auth = f"Bearer {control_token}".encode() if control_token else None

    # -- ASGI --------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            response = await self._handle(scope, receive)
            if response.cut:
                # Headers (chunked, so even an empty 202 is unfinished) and half the body, then the app
                # returns with the response incomplete and uvicorn closes the connection: the client
                # sees it die mid-response, after the provider accepted the call.
                await send({"type": "http.response.start", "status": response.status, "headers": response.headers})
                await send({"type": "http.response.body", "body": response.body[:len(response.body) // 2],
                            "more_body": True})
                return
            headers = [*response.headers, (b"content-length", str(len(response.body)).encode())]
            await send({"type": "http.response.start", "status": response.status, "headers": headers})
            await send({"type": "http.response.body", "body": response.body})
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        tasks: list[asyncio.Task[None]] = []
        listener: asyncio.AbstractServer | None = None
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.loop = asyncio.get_running_loop()
                if self.fcm_listener is not None:
                    sock, context = self.fcm_listener
                    listener = await self.loop.create_server(lambda: FcmProtocol(self.fcm), sock=sock, ssl=context,
                                                             backlog=4096)
                tasks.append(asyncio.create_task(self._flush_forever()))
                if self.webhook_url and self.events_interval:
                    tasks.append(asyncio.create_task(self._events_forever(self.events_interval)))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for task in tasks:
                    task.cancel()
                if listener is not None:
                    listener.close()
                self.recorder.flush()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_SECONDS)
            self.recorder.flush()

    async def _events_forever(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(DispatcherError):
                await self.deliver_events()

    async def _handle(self, scope: Scope, receive: Receive) -> Response:
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        path: str = scope["path"]
        method: str = scope["method"]
        if self._shared_faults:
            self._poll_faults()
        if method == "POST":
            if path.startswith(_FCM_PREFIX) and path.endswith(_FCM_SUFFIX):
                project = path[len(_FCM_PREFIX):-len(_FCM_SUFFIX)]
                return await self.fcm.send(project, header(scope["headers"], b"authorization"), body)
            if path == "/v3/mail/send":
                return await self.sendgrid.send(header(scope["headers"], b"authorization"), body)
            if path == "/token":
                return self.fcm.token(body)
        if path.startswith(TWILIO_PREFIX):
            answer = await self.twilio.rest(method, path, header(scope["headers"], b"authorization"), body)
            if answer is not None:
                return answer
        if path.startswith("/_sandbox/"):
            if self._control_auth is not None and not hmac.compare_digest(
                header(scope["headers"], b"authorization") or b"", self._control_auth
            ):
                return _CONTROL_UNAUTHORIZED
            return await self._control(method, path[len("/_sandbox/"):], scope, body)
        if path == "/healthz":
            return json_response(200, {"ok": True})
        return _NOT_FOUND

    # -- control API -------------------------------------------------------------------------------
    async def _control(self, method: str, what: str, scope: Scope, body: bytes) -> Response:
        try:
            payload: Any = json.loads(body) if body.strip() else {}
        except ValueError:
            return json_response(400, {"error": "body must be JSON"})
        query = parse_qs(scope.get("query_string", b"").decode())
        try:
            if what == "faults":
                if method in ("PUT", "PATCH"):
                    if method == "PUT":
                        self.faults.load_dict(payload)
                    else:
                        for provider, changes in payload.items():
                            self.faults.update(provider, **dict(changes))
                    self._publish_faults()
                elif method == "DELETE":
                    self.faults.reset()
                    self._publish_faults()
                return json_response(200, self.faults.to_dict())
            if what == "records":
                if method == "DELETE":
                    self.clear()
                    return json_response(200, {"cleared": True})
                stream = query.get("stream", ["fcm"])[0]
                if stream not in STREAMS:
                    return json_response(400, {"error": f"unknown stream {stream!r}; known: {list(STREAMS)}"})
                records = self.recorder.records(stream)
                offset = int(query.get("offset", ["0"])[0])
                limit = int(query.get("limit", [str(len(records))])[0])
                return json_response(200, {"stream": stream, "total": len(records),
                                           "records": records[offset:offset + limit]})
            if what == "stats":
                return json_response(200, self.recorder.summary())
            if what == "info":
                return json_response(200, {**self.info, "api_key": self.api_key,
                                           "webhook_public_key": self.webhook_public_key,
                                           "webhook_url": self.webhook_url,
                                           "records_dir": str(self.records_dir)})
            if what == "events" and method == "POST":
                posted = await self.deliver_events(payload.get("url"))
                return json_response(200, {"posted": posted})
            if what == "twilio/inbound" and method == "POST":
                asked = parse_control(payload)
                return json_response(200, await self.twilio.inbound(
                    asked["kind"], asked["from"], asked["to"], asked.get("body") or "", asked.get("url")))
            if what == "twilio/block" and method == "POST":
                asked = parse_control(payload)
                self.twilio.block(asked["phone"], asked["number"])
                return json_response(200, {"blocked": True})
            if what == "keys" and method == "POST":
                trust_account(TrustedAccount(payload["key_id"], payload["client_email"],
                                             payload["public_key_pem"]), self.keys_dir)
                return json_response(200, {"trusted": payload["key_id"]})
        except httpx.HTTPError as exc:
            return json_response(502, {"error": f"webhook delivery failed: {type(exc).__name__}"})
        except (InvalidFaultPlan, WebhookDeliveryFailed) as exc:
            return json_response(400 if isinstance(exc, InvalidFaultPlan) else 502, {"error": str(exc)})
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            return json_response(400, {"error": f"malformed control request: {exc!r}"})
        return _NOT_FOUND

    def _publish_faults(self) -> None:
        """Share the plans with sibling workers through a file (only in multi-worker mode)."""
        if not self._shared_faults:
            return
        tmp = self._faults_file.with_name(f"faults.{secrets.token_hex(4)}.tmp")
        tmp.write_text(json.dumps(self.faults.to_dict()))
        tmp.replace(self._faults_file)
        self._faults_seen = self._faults_file.stat().st_mtime

    def _poll_faults(self) -> None:
        now = time.monotonic()
        if now < self._next_faults_poll:
            return
        self._next_faults_poll = now + FAULTS_POLL_SECONDS
        try:
            mtime = self._faults_file.stat().st_mtime
        except FileNotFoundError:
            return
        if mtime != self._faults_seen:
            self._faults_seen = mtime
            with contextlib.suppress(ValueError, InvalidFaultPlan):
                self.faults.load_dict(json.loads(self._faults_file.read_text()))

    # -- used by both the control API and SandboxServer --------------------------------------------
    def clear(self) -> None:
        """Forget every record and pending webhook event (the files too)."""
        self.recorder.clear()
        self.twilio.clear()
        with self._pending_lock:
            self.sendgrid.pending = []

    def take_events(self) -> list[dict[str, Any]]:
        """Events for every recipient accepted since the last call (bounces etc. per the fault plan)."""
        with self._pending_lock:
            recipients, self.sendgrid.pending = self.sendgrid.pending, []
        plan = self.faults.sendgrid
        stamp = int(time.time())
        events = []
        for recipient in recipients:
            email = recipient["email"]
            kind = plan.events.get(email) or ("bounce" if plan.is_unregistered(email) else "delivered")
            events.append(build_event(recipient, kind, stamp))
        return events

    async def deliver_events(self, url: str | None = None) -> int:
        """POST signed events for accepted mail to ``url`` (default: the configured webhook URL)."""
        target = url or self.webhook_url
        if not target:
            raise WebhookDeliveryFailed("no event webhook URL configured")
        events = self._unsent + self.take_events()
        self._unsent = []
        if not events:
            return 0
        try:
            posted = await post_events(target, self.webhook_key, events)
        except (WebhookDeliveryFailed, OSError, httpx.HTTPError) as exc:
            # Nothing is lost: the events are posted again on the next delivery.
            self._unsent = events
            raise WebhookDeliveryFailed(f"event webhook delivery failed: {exc}") from exc
        for event in events:
            self.recorder.record("events", event)
        return posted
