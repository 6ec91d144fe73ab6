"""A request's life: accepted → targeting → sending → completed, or rejected / expired.

Requests are stored immutably: the same id with the same payload is a harmless no-op, the same id
with a different payload is a :class:`RequestConflict` recorded for ops. Residents may respond for
60 days after publication; past that no notification goes out, even from a backlog.

The package: :mod:`~dispatcher.lifecycle.states` (the states, which of them are final),
:mod:`~dispatcher.lifecycle.events` (what the publishing pipeline hears when a request ends), and here
the stored request and its transitions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from psycopg.types.json import Jsonb

from dispatcher import ledger
from dispatcher.config import RESPONSE_WINDOW_DAYS
from dispatcher.contract import PublishedRequest, load_stored
from dispatcher.db.types import Conn
from dispatcher.errors import RequestConflict
from dispatcher.lifecycle.events import request_transitioned
from dispatcher.lifecycle.states import ACTIVE_STATES, FINAL_STATES, State

__all__ = [
    "ACTIVE_STATES",
    "FINAL_STATES",
    "State",
    "StoredRequest",
    "accept",
    "complete_if_done",
    "current_state",
    "expire",
    "load",
    "record_rejection",
    "reject",
    "respond_until",
    "transition",
    "window_open",
]


@dataclass(frozen=True)
class StoredRequest:
    """What the engine keeps about a request besides its payload."""

    id: str
    state: State
    urgent: bool
    respond_until: datetime
    reason: str | None = None


def respond_until(request: PublishedRequest) -> datetime:
    """The end of the response window: publication plus 60 days."""
    return request.published_at + timedelta(days=RESPONSE_WINDOW_DAYS)


def accept(conn: Conn, request: PublishedRequest) -> StoredRequest:
    """Store a request once; return its stored state (new or existing).

    Raises :class:`RequestConflict` when the id is known with a different payload.
    """
    fingerprint = request.fingerprint()
    until = respond_until(request)
    with conn.transaction():
        row = conn.execute(
            """
            INSERT INTO community_requests
                (id, payload, payload_sha256, urgent, state, reason, published_at, respond_until)
            VALUES (%s, %s, %s, %s,
                    CASE WHEN %s <= now() THEN 'expired' ELSE 'accepted' END,
                    CASE WHEN %s <= now() THEN 'response window ended before the request arrived' END,
                    %s, %s)
            ON CONFLICT (id) DO NOTHING
            RETURNING state, reason
            """,
            (request.id, Jsonb(request.to_json_dict()), fingerprint, request.urgent,
             until, until, request.published_at, until),
        ).fetchone()
        if row is not None:
            from dispatcher.feed.index import index_request  # the feed shows a request once it is stored

            index_request(conn, request)
            stored = StoredRequest(request.id, State(str(row[0])), request.urgent, until,
                                   None if row[1] is None else str(row[1]))
            request_transitioned(request.id, stored.state)  # an expired arrival is final at once
            return stored
        existing = conn.execute(
            "SELECT payload_sha256, state, reason FROM community_requests WHERE id = %s", (request.id,)
        ).fetchone()
    assert existing is not None
    if existing[0] != fingerprint:
        reason = "a published request cannot be changed: the same id arrived with a different payload"
        record_rejection(conn, request.id, reason)
        raise RequestConflict(f"request {request.id}: {reason}")
    return StoredRequest(request.id, State(str(existing[1])), request.urgent, until,
                         None if existing[2] is None else str(existing[2]))


def load(conn: Conn, request_id: str) -> tuple[StoredRequest, PublishedRequest] | None:
    """The stored state and payload of a request, or ``None`` if it was never accepted."""
    row = conn.execute(
        "SELECT state, urgent, respond_until, reason, payload FROM community_requests WHERE id = %s",
        (request_id,),
    ).fetchone()
    if row is None or row[4] is None:  # never accepted, or refused before it could be (no payload)
        return None
    state, urgent, until, reason, payload = row
    assert isinstance(until, datetime)
    stored = StoredRequest(request_id, State(str(state)), bool(urgent), until,
                           None if reason is None else str(reason))
    return stored, load_stored(payload)


def current_state(conn: Conn, request_id: str) -> State | None:
    """The stored state of a request without its payload (cheap enough to poll)."""
    row = conn.execute("SELECT state FROM community_requests WHERE id = %s", (request_id,)).fetchone()
    return None if row is None else State(str(row[0]))


def transition(conn: Conn, request_id: str, to: State, *, from_: set[State], reason: str | None = None) -> bool:
    """Move a request to ``to`` if it is in one of ``from_``; return whether it moved."""
    stamp = {State.SENDING: ", targeted_at = now()", State.COMPLETED: ", completed_at = now()"}.get(to, "")
    cur = conn.execute(
        f"UPDATE community_requests SET state = %s, reason = coalesce(%s, reason), updated_at = now(){stamp}"
        " WHERE id = %s AND state = ANY(%s)",
        (to.value, reason, request_id, [s.value for s in from_]),
    )
    if cur.rowcount == 1:
        request_transitioned(request_id, to)  # metrics; final states go back to the pipeline (id, state, time)
    return cur.rowcount == 1


def expire(conn: Conn, request_id: str) -> int:
    """The response window ended: close every pending row as expired and the request with it.

    Returns the rows expired. Safe to repeat; a request already final keeps its state.
    """
    with conn.transaction():
        expired = ledger.expire_pending(conn, request_id)
        transition(conn, request_id, State.EXPIRED, from_={State.ACCEPTED, State.TARGETING, State.SENDING},
                   reason="response window ended")
    return expired


def complete_if_done(conn: Conn, request_id: str) -> bool:
    """Move a sending request to completed once no channel has pending rows; return whether it moved.

    Rows held by quiet hours are pending: a request is complete only when nothing is pending or held.
    """
    with conn.transaction():
        # Lock the request first: its rows are written in chunks that commit before it turns ``sending``,
        # so once ``sending`` is seen under the lock, the pending check below sees every row.
        conn.execute("SELECT 1 FROM community_requests WHERE id = %s FOR UPDATE", (request_id,))
        if ledger.any_pending(conn, request_id):
            return False
        return transition(conn, request_id, State.COMPLETED, from_={State.SENDING})


def reject(conn: Conn, request_id: str, reason: str) -> None:
    """Mark a stored request rejected with the reason (bad area, ...); nothing is sent for it, and it
    leaves the feed."""
    from dispatcher.feed.index import unindex_request  # the feed shows only what stays published

    with conn.transaction():
        if transition(conn, request_id, State.REJECTED, from_={State.ACCEPTED, State.TARGETING}, reason=reason):
            unindex_request(conn, request_id)


def reject_unstored(conn: Conn, request_id: str, reason: str) -> bool:
    """Store ``request_id`` as rejected, without a payload, if no request holds it yet; return whether it did.

    For a message refused before it could be stored: the pipeline hears ``rejected`` once, and the id
    stays taken, so a later message with that id is a conflict, never a request sent after its rejection.
    An id a stored request already holds is left alone: the message is not that request.
    """
    row = conn.execute(
        """
        INSERT INTO community_requests (id, payload, payload_sha256, state, reason, published_at, respond_until)
        VALUES (%s, 'null', '', 'rejected', %s, now(), now())
        ON CONFLICT (id) DO NOTHING
        RETURNING id
        """,
        (request_id, reason[:2000]),
    ).fetchone()
    if row is not None:
        request_transitioned(request_id, State.REJECTED)
    return row is not None


def record_rejection(conn: Conn, request_id: str | None, reason: str) -> None:
    """Remember a request refused before it could be stored, for ops to see."""
    conn.execute(
        "INSERT INTO request_rejections (request_id, reason) VALUES (%s, %s)", (request_id, reason[:2000])
    )


def window_open(conn: Conn, request_id: str) -> bool:
    """Whether residents can still respond to the request (the database clock decides)."""
    row = conn.execute(
        "SELECT respond_until > now() FROM community_requests WHERE id = %s", (request_id,)
    ).fetchone()
    return bool(row and row[0])
