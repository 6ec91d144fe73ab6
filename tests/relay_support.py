"""Fixtures and a small driver for the relay tests: real PostgreSQL, Redis, the sandbox and the relay's
HTTP app served by uvicorn, so every text and call crosses the same wire as in production."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest

from dispatcher.asgi import served_in_thread
from dispatcher.config import Settings, set_settings
from dispatcher.relay import outbox
from dispatcher.relay.pool import add_proxy_numbers
from dispatcher.relay.webhooks import create_relay_app

RELAY_TABLES = ("relay_abuse_log", "relay_outbox", "relay_sessions", "relay_participants", "relay_pairs",
                "relay_posts", "relay_phones", "relay_proxy_numbers")
API_TOKEN = "relay-test-token-" + "x" * 16
#: Real numbers of the people in the tests (fictional +1 555 range).
AUTHOR = "+15550100001"
HELPER = "+15550100002"
OTHER = "+15550100003"


@pytest.fixture(scope="session")
def relay_server() -> Iterator[str]:
    """The relay's webhook app over real HTTP for the whole run; its base URL."""
    with served_in_thread(create_relay_app(), name="relay") as url:
        yield url


@dataclass
class Relay:
    """Drives the relay as the app and the phones would."""

    settings: Settings
    sandbox: Any
    conn: psycopg.Connection[Any]
    url: str

    def add_numbers(self, count: int, start: int = 0) -> list[str]:
        numbers = [f"+1555020{index:04d}" for index in range(start, start + count)]
        add_proxy_numbers(self.conn, numbers)
        return numbers

    def api(self, method: str, path: str, json: Any = None, token: str | None = API_TOKEN) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.request(method, self.url + path, json=json, headers=headers, timeout=30)

    def enable(self, post: str, author: str = AUTHOR) -> str:
        answer = self.api("PUT", f"/relay/posts/{post}/contact-me", {"author_number": author})
        assert answer.status_code == 200, answer.text
        return str(answer.json()["contact_me"])

    def confirm(self, post: str, author: str = AUTHOR) -> None:
        """Contact Me on ``post``, the author confirming by text as the product asks."""
        if self.enable(post, author) == "pending":
            self.deliver()
            request = [m for m in self.inbox(author) if "reply YES" in m["body"]][-1]
            reply = self.text(author, request["from"], "yes")
            assert "Contact Me is on" in reply["replies"][0]

    def contact(self, post: str, number: str = HELPER, channel: str = "sms") -> httpx.Response:
        return self.api("POST", f"/relay/posts/{post}/contacts", {"number": number, "channel": channel})

    def proxy_for(self, post: str, number: str = HELPER) -> str:
        answer = self.contact(post, number)
        assert answer.status_code == 200, answer.text
        return str(answer.json()["proxy_number"])

    def text(self, from_: str, to: str, body: str) -> dict[str, Any]:
        return dict(self.sandbox.twilio_inbound("sms", from_, to, body))

    def call(self, from_: str, to: str) -> dict[str, Any]:
        return dict(self.sandbox.twilio_inbound("call", from_, to))

    def deliver(self) -> list[str]:
        """Send every stored text now, in this thread (the actor does the same in workers)."""
        ids = [row[0] for row in self.conn.execute("SELECT id FROM relay_outbox ORDER BY id").fetchall()]
        return [outbox.send_one(self.conn, int(i)).outcome for i in ids]

    def inbox(self, number: str) -> list[dict[str, Any]]:
        """Texts the phone ``number`` shows (delivered, not blocked)."""
        return [m for m in self.sandbox.records("twilio_messages") if m["to"] == number and m["delivered"]]

    def relayed_to(self, number: str) -> list[str]:
        return [m["body"] for m in self.inbox(number) if m["via"] == "rest" and "Community Requests" not in m["body"]]


@pytest.fixture
def relay(engine: Settings, sandbox: Any, db: psycopg.Connection[Any], relay_server: str) -> Iterator[Relay]:
    """A clean relay wired to the sandbox: empty tables, no faults, no records, settings installed."""
    db.execute("TRUNCATE " + ", ".join(RELAY_TABLES) + " RESTART IDENTITY CASCADE")
    configured = engine.with_(relay_public_base_url=relay_server, relay_api_token=API_TOKEN,
                              relay_rate_per_number=1000.0)
    set_settings(configured)
    sandbox.app.twilio.webhook_base = relay_server
    try:
        yield Relay(configured, sandbox, db, relay_server)
    finally:
        set_settings(engine)
