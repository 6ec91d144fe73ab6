"""Push notifications through FCM HTTP v1: firebase-admin builds, authorises and judges; a lean client carries.

One message per device token. firebase-admin does what it is the authority on: the service-account
credentials and OAuth2 token exchange (``GOOGLE_APPLICATION_CREDENTIALS`` or a file), building and
validating the message (``messaging.Message`` and its own JSON encoder) and turning an FCM error
response into its exception classes (``UnregisteredError``, ``QuotaExceededError``, ...). The bytes go
over keep-alive connections (:mod:`dispatcher.channels.fcm_http`: pre-encoded request heads, httptools
parsing) on one event loop per process, because every general HTTP client costs more CPU per call than
the rest of the push path: firebase-admin's async path (httpx/httpcore) 1.2-6 ms a request on this host,
aiohttp about 0.2 ms, the lean client a few tens of µs (see ``benchmarks/results/fanout.md``). At FCM's
10,000 messages a second that is the difference between a fraction of a core and twenty.

The message for a (request, camera) pair is encoded once, by firebase-admin, with a placeholder
token; each device's body is that template with its token spliced in. Every dramatiq worker thread
may call :meth:`PushChannel.send` at once: batches are handed to the process's event loop thread and
share its connections.

Errors sort into three kinds: a dead token (retired, never used again), a temporary failure (tried
again inline with backoff honouring Retry-After while the wait is short, else the resident is handed
back with ``retry_after``), and a permanent one (the row fails with the reason). A quota error stops
the rest of the batch at once and sets ``quota_exceeded`` so the caller pauses every worker.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import os
import random
import secrets
import threading
import warnings
import weakref
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import firebase_admin
import httpx
import orjson
from firebase_admin import credentials, exceptions, messaging
from google.auth.transport import requests as google_requests

from dispatcher.channels.content import PushContent, push_content
from dispatcher.channels.fcm_http import ConnectionFailed, FcmConnection, FcmConnectionPool, Stop
from dispatcher.channels.result import SendResult
from dispatcher.channels.retry_after import retry_after_seconds
from dispatcher.config import FCM_MAX_BATCH, Settings
from dispatcher.contract import CommunityRequest
from dispatcher.errors import ConfigurationError
from dispatcher.ledger import Outcome, Status

# firebase-admin 7 deprecates ``Message.token`` in favour of installation ids; FCM v1 still takes
# registration tokens, which is what residents' devices register with us.
warnings.filterwarnings("ignore", message="Message.token is deprecated", category=DeprecationWarning)

#: Keep-alive connections to FCM per worker process (HTTP/1.1: one request in flight per connection).
CONNECTIONS = 64
#: Attempts per message inside one batch for temporary failures (5xx, UNAVAILABLE, INTERNAL, network).
INLINE_ATTEMPTS = 3
#: Longest wait spent retrying inside a batch; a longer Retry-After hands the resident back instead.
INLINE_WAIT_MAX_SECONDS = 2.0
#: First inline backoff step (then doubled), before jitter.
INLINE_BACKOFF_SECONDS = 0.25
#: Wait after a quota error when FCM gives no Retry-After (FCM asks for at least a minute).
QUOTA_DEFAULT_WAIT_SECONDS = 60.0
#: Wait after other temporary failures when FCM gives no Retry-After.
TEMPORARY_DEFAULT_WAIT_SECONDS = 5.0
#: Seconds for one HTTP call to FCM.
REQUEST_TIMEOUT_SECONDS = 30.0
#: Longest time one batch may take; messages not answered by then are handed back for a retry.
BATCH_DEADLINE_SECONDS = 120.0
#: Refresh the OAuth2 access token this long before it expires.
TOKEN_REFRESH_MARGIN = timedelta(minutes=5)

_app_counter = itertools.count()
_T = TypeVar("_T")
_TEMPORARY = (
    messaging.QuotaExceededError,
    exceptions.UnavailableError,
    exceptions.InternalError,
    exceptions.ResourceExhaustedError,
    exceptions.DeadlineExceededError,
    exceptions.UnknownError,
)


@dataclass(frozen=True)
class PushTarget:
    """One resident's live device tokens, and whether they have a camera."""

    resident_id: int
    tokens: tuple[str, ...]
    has_camera: bool


