"""A post's Contact Me switch: on (after the author's confirmation by text), hide, remove, resolve, delete.

* **remove** (state ``off``): no new contacts at all; conversations already going on continue to their end.
* **hide** (state ``hidden``): the post takes no one new, but a person already in touch about it may
  start a new conversation when theirs has ended; ``unhide`` turns it back on within its 30 days.
* **resolve** / **delete** (state ``closed``): every session of the post is cancelled now.
* **CANCEL** texted by the author: Contact Me off (``off``, reason ``cancelled``) on every post where it
  is on, hidden or pending, and the author's sessions are cancelled.
"""

from __future__ import annotations

from dispatcher.db.types import Conn
from dispatcher.relay import outbox
from dispatcher.relay.errors import PostNotContactable, UnknownPost
from dispatcher.relay.phones import ensure_phone
from dispatcher.relay.rules import CONFIRM_REQUEST, CONTACT_LIFETIME, PostState
from dispatcher.relay.sessions import cancel_sessions_of_posts

_SWITCH_ON = """
UPDATE relay_posts SET state = 'on', off_reason = NULL, enabled_at = now(),
       contact_until = now() + %(lifetime)s, updated_at = now()
WHERE {where}
RETURNING post_id
"""


def _state(conn: Conn, post_id: str, *, lock: bool = True) -> PostState:
    row = conn.execute("SELECT state FROM relay_posts WHERE post_id = %s" + (" FOR UPDATE" if lock else ""),
                       (post_id,)).fetchone()
    if row is None:
        raise UnknownPost(f"post {post_id!r} has no Contact Me")
    return PostState(row[0])


def enable_contact_me(conn: Conn, post_id: str, author_number: str) -> PostState:
    """Switch Contact Me on for a post: ``on`` if the author's number is confirmed, else ``pending`` and a
    confirmation text goes out. Returns the new state (the number never comes back)."""
    with conn.transaction():
        phone_id = ensure_phone(conn, author_number)
        existing = conn.execute("SELECT state FROM relay_posts WHERE post_id = %s FOR UPDATE", (post_id,)).fetchone()
        if existing is not None and existing[0] == PostState.CLOSED:
            raise PostNotContactable(f"post {post_id!r} is resolved or deleted")
        confirmed = conn.execute("SELECT confirmed_at IS NOT NULL FROM relay_phones WHERE id = %s",
                                 (phone_id,)).fetchone()
        state = PostState.ON if confirmed and confirmed[0] else PostState.PENDING
        conn.execute(
            "INSERT INTO relay_posts (post_id, author_phone_id, state) VALUES (%s, %s, 'pending')"
            " ON CONFLICT (post_id) DO UPDATE SET author_phone_id = excluded.author_phone_id, state = 'pending',"
            " off_reason = NULL, updated_at = now()", (post_id, phone_id))
        if state is PostState.ON:
            conn.execute(_SWITCH_ON.format(where="post_id = %(post)s"),
                         {"post": post_id, "lifetime": CONTACT_LIFETIME})
            return state
        text_id = outbox.put(conn, phone_id, None, CONFIRM_REQUEST, purpose="confirm")
    outbox.dispatch([text_id])
    return state


def confirm_phone(conn: Conn, phone_id: int) -> list[str]:
    """The author confirmed the number by text: every pending post of theirs goes on (its 30 days start)."""
    conn.execute("UPDATE relay_phones SET confirmed_at = now() WHERE id = %s AND confirmed_at IS NULL",
                 (phone_id,))
    rows = conn.execute(_SWITCH_ON.format(where="author_phone_id = %(phone)s AND state = 'pending'"),
                        {"phone": phone_id, "lifetime": CONTACT_LIFETIME}).fetchall()
    return [str(row[0]) for row in rows]


def has_pending_posts(conn: Conn, phone_id: int) -> bool:
    row = conn.execute("SELECT 1 FROM relay_posts WHERE author_phone_id = %s AND state = 'pending' LIMIT 1",
                       (phone_id,)).fetchone()
    return row is not None


def remove_contact_me(conn: Conn, post_id: str) -> PostState:
    """No new contacts; ongoing conversations are not interrupted."""
    return _switch_off(conn, post_id, "removed")


def hide_contact_me(conn: Conn, post_id: str) -> PostState:
    """No one new can make contact; people already in touch can go on."""
    with conn.transaction():
        state = _state(conn, post_id)
        if state is not PostState.ON and state is not PostState.HIDDEN:
            raise PostNotContactable(f"post {post_id!r} has Contact Me {state.value}, it cannot be hidden")
        conn.execute("UPDATE relay_posts SET state = 'hidden', updated_at = now() WHERE post_id = %s", (post_id,))
    return PostState.HIDDEN


def unhide_contact_me(conn: Conn, post_id: str) -> PostState:
    with conn.transaction():
        state = _state(conn, post_id)
        if state is not PostState.HIDDEN:
            raise PostNotContactable(f"post {post_id!r} has Contact Me {state.value}, not hidden")
        conn.execute("UPDATE relay_posts SET state = 'on', updated_at = now() WHERE post_id = %s", (post_id,))
    return PostState.ON


def close_post(conn: Conn, post_id: str, reason: str) -> int:
    """The post was resolved or deleted (``reason``): cancel every session of it; returns how many."""
    with conn.transaction():
        _state(conn, post_id)
        conn.execute("UPDATE relay_posts SET state = 'closed', off_reason = %s, updated_at = now()"
                     " WHERE post_id = %s", (reason, post_id))
        return cancel_sessions_of_posts(conn, [post_id], reason)


def cancel_author(conn: Conn, phone_id: int) -> int:
    """The author texted CANCEL: Contact Me off on each of their posts, their sessions cancelled."""
    rows = conn.execute(
        "UPDATE relay_posts SET state = 'off', off_reason = 'cancelled', updated_at = now()"
        " WHERE author_phone_id = %s AND state IN ('on', 'hidden', 'pending') RETURNING post_id",
        (phone_id,)).fetchall()
    posts = [str(row[0]) for row in rows]
    cancel_sessions_of_posts(conn, posts, "cancelled")
    return len(posts)


def _switch_off(conn: Conn, post_id: str, reason: str) -> PostState:
    with conn.transaction():
        state = _state(conn, post_id)
        if state is PostState.CLOSED:
            raise PostNotContactable(f"post {post_id!r} is resolved or deleted")
        conn.execute("UPDATE relay_posts SET state = 'off', off_reason = %s, updated_at = now()"
                     " WHERE post_id = %s", (reason, post_id))
    return PostState.OFF


def post_state(conn: Conn, post_id: str) -> PostState:
    return _state(conn, post_id, lock=False)
