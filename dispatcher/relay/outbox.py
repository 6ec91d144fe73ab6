"""Outgoing texts: encrypted in PostgreSQL until the provider has them, then gone.

Why not put the text on the queue: a queue message lives in Redis (and in the dead letters after the
last retry), where bodies and numbers must never be. So the relay writes the text into ``relay_outbox``,
encrypted with the number key, and enqueues only the row id. The actor loads, decrypts, sends and deletes
the row in one transaction holding the row lock. A row is also deleted when Twilio refuses it for good,
and the sweep deletes rows older than ``RELAY_OUTBOX_TTL_SECONDS`` (a text that late is no use), so a
body lives in the database for seconds, at most for that TTL, and never in clear.

Rows are written here (:func:`put`, bodies sealed by :func:`seal_body`) and by the relay's one-statement
path for ordinary texts (:data:`dispatcher.relay.inbound.RELAY_TEXT`, which stores a body sealed here).
Webhooks hand ids to :func:`dispatch_soon`, whose thread enqueues them in batches.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass

from cryptography.fernet import InvalidToken

from dispatcher.config import get_settings
from dispatcher.db.types import Conn
from dispatcher.relay.errors import ProxyPoolExhausted
from dispatcher.relay.keys import number_fernet
from dispatcher.relay.metrics import relay_metrics
from dispatcher.relay.phones import decrypt_number
from dispatcher.relay.provider import SendRefused, send_text
from dispatcher.relay.rules import MAX_BODY_CHARS

log = logging.getLogger(__name__)

_CLAIM = """
SELECT o.from_number, o.body_encrypted, o.purpose, ph.number_encrypted
FROM relay_outbox o JOIN relay_phones ph ON ph.id = o.to_phone_id
WHERE o.id = %s
FOR UPDATE OF o SKIP LOCKED
"""


class ProviderUnavailable(Exception):
    """Twilio did not take a text this time (a quota, a 5xx): the actor retries it."""


@dataclass(frozen=True)
class SendOutcome:
    """What became of one outbox row: ``sent``, ``refused``, ``expired`` or ``gone``."""

    outcome: str
    from_number: str | None = None


def seal_body(body: str) -> bytes:
    """A text's body as the outbox keeps it: cut to the longest text relayed, encrypted with the number key."""
    return number_fernet(get_settings()).encrypt(body[:MAX_BODY_CHARS].encode())


def put(conn: Conn, to_phone_id: int, from_number: str | None, body: str, *, purpose: str,
        session_id: int | None = None) -> int:
    """Store one text for sending; ``from_number`` None: the pool's first number (service texts)."""
    if from_number is None:
        row = conn.execute("SELECT number FROM relay_proxy_numbers WHERE active ORDER BY id LIMIT 1").fetchone()
        if row is None:
            raise ProxyPoolExhausted("the proxy pool holds no number to send from")
        from_number = str(row[0])
    made = conn.execute(
        "INSERT INTO relay_outbox (to_phone_id, from_number, body_encrypted, purpose, session_id)"
        " VALUES (%s, %s, %s, %s, %s) RETURNING id",
        (to_phone_id, from_number, seal_body(body), purpose, session_id)).fetchone()
    assert made is not None
    return int(made[0])


def dispatch(outbox_ids: list[int]) -> None:
    """Enqueue the rows' ids (after their transaction committed). A failed enqueue is left to the sweep."""
    from dispatcher.relay.actors import send_relay_text

    for outbox_id in outbox_ids:
        try:
            send_relay_text.send(outbox_id)
        except Exception as error:  # Redis down: the sweep enqueues the row again
            log.warning("relay text not enqueued", extra={"outbox_id": outbox_id, "error": type(error).__name__})


#: How long the enqueueing thread waits after the first id for others to join it: it wakes (and takes
#: the GIL from the event loop) once a batch rather than once a text.
ENQUEUE_LINGER_SECONDS = 0.05
_handoff: queue.SimpleQueue[int] | None = None
_handoff_lock = threading.Lock()


