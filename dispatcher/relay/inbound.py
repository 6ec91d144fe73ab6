"""What happens to a text or a call that reaches one of our proxy numbers.

A text is, in order: a keyword (STOP and its synonyms, START, HELP: carrier conventions; CANCEL: the
author's opt-out; YES: the author's confirmation while a post waits for it), or a message for the other
person of the pair, relayed only while their session is active and they have not texted STOP. Anything
else gets a short automatic reply and is not relayed. Automatic replies go back as TwiML ``<Message>`` in
the webhook's answer (Twilio sends it from the number that was texted), so they need no stored number.

Each outcome leaves one row of abuse metadata (session, sender's row id, kind, outcome, length): no
number, no body.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from twilio.twiml.messaging_response import MessagingResponse
from twilio.twiml.voice_response import Dial, VoiceResponse

from dispatcher.db.types import Conn
from dispatcher.relay import outbox, posts, rules
from dispatcher.relay.phones import find_phone, normalize_number, phone_number
from dispatcher.relay.pool import find_proxy
from dispatcher.relay.rules import Keyword
from dispatcher.relay.sessions import Route, cancel_sessions_of_pair, route


@dataclass
class InboundResult:
    """The TwiML answer for Twilio, the outcome word (metrics, tests) and texts to enqueue after commit."""

    twiml: str
    outcome: str
    outbox_ids: list[int] = field(default_factory=list)


def _reply(text: str | None) -> str:
    response = MessagingResponse()
    if text:
        response.message(text)
    return str(response)


def _log(conn: Conn, session_id: int | None, phone_id: int | None, kind: str, outcome: str, chars: int = 0) -> None:
    conn.execute("INSERT INTO relay_abuse_log (session_id, phone_id, kind, outcome, body_chars)"
                 " VALUES (%s, %s, %s, %s, %s)", (session_id, phone_id, kind, outcome, chars))


def handle_text(conn: Conn, from_number: str, to_number: str, body: str) -> InboundResult:
    """A text from ``from_number`` to our number ``to_number``; run in one transaction by the caller."""
    sender = normalize_number(from_number)
    proxy_id = find_proxy(conn, normalize_number(to_number))
    if proxy_id is None:
        return InboundResult(_reply(None), "not_our_number")
    phone_id = find_phone(conn, sender)
    keyword = rules.keyword_of(body)
    if phone_id is None:  # never seen: nothing to relay, nothing to remember
        text = rules.HELP if keyword is Keyword.HELP else None if keyword is Keyword.STOP else rules.ENDED
        return InboundResult(_reply(text), "unknown_sender")
    found = route(conn, phone_id, proxy_id)
    if keyword is not None:
        handled = _keyword(conn, keyword, phone_id, proxy_id, found)
        if handled is not None:
            _log(conn, found.session_id if found else None, phone_id, "sms", handled.outcome)
            return handled
    if found is None or found.session_id is None:
        _log(conn, None, phone_id, "sms", "ended", len(body))
        return InboundResult(_reply(rules.ENDED), "ended")
    if found.to_stopped:
        _log(conn, found.session_id, phone_id, "sms", "recipient_stopped", len(body))
        return InboundResult(_reply(rules.ENDED), "recipient_stopped")
    text_id = outbox.put(conn, found.to_phone_id, found.from_proxy, body, purpose="relay",
                         session_id=found.session_id)
    _log(conn, found.session_id, phone_id, "sms", "relayed", len(body))
    return InboundResult(_reply(None), "relayed", [text_id])


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
