"""SendGrid's event webhook: a small raw ASGI app that turns bounces and unsubscribes into suppressions.

A post is verified (signature and age) before its body is even parsed; unsigned, tampered or stale
posts get 403; a body that is not a JSON array of objects, or nests deeper than ``MAX_JSON_DEPTH``,
gets 400. The suppressing events (:mod:`dispatcher.preferences.sendgrid_events`) are stored in
``webhook_events`` under a new batch id and only that id goes on the queue (addresses never travel
through Redis); a worker applies the batch. Events carry SendGrid's ``sg_event_id``, so duplicates
inside a post, across posts and replays change nothing.

Any path accepts the POST (SendGrid lets you choose the URL); ``GET /healthz`` answers 200.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from dispatcher.asgi import Receive, Scope, Send, read_body, respond
from dispatcher.config import Settings, get_settings
from dispatcher.errors import ConfigurationError, WebhookRejected
from dispatcher.preferences.feedback import record_webhook_events
from dispatcher.preferences.signature import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    load_public_key,
    verify_event_webhook,
)
from dispatcher.unsubscribe import UnsubscribeApp

logger = logging.getLogger(__name__)

#: Largest body accepted; SendGrid batches events into posts well below this.
MAX_BODY_BYTES = 8 * 1024 * 1024
#: Deepest nesting of arrays and objects accepted: an event is an object inside the array, and its
#: deepest field (``pool``, ``category``) adds two more levels.
MAX_JSON_DEPTH = 8

#: Takes the events of one verified post, stores and enqueues them; returns how many were kept.
Accept = Callable[[list[dict[str, Any]]], int]

_SIGNATURE = SIGNATURE_HEADER.lower().encode()
_TIMESTAMP = TIMESTAMP_HEADER.lower().encode()


def store_and_enqueue(events: list[dict[str, Any]], *, unsubscribe_group: int = 0) -> int:
    """Store the suppressing events of one post and enqueue their batch id for a worker."""
    from dispatcher.db import get_pool
    from dispatcher.preferences.actors import sendgrid_events

    with get_pool().connection() as conn:
        batch_id, kept = record_webhook_events(conn, events, unsubscribe_group=unsubscribe_group)
    if kept:
        sendgrid_events.send(batch_id)
    return kept


class EventWebhookApp:
    """The ASGI app; ``accept`` runs in a thread because it talks to PostgreSQL and Redis."""

    def __init__(
        self,
        public_key: ec.EllipticCurvePublicKey,
        accept: Accept = store_and_enqueue,
        *,
        clock: Callable[[], float] = time.time,
        unsubscribe: UnsubscribeApp | None = None,
    ) -> None:
        self.public_key = public_key
        self.accept = accept
        self.clock = clock
        self.unsubscribe = unsubscribe  # the signed one-click unsubscribe links, at their own path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if self.unsubscribe is not None and scope["path"] == self.unsubscribe.path:
            await self.unsubscribe(scope, receive, send)
            return
        if scope["method"] == "GET" and scope["path"] == "/healthz":
            await respond(send, 200, b"ok")
            return
        if scope["method"] != "POST":
            await respond(send, 405, b"POST signed SendGrid events here")
            return
        body = await read_body(receive, MAX_BODY_BYTES)
        if body is None:
            await respond(send, 413, b"body too large")
            return
        headers = dict(scope["headers"])
        try:
            verify_event_webhook(
                self.public_key,
                body,
                _header(headers, _SIGNATURE),
                _header(headers, _TIMESTAMP),
                now=self.clock(),
            )
            events = _parse_events(body)
        except WebhookRejected as rejected:
            logger.warning("event webhook post refused: %s", rejected)
            await respond(send, rejected.status, str(rejected).encode())
            return
        try:
            kept = await asyncio.to_thread(self.accept, events)
        except Exception as error:  # answer 500 so SendGrid retries; log the kind of failure only
            logger.error("event webhook post could not be stored: %s", type(error).__name__)
            await respond(send, 500, b"try again later")
            return
        logger.info("event webhook post accepted: %d events, %d suppressing", len(events), kept)
        await respond(send, 200, json.dumps({"received": len(events), "kept": kept}).encode(),
                       content_type=b"application/json")


def _header(headers: Mapping[bytes, bytes], name: bytes) -> str | None:
    value = headers.get(name)
    return None if value is None else value.decode("latin-1")


def _parse_events(body: bytes) -> list[dict[str, Any]]:
    try:
        events = json.loads(body)
    except ValueError:  # also a body that is not UTF-8
        raise WebhookRejected("event webhook body is not JSON", status=400) from None
    except RecursionError:
        raise WebhookRejected("event webhook body is nested too deeply", status=400) from None
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise WebhookRejected("event webhook body must be a JSON array of events", status=400)
    if _depth(events) > MAX_JSON_DEPTH:
        raise WebhookRejected("event webhook body is nested too deeply", status=400)
    return events


def _depth(value: Any) -> int:
    """How deeply arrays and objects nest in a parsed JSON value (iterative: no recursion to exhaust)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if level <= MAX_JSON_DEPTH:
                stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def create_app(settings: Settings | None = None, accept: Accept | None = None) -> EventWebhookApp:
    """The webhook app for ``settings``; refuses to exist without a verification key.

    ``accept`` defaults to :func:`store_and_enqueue` with the settings' unsubscribe group.
    """
    settings = settings or get_settings()
    key_text = settings.sendgrid_webhook_public_key
    if not key_text:
        raise ConfigurationError(
            "SENDGRID_WEBHOOK_PUBLIC_KEY is not set: the event webhook cannot verify SendGrid's posts"
        )
    if accept is None:
        accept = functools.partial(store_and_enqueue, unsubscribe_group=settings.sendgrid_unsubscribe_group)
    return EventWebhookApp(load_public_key(key_text), accept, unsubscribe=UnsubscribeApp(settings))


def run_webhooks(host: str = "127.0.0.1", port: int = 8800, settings: Settings | None = None) -> None:
    """Serve the event webhook with uvicorn until interrupted (``dispatcher webhooks``)."""
    import uvicorn

    uvicorn.run(create_app(settings), host=host, port=port, access_log=False, lifespan="on",
                log_level="info")
