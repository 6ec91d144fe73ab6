"""Conversation sessions: starting one for a contacter, finding the one a text belongs to, ending them.

A session is valid while ``state = 'active'`` *and* ``expires_at > now()``: the sweep marks expired
sessions later, but an inbound text never depends on the sweep having run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from dispatcher.db.types import Conn
from dispatcher.relay.errors import PostNotContactable, UnknownPost
from dispatcher.relay.phones import ensure_phone
from dispatcher.relay.pool import pair_for, participant_proxy, proxy_number
from dispatcher.relay.rules import SESSION_LIFETIME, PostState

CHANNELS = ("sms", "call")


@dataclass(frozen=True)
class ContactOffer:
    """What the contacter's app is told: the session and the proxy number to text or call. No real number."""

    session_id: int
    proxy_number: str
    channel: str
    expires_at: datetime


@dataclass(frozen=True)
class Route:
    """Where a text or call from one phone to one proxy number goes."""

    pair_id: int
    session_id: int | None  # None: no session is active (ended, expired, cancelled, or never)
    to_phone_id: int
    from_proxy: str  # the proxy number the other person sees
    to_stopped: bool  # the other person texted STOP to that proxy number


def start_contact(conn: Conn, post_id: str, contacter_number: str, channel: str) -> ContactOffer:
    """Put a contacter in touch with a post's author (the "Contact Author" button)."""
    if channel not in CHANNELS:
        raise PostNotContactable(f"channel must be one of {list(CHANNELS)}")
    with conn.transaction():
        contacter = ensure_phone(conn, contacter_number)
        row = conn.execute("SELECT author_phone_id, state, contact_until > now() FROM relay_posts"
                           " WHERE post_id = %s FOR SHARE", (post_id,)).fetchone()
        if row is None:
            raise UnknownPost(f"post {post_id!r} has no Contact Me")
        author, state, in_time = int(row[0]), PostState(row[1]), bool(row[2])
        if state is PostState.HIDDEN:
            known = conn.execute("SELECT 1 FROM relay_sessions WHERE post_id = %s AND contacter_phone_id = %s"
                                 " LIMIT 1", (post_id, contacter)).fetchone()
            if known is None:
                raise PostNotContactable(f"post {post_id!r} has Contact Me hidden")
        elif state is not PostState.ON:
            raise PostNotContactable(f"post {post_id!r} has Contact Me {state.value}")
        if not in_time:
            raise PostNotContactable(f"post {post_id!r} is past its Contact Me period")
        pair = pair_for(conn, author, contacter)
        current = conn.execute(
            "SELECT id, post_id, expires_at > now(), expires_at, channel FROM relay_sessions"
            " WHERE pair_id = %s AND state = 'active' FOR UPDATE", (pair,)).fetchone()
        if current is not None and current[1] == post_id and current[2]:
            session_id, expires_at, channel = int(current[0]), current[3], str(current[4])
        else:
            if current is not None:  # another post, or past its time: only one active session per pair
                end_session(conn, int(current[0]), "expired" if not current[2] else "cancelled",
                            "expired" if not current[2] else "superseded")
            made = conn.execute(
                "INSERT INTO relay_sessions (pair_id, post_id, contacter_phone_id, channel, state, expires_at)"
                " VALUES (%s, %s, %s, %s, 'active', now() + %s) RETURNING id, expires_at",
                (pair, post_id, contacter, channel, SESSION_LIFETIME)).fetchone()
            assert made is not None
            session_id, expires_at = int(made[0]), made[1]
        proxy = proxy_number(conn, participant_proxy(conn, pair, contacter))
    return ContactOffer(session_id, proxy, channel, expires_at)


def route(conn: Conn, phone_id: int, proxy_id: int) -> Route | None:
    """Where a text from ``phone_id`` to proxy ``proxy_id`` goes; None if the pair was never set up."""
    row = conn.execute(
        """
        SELECT me.pair_id, s.id, other.phone_id, p.number, other.stopped_at IS NOT NULL
        FROM relay_participants me
        JOIN relay_participants other ON other.pair_id = me.pair_id AND other.phone_id <> me.phone_id
        JOIN relay_proxy_numbers p ON p.id = other.proxy_id
        LEFT JOIN relay_sessions s ON s.pair_id = me.pair_id AND s.state = 'active' AND s.expires_at > now()
        WHERE me.phone_id = %s AND me.proxy_id = %s
        """, (phone_id, proxy_id)).fetchone()
    if row is None:
        return None
    return Route(int(row[0]), None if row[1] is None else int(row[1]), int(row[2]), str(row[3]), bool(row[4]))


def end_session(conn: Conn, session_id: int, state: str, reason: str) -> None:
    conn.execute("UPDATE relay_sessions SET state = %s, end_reason = %s, ended_at = now()"
                 " WHERE id = %s AND state = 'active'", (state, reason, session_id))


def cancel_sessions_of_posts(conn: Conn, post_ids: list[str], reason: str) -> int:
    """Cancel every active session about these posts; returns how many."""
    if not post_ids:
        return 0
    cur = conn.execute("UPDATE relay_sessions SET state = 'cancelled', end_reason = %s, ended_at = now()"
                       " WHERE post_id = ANY(%s) AND state = 'active'", (reason, post_ids))
    return cur.rowcount


def cancel_sessions_of_pair(conn: Conn, pair_id: int, reason: str) -> int:
    cur = conn.execute("UPDATE relay_sessions SET state = 'cancelled', end_reason = %s, ended_at = now()"
                       " WHERE pair_id = %s AND state = 'active'", (reason, pair_id))
    return cur.rowcount


def expire_sessions(conn: Conn) -> int:
    """Mark every active session past its seven days ``expired`` (the sweep); returns how many."""
    cur = conn.execute("UPDATE relay_sessions SET state = 'expired', end_reason = 'expired', ended_at = now()"
                       " WHERE state = 'active' AND expires_at <= now()")
    return cur.rowcount
