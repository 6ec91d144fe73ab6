"""The push channel: FCM HTTP v1 through firebase-admin's credentials and encoding, over an injectable transport.

firebase-admin does what it is the authority on: the service-account credentials and OAuth2 token
exchange, building and validating the message and mapping FCM's errors to its exception classes. The
bytes go over a :class:`~.transport.PushTransport` on one event loop thread per process, shared by
every dramatiq worker thread: by default the lean client (:mod:`.fcm_http`), because every general
HTTP client costs more CPU per call than the rest of the push path (see
``benchmarks/results/fanout.md``); :class:`~.httpx_transport.HttpxTransport` is the reference.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import os
import threading
import weakref
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import firebase_admin
import psycopg
from firebase_admin import credentials, exceptions

from dispatcher import ledger
from dispatcher.channels.base import Eligible
from dispatcher.channels.concurrency import AdaptiveLimit, Sizing
from dispatcher.channels.content import content_locale, push_content, readers
from dispatcher.channels.i18n import DEFAULT_LOCALE, ContentLocale
from dispatcher.channels.push.access_token import AccessToken
from dispatcher.channels.push.fcm_http import FcmConnectionPool
from dispatcher.channels.push.firebase_private import fcm_error
from dispatcher.channels.push.judge import PushResult, expired, judge
from dispatcher.channels.push.lanes import REQUEST_TIMEOUT_SECONDS, BatchState, LaneEngine
from dispatcher.channels.push.loop import LoopThread
from dispatcher.channels.push.message import MessageTemplate
from dispatcher.channels.push.sockets import connection_budget
from dispatcher.channels.push.transport import HttpAnswer, PushTransport, TransportFactory
from dispatcher.channels.result import SendResult
from dispatcher.config import FCM_MAX_BATCH, Settings
from dispatcher.contract import PublishedRequest
from dispatcher.db import get_pool
from dispatcher.errors import ConfigurationError
from dispatcher.ops import metrics
from dispatcher.preferences import eligibility

#: Fewest calls in flight per worker process (HTTP/1.1: one per keep-alive connection), whatever the latency.
MIN_CALLS_IN_FLIGHT = 64
#: Most calls (and keep-alive connections) in flight per worker process: bounds memory and sockets. FCM's
#: 10,000 a second at 100 ms (with its tail) needs about 1,300; 1,024 capped a worker near 8,000 a second.
CONNECTIONS = 2048
#: The call latency assumed before the first answer (the limit then follows the observed average).
INITIAL_LATENCY_SECONDS = 0.02
#: Longest time one batch may take; messages not answered by then are handed back for a retry.
BATCH_DEADLINE_SECONDS = 60.0
#: Time kept between a batch's deadline and the end of its lease, for recording its outcomes.
RECORD_MARGIN_SECONDS = 2.0
#: Longest a worker process's warm-up waits for its access token.
WARM_UP_TIMEOUT_SECONDS = 30.0
#: How long an encoded message is reused (its time to live counts from the end of this period).
TEMPLATE_SECONDS = 60

_app_counter = itertools.count()


class Devices(Protocol):
    """What a push needs about one resident: their live device tokens, their locale and whether they have a camera."""

    @property
    def tokens(self) -> Sequence[str]: ...

    @property
    def locale(self) -> str: ...

    @property
    def has_camera(self) -> bool: ...


def _lean(url: str, headers: Mapping[str, str], connections: int) -> PushTransport:
    return FcmConnectionPool(url, headers, connections, connect_timeout=REQUEST_TIMEOUT_SECONDS)


def _close_at_exit(ref: weakref.ref[PushChannel]) -> None:
    """Close a channel still open when the process ends, so its connections end cleanly."""
    channel = ref()
    if channel is not None:
        with contextlib.suppress(Exception):
            channel.close()


class PushChannel:
    """Sends pushes for one firebase-admin app configured from the settings; safe across threads."""

    kind = ledger.Channel.PUSH
    provider = "fcm"

    def __init__(self, settings: Settings, *, connections: int = CONNECTIONS,
                 batch_deadline_seconds: float = BATCH_DEADLINE_SECONDS,
                 transport: TransportFactory = _lean) -> None:
        """Cheap: the firebase-admin app is made on the first send, so checking eligibility needs no credentials.

        Calls in flight follow the configured push rate times the observed call latency, between
        :data:`MIN_CALLS_IN_FLIGHT` and ``connections`` (the most keep-alive connections held). A batch
        ends before its ledger lease does, with time left to record it, so no other worker claims rows
        still being sent.
        """
        self.settings = settings
        connections = connection_budget(connections)
        self.sizing = Sizing(max(1.0, settings.push_rate_per_minute / 60.0),
                             minimum=max(1, min(MIN_CALLS_IN_FLIGHT, connections)), maximum=max(1, connections))
        self.batch_deadline_seconds = min(batch_deadline_seconds,
                                          max(1.0, settings.lease_seconds - RECORD_MARGIN_SECONDS))
        self.transport = transport
        # The headers firebase-admin sends with every FCM call (its messaging service), written out.
        self._headers: dict[str, str] = {
            "X-GOOG-API-FORMAT-VERSION": "2",
            "X-FIREBASE-CLIENT": f"fire-admin-python/{firebase_admin.__version__}",
            "Content-Type": "application/json; charset=UTF-8",
        }
        self._lock = threading.Lock()
        self._pid = -1
        self._app: firebase_admin.App | None = None
        self._url = ""
        self._loop: LoopThread | None = None
        self._engine: LaneEngine | None = None
        self._templates: dict[tuple[str, bool, ContentLocale, int, str], MessageTemplate] = {}
        atexit.register(_close_at_exit, weakref.ref(self))

    def _firebase(self) -> firebase_admin.App:
        """The firebase-admin app (credentials, project id), made on first use."""
        with self._lock:
            if self._app is None:
                if not self.settings.fcm_credentials:
                    raise ConfigurationError("FCM credentials are not configured (FCM_CREDENTIALS or "
                                             "GOOGLE_APPLICATION_CREDENTIALS)")
                cred = credentials.Certificate(self.settings.fcm_credentials)
                self._app = firebase_admin.initialize_app(cred, name=f"dispatcher-push-{next(_app_counter)}")
                endpoint = self.settings.fcm_endpoint.rstrip("/")
                self._url = f"{endpoint}/v1/projects/{self._app.project_id}/messages:send"
            return self._app

    @property
    def url(self) -> str:
        """FCM's ``messages:send`` for the credentials' project at the configured endpoint."""
        self._firebase()
        return self._url

    # -- lifecycle ---------------------------------------------------------------------------------
    def _loop_thread(self) -> LoopThread:
        """The process's loop thread, started on first use (and again in a forked child)."""
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                self._loop = LoopThread(f"dispatcher-push-{os.getpid()}")
                self._engine = None
                self._pid = os.getpid()
            return self._loop

    def _lanes(self) -> LaneEngine:
        """The loop's engine and transport (made on the loop thread: its semaphores belong to that loop)."""
        if self._engine is None:
            credential = self._firebase().credential.get_credential()
            self._engine = LaneEngine(
                self.transport(self.url, self._headers, self.sizing.maximum), AccessToken(credential),
                self._to_error, limit=AdaptiveLimit(self.sizing, INITIAL_LATENCY_SECONDS),
                batch_deadline_seconds=self.batch_deadline_seconds)
        return self._engine

    def warm_up(self) -> None:
        """Start the loop and take an OAuth2 access token now, so a worker's first batch waits for neither.

        A fresh worker process otherwise pays both on its first push: the token is a round trip to
        Google's OAuth2 endpoint, at the moment a request's first residents are waiting.
        """

        async def authorize() -> None:
            await self._lanes().token.authorization()

        self._loop_thread().run(authorize(), timeout=WARM_UP_TIMEOUT_SECONDS)

    @property
    def calls_in_flight(self) -> AdaptiveLimit | None:
        """The process's limit on calls in flight (its size, use and peak), once the first batch made it."""
        engine = self._engine
        return engine.limit if engine is not None else None

    def _to_error(self, answer: HttpAnswer) -> exceptions.FirebaseError:
        return fcm_error(self.url, answer.status, answer.headers, answer.body)

    def close(self) -> None:
        """Close the connections, stop the loop thread and release the firebase-admin app."""
        with self._lock:
            loop, engine = self._loop, self._engine
            self._loop, self._engine = None, None
        if loop is not None and self._pid == os.getpid():
            if engine is not None:
                with contextlib.suppress(Exception):
                    loop.call_soon(engine.transport.close)
            loop.stop()
        with self._lock:
            app, self._app = self._app, None
        if app is not None:
            with contextlib.suppress(ValueError):
                firebase_admin.delete_app(app)

    # -- the Channel protocol ----------------------------------------------------------------------
    def eligible(self, conn: psycopg.Connection[Any], request_id: str,
                 resident_ids: Sequence[int]) -> Eligible[Devices]:
        """Residents with live tokens and push on; the rest skipped with the reason."""
        reachable, skipped = eligibility.eligible_push_targets(conn, request_id, resident_ids)
        return Eligible(dict(reachable),
                        {rid: ledger.Outcome(ledger.Status.SKIPPED, reason) for rid, reason in skipped.items()})

    def template(self, request: PublishedRequest, has_camera: bool, respond_until: datetime,
                 locale: ContentLocale | str = DEFAULT_LOCALE) -> MessageTemplate:
        """The encoded message for one request, kind of resident and locale, reused for :data:`TEMPLATE_SECONDS`.

        Its time to live counts from the end of that period, so no copy outlives the response window.
        """
        period = int(datetime.now(UTC).timestamp()) // TEMPLATE_SECONDS
        loc = content_locale(locale)
        key = (request.id, has_camera, loc, period, respond_until.isoformat())
        found = self._templates.get(key)
        if found is None:
            period_end = datetime.fromtimestamp((period + 1) * TEMPLATE_SECONDS, UTC)
            content = push_content(request, has_camera=has_camera, settings=self.settings,
                                   respond_until=respond_until, now=period_end, locale=loc)
            found = MessageTemplate(content)
            with self._lock:
                if len(self._templates) > 256:
                    self._templates.clear()
                self._templates[key] = found
        return found

    def send(self, request: PublishedRequest, respond_until: datetime,
             recipients: Mapping[int, Devices]) -> PushResult:
        """Send to every token of ``recipients`` (at most 500 messages are expected per batch).

        Nothing goes out once ``respond_until`` has passed: those residents' rows expire.
        """
        self._firebase()  # the first send makes the app: a missing credential is a clear error here
        left = (respond_until - datetime.now(UTC)).total_seconds()
        if left <= 0:
            return expired(list(recipients))
        messages = sum(len(devices.tokens) for devices in recipients.values())
        if messages > FCM_MAX_BATCH * 4:
            raise ConfigurationError(f"a push batch holds {messages} messages; lease at most {FCM_MAX_BATCH}")
        # One message per group of readers the batch holds (camera and locale, or locale alone for an alert).
        kinds = {rid: readers(request, has_camera=devices.has_camera, locale=devices.locale)
                 for rid, devices in recipients.items()}
        templates = {kind: self.template(request, kind.has_camera, respond_until, kind.locale)
                     for kind in set(kinds.values())}
        by_resident = {rid: templates[kind] for rid, kind in kinds.items()}
        return self._loop_thread().run(self._send_batch(by_resident, recipients, left, request.urgent))

    async def _send_batch(self, templates: Mapping[int, MessageTemplate], recipients: Mapping[int, Devices],
                          left: float, urgent: bool = False) -> PushResult:
        """The whole batch on the loop thread: with several worker threads, the Python work of one batch
        does not hold the GIL against the loop serving the others."""
        cutoff = asyncio.get_running_loop().time() + left
        pairs = [(rid, token) for rid, devices in recipients.items() for token in devices.tokens]
        bodies = [templates[rid].body(token) for rid, token in pairs]
        state = BatchState()
        answers = await self._lanes().send_all(bodies, state, cutoff, urgent)
        return judge(list(recipients), pairs, answers, state)

    def after_recording(self, result: SendResult) -> None:
        """Retire the tokens FCM called dead, once the batch is recorded."""
        if isinstance(result, PushResult) and result.retired_tokens:
            with get_pool().connection() as conn:
                eligibility.retire_tokens(conn, result.retired_tokens)
            metrics.record_retired_tokens(len(result.retired_tokens))