def dispatch_soon(outbox_ids: list[int]) -> None:
    """Enqueue the rows' ids from a background thread, so a webhook answers without waiting for Redis.

    The rows are committed already; an id lost with the process (or refused by Redis) is the sweep's, as
    with :func:`dispatch`.
    """
    global _handoff
    with _handoff_lock:
        if _handoff is None:
            _handoff = queue.SimpleQueue()
            threading.Thread(target=_enqueue_forever, args=(_handoff,), name="relay-enqueue", daemon=True).start()
    for outbox_id in outbox_ids:
        _handoff.put(outbox_id)


def _dispatch_pipelined(outbox_ids: list[int]) -> None:
    from dispatcher.broker import enqueue_pipelined
    from dispatcher.relay.actors import broker, send_relay_text

    enqueue_pipelined(broker, [send_relay_text.message(outbox_id) for outbox_id in outbox_ids])


def _enqueue_forever(handoff: queue.SimpleQueue[int]) -> None:
    while True:
        ids = [handoff.get()]
        time.sleep(ENQUEUE_LINGER_SECONDS)
        while True:  # whatever else arrived meanwhile goes in the same pass
            try:
                ids.append(handoff.get_nowait())
            except queue.Empty:
                break
        try:
            _dispatch_pipelined(ids)
        except Exception as error:  # the thread must outlive any failure: the sweep enqueues these rows again
            log.warning("relay texts not enqueued", extra={"count": len(ids), "error": type(error).__name__})


def send_one(conn: Conn, outbox_id: int) -> SendOutcome:
    """Send one stored text and delete it (the caller has taken the sender's rate limit)."""
    settings = get_settings()
    with conn.transaction():
        row = conn.execute(_CLAIM, (outbox_id,)).fetchone()
        if row is None:
            return SendOutcome("gone")  # sent already, or another worker is sending it now
        from_number, body_token, purpose, number_token = str(row[0]), bytes(row[1]), str(row[2]), bytes(row[3])
        try:
            body = number_fernet(settings).decrypt(body_token, ttl=settings.relay_outbox_ttl_seconds).decode()
        except InvalidToken:
            conn.execute("DELETE FROM relay_outbox WHERE id = %s", (outbox_id,))
            relay_metrics().texts.labels(purpose, "expired").inc()
            return SendOutcome("expired", from_number)
        result = send_text(settings, decrypt_number(number_token, settings), from_number, body)
        if isinstance(result, SendRefused) and not result.permanent:
            relay_metrics().texts.labels(purpose, "retried").inc()
            raise ProviderUnavailable(f"twilio answered {result.status} (code {result.code})")
        conn.execute("DELETE FROM relay_outbox WHERE id = %s", (outbox_id,))
        outcome = "refused" if isinstance(result, SendRefused) else "sent"
        if isinstance(result, SendRefused):
            log.info("relay text refused", extra={"outbox_id": outbox_id, "status": result.status,
                                                  "code": result.code})
        relay_metrics().texts.labels(purpose, outcome).inc()
        return SendOutcome(outcome, from_number)


def peek_sender(conn: Conn, outbox_id: int) -> str | None:
    """The number a stored text goes out from (for the per-number rate limit); None if the row is gone."""
    row = conn.execute("SELECT from_number FROM relay_outbox WHERE id = %s", (outbox_id,)).fetchone()
    return str(row[0]) if row else None


def purge_expired(conn: Conn) -> int:
    """Delete texts older than the outbox TTL (the sweep)."""
    cur = conn.execute("DELETE FROM relay_outbox WHERE created_at < now() - make_interval(secs => %s)",
                       (get_settings().relay_outbox_ttl_seconds,))
    return cur.rowcount


def stranded(conn: Conn, older_than_seconds: float) -> list[int]:
    """Rows nobody is sending that waited longer than a normal send would (their message was lost)."""
    rows = conn.execute(
        "SELECT id FROM relay_outbox WHERE created_at < now() - make_interval(secs => %s)"
        " ORDER BY id LIMIT 1000 FOR UPDATE SKIP LOCKED", (older_than_seconds,)).fetchall()
    return [int(row[0]) for row in rows]
