"""The relay over HTTP: Twilio's signed webhooks and the app-facing Contact Me routes.

Twilio's routes (``POST /relay/twilio/sms``, ``POST /relay/twilio/voice``) accept only requests whose
``X-Twilio-Signature`` matches the auth token and the *public* URL Twilio posted to
(``RELAY_PUBLIC_BASE_URL`` + path + query): behind a proxy or a load balancer the address this process
sees is not the one Twilio signed. The app's routes (``/relay/posts/...``) require
``Authorization: Bearer <RELAY_API_TOKEN>`` and never answer with a real number.

:func:`relay_routes` gives the routes for the main API to include; :func:`create_relay_app` serves them
alone (``dispatcher relay``).

An ordinary text (no keyword: nearly every webhook) costs one signature computed once, one statement
awaited on the event loop's own connection pool (:func:`dispatcher.relay.inbound.relay_plain_text`) and
a hand-off of the stored text's id to the enqueueing thread; the answer does not wait for Redis.
Keywords, calls and the app's routes run their transactions in Starlette's thread pool (synchronous
psycopg).
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import orjson
import psycopg
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from twilio.request_validator import RequestValidator

from dispatcher.config import Settings, get_settings
from dispatcher.db.types import Conn
from dispatcher.relay import inbound, outbox, posts, rules
from dispatcher.relay.errors import (
    InvalidPhoneNumber,
    PostNotContactable,
    ProxyPoolExhausted,
    RelayError,
    RelaySignatureRejected,
    UnknownPost,
)
from dispatcher.relay.metrics import relay_metrics
from dispatcher.relay.sessions import start_contact

log = logging.getLogger(__name__)

#: Largest webhook or API body read (Twilio's SMS form is a few kilobytes).
MAX_BODY_BYTES = 64 * 1024
TWIML = "application/xml"
_STATUS = {InvalidPhoneNumber: 422, UnknownPost: 404, PostNotContactable: 409, ProxyPoolExhausted: 503}


def _connection() -> Any:
    from dispatcher.db import get_pool

    return get_pool().connection()


@lru_cache(maxsize=8)
def _public_base(configured: str) -> tuple[str, str, str]:
    base = urlsplit(configured)
    return base.scheme, base.netloc, base.path.rstrip("/")


def public_url(settings: Settings, request: Request) -> str:
    """The URL Twilio signed: the configured public base with this request's path and query."""
    scheme, netloc, path = _public_base(settings.relay_public_base_url)
    return urlunsplit((scheme, netloc, path + request.url.path, request.url.query, ""))


@lru_cache(maxsize=8)
def _validator(auth_token: str) -> RequestValidator:
    return RequestValidator(auth_token)


def signature_matches(auth_token: str, url: str, form: dict[str, str], signature: str) -> bool:
    """Twilio's check, the signature computed once for the URL as configured.

    The library's ``validate`` computes it twice (the URL with and without its port); that second form
    only matters for a URL configured differently from what Twilio posts to, so it is tried only after
    a mismatch.
    """
    validator = _validator(auth_token)
    if hmac.compare_digest(validator.compute_signature(url, form), signature):
        return True
    return bool(validator.validate(url, form, signature))


async def _body(request: Request) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise RelayError("body too large")
        chunks.append(chunk)
    return b"".join(chunks)


async def verified_form(request: Request, settings: Settings) -> dict[str, str]:
    """The webhook's form fields, if the signature is Twilio's; :class:`RelaySignatureRejected` otherwise."""
    signature = request.headers.get("x-twilio-signature")
    if not signature or not settings.twilio_auth_token:
        raise RelaySignatureRejected("missing X-Twilio-Signature")
    try:
        form = dict(parse_qsl((await _body(request)).decode("utf-8"), keep_blank_values=True,
                              max_num_fields=100, strict_parsing=False))
    except (UnicodeDecodeError, ValueError):
        raise RelaySignatureRejected("malformed form body") from None
    if not signature_matches(settings.twilio_auth_token, public_url(settings, request), form, signature):
        raise RelaySignatureRejected("X-Twilio-Signature does not match")
    return form


def _in_transaction(work: Callable[[Conn], inbound.InboundResult]) -> inbound.InboundResult:
    """Run ``work`` in one transaction, then enqueue the texts it stored (after the commit: the ids exist)."""
    with _connection() as conn:
        with conn.transaction():
            result = work(conn)
        if result.outbox_ids:
            outbox.dispatch(result.outbox_ids)
        return result


async def _plain_text(sender: str, to: str, body: str) -> inbound.InboundResult:
    """An ordinary text in one statement, tried once more on another connection if the pooled one was broken
    (the server restarted since): at least once, like every step of the engine, rather than a lost text."""
    from dispatcher.db.pool import get_async_pool

    pool = await get_async_pool()
    try:
        async with pool.connection() as conn:
            return await inbound.relay_plain_text(conn, sender, to, body)
    except psycopg.OperationalError:  # the pool drops the broken connection when it comes back
        async with pool.connection() as conn:
            return await inbound.relay_plain_text(conn, sender, to, body)


