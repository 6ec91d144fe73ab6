"""What happens to a text or a call that reaches one of our proxy numbers.

A text is, in order: a keyword (STOP and its synonyms, START, HELP: carrier conventions; CANCEL: the
author's opt-out; YES: the author's confirmation while a post waits for it), or a message for the other
person of the pair, relayed only while their session is active and they have not texted STOP. Anything
else gets a short automatic reply and is not relayed. Automatic replies go back as TwiML ``<Message>`` in
the webhook's answer (Twilio sends it from the number that was texted), so they need no stored number.

Each outcome leaves one row of abuse metadata (session, sender's row id, kind, outcome, length): no
number, no body.

A text that is no keyword (nearly all of them) is routed and stored by one statement, :data:`RELAY_TEXT`:
one round trip, one implicit transaction, prepared once per connection. The webhook runs it on an
asynchronous connection (:func:`relay_plain_text`), the synchronous :func:`handle_text` runs the same
statement, so both follow the same rules. Keywords change state and take the slower path of several
statements in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any

import psycopg
from twilio.twiml.messaging_response import MessagingResponse
from twilio.twiml.voice_response import Dial, VoiceResponse

from dispatcher.db.types import Conn
from dispatcher.relay import outbox, posts, rules
from dispatcher.relay.phones import find_phone, normalize_number, number_hash, phone_number
from dispatcher.relay.pool import find_proxy
from dispatcher.relay.rules import Keyword
from dispatcher.relay.sessions import Route, cancel_sessions_of_pair, route


@dataclass
class InboundResult:
    """The TwiML answer for Twilio, the outcome word (metrics, tests) and texts to enqueue after commit."""

    twiml: str
    outcome: str
    outbox_ids: list[int] = field(default_factory=list)


@cache
def _reply(text: str | None) -> str:
    response = MessagingResponse()
    if text:
        response.message(text)
    return str(response)


def _log(conn: Conn, session_id: int | None, phone_id: int | None, kind: str, outcome: str, chars: int = 0) -> None:
    conn.execute("INSERT INTO relay_abuse_log (session_id, phone_id, kind, outcome, body_chars)"
                 " VALUES (%s, %s, %s, %s, %s)", (session_id, phone_id, kind, outcome, chars))


#: A text that is no keyword, in one statement: find our number and the sender's row, route it (as
#: :func:`dispatcher.relay.sessions.route`), store the encrypted body in the outbox when the session is
#: active and the recipient has not texted STOP, and log the outcome. Answers (our number?, outcome or
#: NULL for an unknown sender, outbox id or NULL).
RELAY_TEXT = """
WITH proxy AS (SELECT id FROM relay_proxy_numbers WHERE number = %(to)s),
sender AS (SELECT id FROM relay_phones WHERE number_hmac = %(sender)s),
found AS (
    SELECT s.id AS session_id, other.phone_id AS to_phone_id, p.number AS from_proxy,
           other.stopped_at IS NOT NULL AS to_stopped
    FROM relay_participants me
    JOIN relay_participants other ON other.pair_id = me.pair_id AND other.phone_id <> me.phone_id
    JOIN relay_proxy_numbers p ON p.id = other.proxy_id
    LEFT JOIN relay_sessions s ON s.pair_id = me.pair_id AND s.state = 'active' AND s.expires_at > now()
    WHERE me.phone_id = (SELECT id FROM sender) AND me.proxy_id = (SELECT id FROM proxy)
),
verdict AS (
    SELECT sender.id AS phone_id, found.session_id, found.to_phone_id, found.from_proxy,
           CASE WHEN found.session_id IS NULL THEN 'ended'
                WHEN found.to_stopped THEN 'recipient_stopped' ELSE 'relayed' END AS outcome
    FROM sender LEFT JOIN found ON true
    WHERE EXISTS (SELECT 1 FROM proxy)
),
stored AS (
    INSERT INTO relay_outbox (to_phone_id, from_number, body_encrypted, purpose, session_id)
    SELECT to_phone_id, from_proxy, %(body)s, 'relay', session_id FROM verdict WHERE outcome = 'relayed'
    RETURNING id
),
logged AS (
    INSERT INTO relay_abuse_log (session_id, phone_id, kind, outcome, body_chars)
    SELECT session_id, phone_id, 'sms', outcome, %(chars)s FROM verdict
)
SELECT EXISTS (SELECT 1 FROM proxy), (SELECT outcome FROM verdict), (SELECT id FROM stored)
"""


def _plain_text_params(from_number: str, to_number: str, body: str) -> dict[str, Any]:
    """The statement's parameters: our number, the sender's keyed hash, the body encrypted (never in clear)."""
    sender = normalize_number(from_number)
    return {"to": normalize_number(to_number), "sender": number_hash(sender), "chars": len(body),
            "body": outbox.seal_body(body)}


def _plain_text_result(row: Any) -> InboundResult:
    ours, outcome, text_id = row
    if not ours:
        return InboundResult(_reply(None), "not_our_number")
    if outcome is None:  # never seen: nothing to relay, nothing remembered
        return InboundResult(_reply(rules.ENDED), "unknown_sender")
    if outcome != "relayed":
        return InboundResult(_reply(rules.ENDED), str(outcome))
    return InboundResult(_reply(None), "relayed", [int(text_id)])


def relay_plain_text_sync(conn: Conn, from_number: str, to_number: str, body: str) -> InboundResult:
    """A text that is no keyword, by :data:`RELAY_TEXT` on a synchronous connection."""
    row = conn.execute(RELAY_TEXT, _plain_text_params(from_number, to_number, body), prepare=True).fetchone()
    return _plain_text_result(row)


async def relay_plain_text(conn: psycopg.AsyncConnection[Any], from_number: str, to_number: str,
                           body: str) -> InboundResult:
    """A text that is no keyword, by :data:`RELAY_TEXT`; ``conn`` in autocommit (one implicit transaction)."""
    cur = await conn.execute(RELAY_TEXT, _plain_text_params(from_number, to_number, body), prepare=True)
    return _plain_text_result(await cur.fetchone())


def handle_text(conn: Conn, from_number: str, to_number: str, body: str) -> InboundResult:
    """A text from ``from_number`` to our number ``to_number``; run in one transaction by the caller."""
    keyword = rules.keyword_of(body)
    if keyword is None:
        return relay_plain_text_sync(conn, from_number, to_number, body)
    sender = normalize_number(from_number)
    proxy_id = find_proxy(conn, normalize_number(to_number))
    if proxy_id is None:
        return InboundResult(_reply(None), "not_our_number")
    phone_id = find_phone(conn, sender)
    if phone_id is None:  # never seen: nothing to relay, nothing to remember
        text = rules.HELP if keyword is Keyword.HELP else None if keyword is Keyword.STOP else rules.ENDED
        return InboundResult(_reply(text), "unknown_sender")
    found = route(conn, phone_id, proxy_id)
    handled = _keyword(conn, keyword, phone_id, proxy_id, found)
    if handled is not None:
        _log(conn, found.session_id if found else None, phone_id, "sms", handled.outcome)
        return handled
    return relay_plain_text_sync(conn, from_number, to_number, body)  # YES or START out of context: a message


def _keyword(conn: Conn, keyword: Keyword, phone_id: int, proxy_id: int, found: Route | None) -> InboundResult | None:
    """Act on a keyword; None when the word is an ordinary message here (YES or START out of context)."""
    if keyword is Keyword.HELP:
        return InboundResult(_reply(rules.HELP), "help")
    if keyword is Keyword.STOP:
        conn.execute("UPDATE relay_participants SET stopped_at = now() WHERE phone_id = %s AND proxy_id = %s",
                     (phone_id, proxy_id))
        if found is not None:
            cancel_sessions_of_pair(conn, found.pair_id, "stop")
        return InboundResult(_reply(rules.STOPPED), "stop")
    if keyword is Keyword.CANCEL:
        if posts.cancel_author(conn, phone_id) == 0:  # no post of theirs is on: the carrier convention (= STOP)
            return _keyword(conn, Keyword.STOP, phone_id, proxy_id, found)
        return InboundResult(_reply(rules.CANCELLED), "cancel")
    if keyword is Keyword.START:
        cur = conn.execute("UPDATE relay_participants SET stopped_at = NULL WHERE phone_id = %s AND proxy_id = %s"
                           " AND stopped_at IS NOT NULL", (phone_id, proxy_id))
        return InboundResult(_reply(rules.STARTED), "start") if cur.rowcount else None
    if keyword is Keyword.CONFIRM and posts.has_pending_posts(conn, phone_id):
        posts.confirm_phone(conn, phone_id)
        return InboundResult(_reply(rules.CONFIRMED), "confirmed")
    return None


def handle_call(conn: Conn, from_number: str, to_number: str) -> InboundResult:
    """A call to a proxy number: bridged to the other person with their proxy number as caller id."""
    proxy_id = find_proxy(conn, normalize_number(to_number))
    phone_id = find_phone(conn, normalize_number(from_number)) if proxy_id is not None else None
    found = route(conn, phone_id, proxy_id) if phone_id is not None and proxy_id is not None else None
    response = VoiceResponse()
    if found is None or found.session_id is None:
        _log(conn, None, phone_id, "call", "ended")
        response.say(rules.ENDED_CALL)
        response.hangup()
        return InboundResult(str(response), "ended")
    dial = Dial(caller_id=found.from_proxy, answer_on_bridge=True)
    dial.number(phone_number(conn, found.to_phone_id))
    response.append(dial)
    _log(conn, found.session_id, phone_id, "call", "bridged")
    return InboundResult(str(response), "bridged")