@dataclass
class PushResult(SendResult):
    """What happened to one push batch; ``retry_after`` is set whenever ``retry`` is not empty."""

    #: token → reason, to retire: FCM says the token is dead.
    retired_tokens: dict[str, str] = field(default_factory=dict)
    #: messages (device tokens) in the batch.
    messages: int = 0


def build_message(token: str, content: PushContent) -> messaging.Message:
    """The FCM message for one device, with the per-request collapse id on Android and iOS."""
    ttl = timedelta(seconds=content.ttl_seconds)
    priority = "high" if content.urgent else "normal"
    expires = int(datetime.now(UTC).timestamp()) + content.ttl_seconds
    return messaging.Message(
        token=token,
        notification=messaging.Notification(title=content.title, body=content.body),
        data=content.data,
        android=messaging.AndroidConfig(
            collapse_key=content.collapse_id,
            priority=priority,
            ttl=ttl,
            notification=messaging.AndroidNotification(
                tag=content.collapse_id, click_action=content.data["action"]
            ),
        ),
        apns=messaging.APNSConfig(
            headers={
                "apns-collapse-id": content.collapse_id,
                "apns-priority": "10" if content.urgent else "5",
                "apns-push-type": "alert",
                "apns-expiration": str(expires),
            },
            payload=messaging.APNSPayload(
                aps=messaging.Aps(category=content.data["action"].upper(), thread_id=content.collapse_id)
            ),
        ),
    )


class MessageTemplate:
    """A message encoded once by firebase-admin; ``body(token)`` splices one device's token in."""

    def __init__(self, content: PushContent) -> None:
        placeholder = f"dispatcher-token-{secrets.token_hex(16)}"
        encoded = messaging._MessagingService.encode_message(build_message(placeholder, content))
        raw = orjson.dumps({"message": encoded})
        prefix, found, suffix = raw.partition(orjson.dumps(placeholder))
        if not found or orjson.dumps(placeholder) in suffix:
            raise ConfigurationError("the push template must hold the token placeholder exactly once")
        self._prefix = prefix
        self._suffix = suffix

    def body(self, token: str) -> bytes:
        return self._prefix + orjson.dumps(token) + self._suffix


def _retry_after(error: exceptions.FirebaseError) -> float | None:
    response = getattr(error, "http_response", None)
    return None if response is None else retry_after_seconds(response.headers.get("Retry-After"))


def _field_violations(error: exceptions.FirebaseError) -> set[str]:
    response = getattr(error, "http_response", None)
    if response is None:
        return set()
    try:
        details = response.json().get("error", {}).get("details", [])
    except (ValueError, AttributeError):
        return set()
    found: set[str] = set()
    for detail in details if isinstance(details, list) else []:
        for violation in detail.get("fieldViolations", []) if isinstance(detail, dict) else []:
            if isinstance(violation, dict) and isinstance(violation.get("field"), str):
                found.add(violation["field"])
    return found


def dead_token_reason(error: exceptions.FirebaseError) -> str | None:
    """Why FCM says this token will never work again, or None if the token is not to blame."""
    if isinstance(error, messaging.UnregisteredError):
        return "unregistered"
    if isinstance(error, messaging.SenderIdMismatchError):
        return "sender_id_mismatch"
    if isinstance(error, exceptions.InvalidArgumentError) and (
        "message.token" in _field_violations(error) or "registration token" in str(error).lower()
    ):
        return "invalid_token"
    return None