async def _twilio_hook(request: Request, kind: str) -> Response:
    started = time.perf_counter()
    settings = get_settings()
    metrics = relay_metrics()
    try:
        form = await verified_form(request, settings)
    except RelayError as error:
        metrics.webhooks.labels(kind, "rejected").inc()
        return Response(str(error), status_code=403 if isinstance(error, RelaySignatureRejected) else 413)
    sender, to, body = form.get("From", ""), form.get("To", ""), form.get("Body", "")
    try:
        if kind == "sms" and rules.keyword_of(body) is None:
            result = await _plain_text(sender, to, body)
            if result.outbox_ids:
                outbox.dispatch_soon(result.outbox_ids)
        elif kind == "sms":
            result = await run_in_threadpool(_in_transaction, lambda c: inbound.handle_text(c, sender, to, body))
        else:
            result = await run_in_threadpool(_in_transaction, lambda c: inbound.handle_call(c, sender, to))
    except InvalidPhoneNumber:  # a withheld caller id ("anonymous"), a short code: nothing to relay
        result = inbound.InboundResult(_ended_twiml(kind), "bad_number")
    metrics.webhooks.labels(kind, result.outcome).inc()
    metrics.webhook_seconds.labels(kind).observe(time.perf_counter() - started)
    return Response(result.twiml, media_type=TWIML)


def _ended_twiml(kind: str) -> str:
    from twilio.twiml.messaging_response import MessagingResponse
    from twilio.twiml.voice_response import VoiceResponse

    if kind == "sms":
        return str(MessagingResponse())
    voice = VoiceResponse()
    voice.say(rules.ENDED_CALL)
    voice.hangup()
    return str(voice)


async def sms_webhook(request: Request) -> Response:
    return await _twilio_hook(request, "sms")


async def voice_webhook(request: Request) -> Response:
    return await _twilio_hook(request, "call")


# -- the app's routes --------------------------------------------------------------------------------
def _authorized(request: Request, settings: Settings) -> bool:
    token = settings.relay_api_token
    given = request.headers.get("authorization", "")
    return bool(token) and hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


async def _json(request: Request) -> dict[str, Any]:
    raw = await _body(request)
    if not raw.strip():
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidPhoneNumber("body must be a JSON object") from None
    if not isinstance(value, dict):
        raise InvalidPhoneNumber("body must be a JSON object")
    return value


def _app_route(work: Callable[[Conn, str, dict[str, Any]], dict[str, Any]]) -> Callable[..., Any]:
    async def endpoint(request: Request) -> Response:
        settings = get_settings()
        if not _authorized(request, settings):
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        post_id = request.path_params["post_id"]
        try:
            if len(post_id) > 200 or "\x00" in post_id:
                raise UnknownPost("post id must be at most 200 characters, without NUL")
            payload = await _json(request)

            def run() -> dict[str, Any]:
                with _connection() as conn:
                    return work(conn, post_id, payload)

            answer = await run_in_threadpool(run)
        except RelayError as error:
            status = next((code for cls, code in _STATUS.items() if isinstance(error, cls)), 400)
            return JSONResponse({"error": type(error).__name__, "detail": str(error)}, status_code=status)
        return JSONResponse(answer)

    return endpoint


def _number(payload: dict[str, Any], key: str) -> str:
    value = payload.get(key)
    if not isinstance(value, str):
        raise InvalidPhoneNumber(f"{key} must be a phone number in E.164 form")
    return value


def _enable(conn: Conn, post_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    state = posts.enable_contact_me(conn, post_id, _number(payload, "author_number"))
    return {"post_id": post_id, "contact_me": state.value}


def _remove(conn: Conn, post_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {"post_id": post_id, "contact_me": posts.remove_contact_me(conn, post_id).value}


def _hide(conn: Conn, post_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {"post_id": post_id, "contact_me": posts.hide_contact_me(conn, post_id).value}


def _unhide(conn: Conn, post_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {"post_id": post_id, "contact_me": posts.unhide_contact_me(conn, post_id).value}


def _resolve(conn: Conn, post_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {"post_id": post_id, "cancelled_sessions": posts.close_post(conn, post_id, "resolved")}


def _delete(conn: Conn, post_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {"post_id": post_id, "cancelled_sessions": posts.close_post(conn, post_id, "deleted")}


def _contact(conn: Conn, post_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    offer = start_contact(conn, post_id, _number(payload, "number"), str(payload.get("channel", "sms")))
    return {"session_id": offer.session_id, "proxy_number": offer.proxy_number, "channel": offer.channel,
            "expires_at": offer.expires_at.isoformat()}


def relay_routes() -> list[Route]:
    """Every route of the relay, with full paths, for the main API to include."""
    return [
        Route("/relay/twilio/sms", sms_webhook, methods=["POST"]),
        Route("/relay/twilio/voice", voice_webhook, methods=["POST"]),
        Route("/relay/posts/{post_id}/contact-me", _app_route(_enable), methods=["PUT"]),
        Route("/relay/posts/{post_id}/contact-me", _app_route(_remove), methods=["DELETE"]),
        Route("/relay/posts/{post_id}/contact-me/hide", _app_route(_hide), methods=["POST"]),
        Route("/relay/posts/{post_id}/contact-me/unhide", _app_route(_unhide), methods=["POST"]),
        Route("/relay/posts/{post_id}/resolve", _app_route(_resolve), methods=["POST"]),
        Route("/relay/posts/{post_id}", _app_route(_delete), methods=["DELETE"]),
        Route("/relay/posts/{post_id}/contacts", _app_route(_contact), methods=["POST"]),
    ]


def create_relay_app() -> Starlette:
    """The relay's routes as an ASGI app of their own (``dispatcher relay``, tests, the benchmark)."""
    return Starlette(routes=relay_routes())


def run_relay(host: str = "127.0.0.1", port: int = 8900) -> None:
    """Serve the relay in the foreground until interrupted."""
    import uvicorn

    uvicorn.run(create_relay_app(), host=host, port=port, loop="uvloop", http="httptools", access_log=False,
                log_level="warning", proxy_headers=False)
