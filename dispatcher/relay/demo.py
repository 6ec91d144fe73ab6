"""A short scripted Contact Me conversation through the sandbox, with the proof the product promises:
neither person's real number appears in anything the other received (texts, senders, caller ids).

For the demo and the privacy test. The sandbox must post its webhooks to a running relay app
(``sandbox.app.twilio.webhook_base``) and the settings must point at the sandbox.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from dispatcher.db.types import Conn
from dispatcher.relay import outbox, posts
from dispatcher.relay.pool import add_proxy_numbers
from dispatcher.relay.sessions import start_contact

#: The demo's fictional people and our fictional proxy numbers (the +1 555 01xx range is for fiction).
DEMO_AUTHOR = "+15550109001"
DEMO_HELPER = "+15550109002"
DEMO_PROXIES = ("+15550109901", "+15550109902")


class Phones(Protocol):
    """What the conversation needs from the sandbox (:class:`dispatcher.sandbox.SandboxServer`)."""

    def twilio_inbound(self, kind: str, from_: str, to: str, body: str = "") -> dict[str, Any]: ...

    def records(self, stream: str = ...) -> list[dict[str, Any]]: ...


@dataclass
class ConversationProof:
    """What each side received, and every place a real number showed up in it (should be none)."""

    received: dict[str, list[str]] = field(default_factory=dict)
    leaks: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.leaks and all(self.received.values())


def _send_stored(conn: Conn) -> None:
    for (outbox_id,) in conn.execute("SELECT id FROM relay_outbox ORDER BY id").fetchall():
        outbox.send_one(conn, int(outbox_id))


def run_scripted_conversation(conn: Conn, phones: Phones, post_id: str = "demo-lost-dog") -> ConversationProof:
    """Contact Me on, confirmation by text, a few texts each way and a call; then the proof."""
    add_proxy_numbers(conn, list(DEMO_PROXIES))
    if posts.enable_contact_me(conn, post_id, DEMO_AUTHOR).value == "pending":
        _send_stored(conn)
        confirm_from = [m for m in phones.records("twilio_messages") if m["to"] == DEMO_AUTHOR][-1]["from"]
        phones.twilio_inbound("sms", DEMO_AUTHOR, confirm_from, "YES")
    helper_proxy = start_contact(conn, post_id, DEMO_HELPER, "sms").proxy_number
    phones.twilio_inbound("sms", DEMO_HELPER, helper_proxy, "Hi, I think I saw your dog near the park.")
    _send_stored(conn)
    author_proxy = next(m["from"] for m in reversed(phones.records("twilio_messages"))
                        if m["to"] == DEMO_AUTHOR and m["via"] == "rest")
    phones.twilio_inbound("sms", DEMO_AUTHOR, author_proxy, "Thank you! Which entrance?")
    _send_stored(conn)
    phones.twilio_inbound("sms", DEMO_HELPER, helper_proxy, "The north gate, ten minutes ago.")
    _send_stored(conn)
    phones.twilio_inbound("call", DEMO_AUTHOR, author_proxy)
    return prove(phones, {DEMO_AUTHOR: DEMO_HELPER, DEMO_HELPER: DEMO_AUTHOR})


def prove(phones: Phones, counterpart: dict[str, str]) -> ConversationProof:
    """For each person, everything their phone showed, checked for any real number but their own."""
    proof = ConversationProof()
    real = set(counterpart)
    for person in counterpart:
        shown: list[str] = []
        for message in phones.records("twilio_messages"):
            if message["to"] == person and message["delivered"]:
                shown += [message["from"], message["body"]]
        for call in phones.records("twilio_calls"):
            if call["to"] == person and call["connected"]:
                shown.append(call["caller_id"])
        proof.received[person] = shown
        for item in shown:
            for number in real:
                if number in item or number.lstrip("+") in item:
                    proof.leaks.append(f"a real number appeared in what one side received: {item[:3]}…")
    return proof