def failure_reason(error: exceptions.FirebaseError) -> str:
    """A short reason for the ledger, naming the FCM error (no tokens, no personal data)."""
    code = getattr(error, "code", None) or "error"
    return f"fcm_{type(error).__name__}_{code}".lower()


@dataclass
class _Answer:
    ok: bool
    error: exceptions.FirebaseError | None = None
    retry_after: float | None = None


_ACCEPTED = _Answer(True)


def _not_sent() -> exceptions.FirebaseError:
    return messaging.QuotaExceededError("not sent: the batch hit FCM's quota", cause=None, http_response=None)


def _unreachable(error: Exception) -> exceptions.FirebaseError:
    return exceptions.UnavailableError(f"FCM could not be reached: {type(error).__name__}: {error}", cause=error)


def _ignore(index: int) -> None:
    return None


async def _pumped(connection: FcmConnection, pumping: asyncio.Future[Stop | None]) -> Stop | None:
    """Wait for a pump; if the wait is cancelled (batch deadline) a late answer must not reach the next user."""
    try:
        return await pumping
    except BaseException:
        connection.close()
        raise


class _Lane:
    """One lane of a batch: the connection it holds (reopened when it breaks) and the request head."""

    __slots__ = ("_held", "authorization", "head", "pool")

    def __init__(self, pool: FcmConnectionPool, authorization: str, head: bytes) -> None:
        self.pool = pool
        self.authorization = authorization
        self.head = head
        self._held: FcmConnection | None = None

    async def connection(self) -> FcmConnection:
        held = self._held
        if held is not None and not held.closed:
            return held
        self.release()
        self._held = await self.pool.acquire()
        return self._held

    def release(self) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            self.pool.release(held)


@dataclass
class _BatchState:
    """Shared by the messages of one batch: a quota error stops the ones not yet sent."""

    stop: bool = False
    calls: int = 0
    inline_retries: int = 0


class _LoopThread:
    """An event loop in a daemon thread; coroutines from any thread run on it with :meth:`run`."""

    def __init__(self, name: str) -> None:
        try:
            import uvloop

            self.loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
            self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, _T], timeout: float | None = None) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        if not self.thread.is_alive():
            self.loop.close()


def _close_at_exit(ref: weakref.ref[PushChannel]) -> None:
    """Close a channel still open when the process ends, so its connections end cleanly."""
    channel = ref()
    if channel is not None:
        with contextlib.suppress(Exception):
            channel.close()


