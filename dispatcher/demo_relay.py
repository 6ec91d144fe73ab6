"""The demo's Contact Me conversation: the relay's webhooks served in this process, the sandbox's
phones posting to them, and the proof that neither person's real number reached the other."""

from __future__ import annotations

import psycopg

from dispatcher.asgi import served_in_thread
from dispatcher.config import Settings, set_settings
from dispatcher.relay.demo import ConversationProof, run_scripted_conversation
from dispatcher.relay.webhooks import create_relay_app
from dispatcher.sandbox.server import SandboxServer

#: Texts a second from one proxy number in the demo: the script sends a few at once, not a campaign.
DEMO_RELAY_RATE = 50.0


def run_contact_me(settings: Settings, sandbox: SandboxServer) -> tuple[Settings, ConversationProof]:
    """One post with Contact Me on and a short conversation through the sandbox's Twilio.

    Returns the settings the relay ran with (installed) and the proof. The relay's texts are sent in
    this thread; the messages it also enqueues find their rows gone when the demo's worker takes them.
    """
    with served_in_thread(create_relay_app(), name="demo-relay") as url:
        settings = settings.with_(relay_public_base_url=url, relay_rate_per_number=DEMO_RELAY_RATE)
        set_settings(settings)
        sandbox.app.twilio.webhook_base = url
        with psycopg.connect(settings.database_url or "", autocommit=True) as conn:
            return settings, run_scripted_conversation(conn, sandbox)
