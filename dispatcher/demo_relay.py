"""The demo's Contact Me conversation: the relay's webhooks served in this process, the sandbox's
phones posting to them, and the proof that neither person's real number reached the other."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from dispatcher.config import Settings, set_settings
from dispatcher.relay.demo import ConversationProof, run_scripted_conversation
from dispatcher.sandbox.server import SandboxServer

#: Texts a second from one proxy number in the demo: the script sends a few at once, not a campaign.
DEMO_RELAY_RATE = 50.0


@contextmanager
def relay_app_served() -> Iterator[str]:
    """The relay's webhook app served by uvicorn in a background thread; yields its base URL."""
    import uvicorn

    from dispatcher.relay.webhooks import create_relay_app

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(create_relay_app(), loop="asyncio", http="httptools", lifespan="off",
                            access_log=False, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="demo-relay", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the relay app did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def run_contact_me(settings: Settings, sandbox: SandboxServer) -> tuple[Settings, ConversationProof]:
    """One post with Contact Me on and a short conversation through the sandbox's Twilio.

    Returns the settings the relay ran with (installed) and the proof. The relay's texts are sent in
    this thread; the messages it also enqueues find their rows gone when the demo's worker takes them.
    """
    with relay_app_served() as url:
        settings = settings.with_(relay_public_base_url=url, relay_rate_per_number=DEMO_RELAY_RATE)
        set_settings(settings)
        sandbox.app.twilio.webhook_base = url
        with psycopg.connect(settings.database_url or "", autocommit=True) as conn:
            return settings, run_scripted_conversation(conn, sandbox)