class PushChannel:
    """Sends pushes for one firebase-admin app configured from the settings; safe across threads."""

    def __init__(self, settings: Settings, *, connections: int = CONNECTIONS,
                 batch_deadline_seconds: float = BATCH_DEADLINE_SECONDS) -> None:
        if not settings.fcm_credentials:
            raise ConfigurationError("FCM credentials are not configured (FCM_CREDENTIALS or "
                                     "GOOGLE_APPLICATION_CREDENTIALS)")
        self.settings = settings
        self.connections = connections
        self.batch_deadline_seconds = batch_deadline_seconds
        cred = credentials.Certificate(settings.fcm_credentials)
        self.app = firebase_admin.initialize_app(cred, name=f"dispatcher-push-{next(_app_counter)}")
        self.service = messaging._get_messaging_service(self.app)
        self.url = f"{settings.fcm_endpoint.rstrip('/')}/v1/projects/{self.app.project_id}/messages:send"
        # firebase-admin's own clients would send to Google; point them at the configured endpoint too.
        self.service._fcm_url = self.url
        self._google_credential = self.service._credential
        self._headers: dict[str, str] = {
            **self.service._fcm_headers,
            "Content-Type": "application/json; charset=UTF-8",
        }
        self._heads: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._pid = -1
        self._loop: _LoopThread | None = None
        self._pool: FcmConnectionPool | None = None
        self._token_lock: asyncio.Lock | None = None
        self._templates: dict[tuple[str, bool, int, str], MessageTemplate] = {}
        atexit.register(_close_at_exit, weakref.ref(self))

    # -- lifecycle ---------------------------------------------------------------------------------
    def _loop_thread(self) -> _LoopThread:
        """The process's loop thread, started on first use (and again in a forked child)."""
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                self._loop = _LoopThread(f"dispatcher-push-{os.getpid()}")
                self._pool = None
                self._token_lock = None
                self._pid = os.getpid()
            return self._loop

    def close(self) -> None:
        """Close the connections, stop the loop thread and release the firebase-admin app."""
        with self._lock:
            loop, pool = self._loop, self._pool
            self._loop, self._pool = None, None
        if loop is not None and self._pid == os.getpid():
            if pool is not None:
                with contextlib.suppress(Exception):
                    loop.loop.call_soon_threadsafe(pool.close)
            loop.stop()
        with contextlib.suppress(ValueError):
            firebase_admin.delete_app(self.app)

    def _get_pool(self) -> FcmConnectionPool:
        """The loop's connection pool (made on the loop thread: its semaphore belongs to that loop)."""
        if self._pool is None:
            self._pool = FcmConnectionPool(self.url, self.connections, connect_timeout=REQUEST_TIMEOUT_SECONDS)
        return self._pool

    def _request_head(self, pool: FcmConnectionPool, authorization: str) -> bytes:
        """The encoded request head for this access token (kept for the token's lifetime)."""
        head = self._heads.get(authorization)
        if head is None:
            head = pool.request_head({**self._headers, "Authorization": authorization})
            self._heads = {authorization: head}
        return head

    # -- credentials -------------------------------------------------------------------------------
    def _token_fresh(self) -> bool:
        cred = self._google_credential
        expiry = cred.expiry  # naive UTC, as google-auth keeps it
        return bool(cred.token) and (
            expiry is None or expiry - TOKEN_REFRESH_MARGIN > datetime.now(UTC).replace(tzinfo=None)
        )

    async def _authorization(self, rejected: str | None = None) -> str:
        """``Bearer <access token>``, refreshed through google-auth off the loop when close to expiry.

        ``rejected``: the value FCM just refused; it is refreshed unless another lane already did, so
        a revoked token costs one exchange, not one per connection.
        """
        if self._token_lock is None:
            self._token_lock = asyncio.Lock()

        def stale() -> bool:
            return f"Bearer {self._google_credential.token}" == rejected or not self._token_fresh()

        if stale():
            async with self._token_lock:
                if stale():
                    loop = asyncio.get_running_loop()
                    await loop.run_in_executor(None, self._google_credential.refresh, google_requests.Request())
        return f"Bearer {self._google_credential.token}"

    # -- content -----------------------------------------------------------------------------------
    def template(self, request: CommunityRequest, has_camera: bool, respond_until: datetime) -> MessageTemplate:
        """The encoded message for one request and kind of resident; reused for a minute."""
        minute = int(datetime.now(UTC).timestamp()) // 60
        key = (request.id, has_camera, minute, respond_until.isoformat())
        found = self._templates.get(key)
        if found is None:
            content = push_content(request, has_camera=has_camera, settings=self.settings,
                                   respond_until=respond_until)
            found = MessageTemplate(content)
            with self._lock:
                if len(self._templates) > 256:
                    self._templates.clear()
                self._templates[key] = found
        return found

    # -- sending -----------------------------------------------------------------------------------
    def send(self, request: CommunityRequest, respond_until: datetime,
             targets: Sequence[PushTarget]) -> PushResult:
        """Send to every token of ``targets`` (at most 500 messages are expected per batch)."""
        templates = {camera: self.template(request, camera, respond_until)
                     for camera in {t.has_camera for t in targets}}
        messages = sum(len(t.tokens) for t in targets)
        if messages > FCM_MAX_BATCH * 4:
            raise ConfigurationError(f"a push batch holds {messages} messages; lease at most {FCM_MAX_BATCH}")
        return self._loop_thread().run(self._send_batch(templates, targets))

    async def _send_batch(self, templates: dict[bool, MessageTemplate],
                          targets: Sequence[PushTarget]) -> PushResult:
        """The whole batch on the loop thread: with several worker threads, the Python work of one batch
        does not hold the GIL against the loop serving the others (a 5 ms wait per switch)."""
        pairs = [(t, token) for t in targets for token in t.tokens]
        bodies = [templates[t.has_camera].body(token) for t, token in pairs]
        state = _BatchState()
        answers = await self._send_all(bodies, state)
        return self._judge(targets, pairs, answers, state)

    async def _send_all(self, bodies: list[bytes], state: _BatchState) -> list[_Answer]:
        """Send every body over at most ``connections`` lanes, each one call at a time.

        A few long-lived lanes instead of a task per message: less scheduling per message, and a lane
        looks at the batch's state before each message, so a quota error stops the rest at once.
        """
        pool = self._get_pool()
        authorization = await self._authorization()
        answers: list[_Answer | None] = [None] * len(bodies)
        indexes = iter(range(len(bodies)))

        def pending_indexes() -> Iterator[int]:
            """The next message to send; those left when a quota error stopped the batch get their answer."""
            for index in indexes:
                if state.stop:
                    answers[index] = _Answer(False, _not_sent())
                    continue
                state.calls += 1
                yield index

        def accepted(index: int) -> None:
            answers[index] = _ACCEPTED

        async def lane() -> None:
            caller = _Lane(pool, authorization, self._request_head(pool, authorization))

            def request(index: int) -> bytes:
                body = bodies[index]
                return b"%s%d\r\n\r\n%s" % (caller.head, len(body), body)

            try:
                while True:
                    try:
                        connection = await caller.connection()
                    except ConnectionFailed as error:
                        index = next(pending, -1)
                        if index < 0:
                            return
                        answers[index] = await self._send_one(caller, bodies[index], state, _unreachable(error))
                        continue
                    stop = await _pumped(connection, connection.pump(pending, request, accepted,
                                                                     REQUEST_TIMEOUT_SECONDS))
                    if stop is None:
                        return
                    index, problem = stop
                    if index >= 0:
                        first = (_unreachable(problem) if isinstance(problem, Exception)
                                 else self._firebase_error(*problem))
                        answers[index] = await self._send_one(caller, bodies[index], state, first)
            finally:
                caller.release()

        pending = pending_indexes()

        lanes = [asyncio.ensure_future(lane()) for _ in range(min(len(bodies), self.connections))]
        if lanes:
            _, late = await asyncio.wait(lanes, timeout=self.batch_deadline_seconds)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
            for task in lanes:
                if not task.cancelled() and (problem := task.exception()) is not None:
                    raise problem
        # A message cut off in flight may have reached the device: its retry is collapsed there.
        overdue = exceptions.DeadlineExceededError("not answered before the batch deadline")
        return [answer if answer is not None else _Answer(False, overdue) for answer in answers]

    async def _send_one(self, caller: _Lane, body: bytes, state: _BatchState,
                        first: exceptions.FirebaseError) -> _Answer:
        """The rest of one message's life after its first call failed with ``first``: retries and all."""
        refreshed = False
        attempt = 0
        error: exceptions.FirebaseError | None = first
        while True:
            if attempt > 0:
                if state.stop:
                    return _Answer(False, _not_sent())
                state.calls += 1
                error = await self._post(caller, body)
            attempt += 1
            if error is None:
                return _ACCEPTED
            if isinstance(error, exceptions.UnauthenticatedError) and not refreshed:
                # The access token was revoked or expired early: one fresh token, then try again.
                refreshed = True
                caller.authorization = await self._authorization(rejected=caller.authorization)
                caller.head = self._request_head(caller.pool, caller.authorization)
                continue
            wait = _retry_after(error)
            if isinstance(error, messaging.QuotaExceededError | exceptions.ResourceExhaustedError):
                state.stop = True
                return _Answer(False, error, wait)
            if not isinstance(error, _TEMPORARY) or attempt >= INLINE_ATTEMPTS:
                return _Answer(False, error, wait)
            backoff = INLINE_BACKOFF_SECONDS * 2 ** (attempt - 1) * (0.5 + random.random() / 2)
            delay = max(backoff, wait or 0.0)
            if delay > INLINE_WAIT_MAX_SECONDS:
                return _Answer(False, error, wait)
            state.inline_retries += 1
            await asyncio.sleep(delay)

    async def _post(self, caller: _Lane, body: bytes) -> exceptions.FirebaseError | None:
        """One HTTP call; None when FCM accepted the message, else firebase-admin's exception for it."""
        request = b"%s%d\r\n\r\n%s" % (caller.head, len(body), body)
        while True:
            try:
                connection = await caller.connection()
            except ConnectionFailed as error:
                return _unreachable(error)
            stop = await _pumped(connection, connection.pump(iter((0,)), lambda _: request, _ignore,
                                                             REQUEST_TIMEOUT_SECONDS))
            if stop is None:
                return None
            index, problem = stop
            if index >= 0:
                return _unreachable(problem) if isinstance(problem, Exception) else self._firebase_error(*problem)

    def _firebase_error(self, status: int, headers: list[tuple[str, str]],
                        content: bytes) -> exceptions.FirebaseError:
        """The exception firebase-admin raises for this FCM response (its own parser and classes)."""
        request = httpx.Request("POST", self.url)
        response = httpx.Response(status, headers=headers, content=content, request=request)
        error = httpx.HTTPStatusError(f"FCM answered {status}", request=request, response=response)
        result: exceptions.FirebaseError = self.service._handle_fcm_httpx_error(error)
        return result

    # -- outcomes ----------------------------------------------------------------------------------
    def _judge(self, targets: Sequence[PushTarget], pairs: Sequence[tuple[PushTarget, str]],
               answers: Sequence[_Answer], state: _BatchState) -> PushResult:
        result = PushResult(messages=len(pairs), calls=state.calls, inline_retries=state.inline_retries)
        delivered: set[int] = set()
        temporary: set[int] = set()
        failed: dict[int, str] = {}
        waits: list[float] = []
        for (target, token), answer in zip(pairs, answers, strict=True):
            if answer.ok:
                result.accepted += 1
                delivered.add(target.resident_id)
                continue
            error = answer.error
            assert error is not None
            dead = dead_token_reason(error)
            if dead:
                result.retired_tokens[token] = dead
                failed.setdefault(target.resident_id, f"token_{dead}")
            elif isinstance(error, _TEMPORARY):
                temporary.add(target.resident_id)
                quota = isinstance(error, messaging.QuotaExceededError | exceptions.ResourceExhaustedError)
                result.quota_exceeded = result.quota_exceeded or quota
                if answer.retry_after is not None:
                    waits.append(answer.retry_after)
            else:
                failed.setdefault(target.resident_id, failure_reason(error))
        for target in targets:
            rid = target.resident_id
            if rid in delivered:
                result.outcomes[rid] = Outcome(Status.SENT)
            elif rid in temporary:
                result.retry.append(rid)
            else:
                result.outcomes[rid] = Outcome(Status.FAILED, failed.get(rid, "no_token_accepted"))
        if result.retry:
            # Retry-After is a floor. After a quota error it is the wait; after other failures (already
            # retried inline) the residents wait at least the default too.
            if result.quota_exceeded:
                result.retry_after = max(waits) if waits else QUOTA_DEFAULT_WAIT_SECONDS
            else:
                result.retry_after = max([*waits, TEMPORARY_DEFAULT_WAIT_SECONDS])
        return result
