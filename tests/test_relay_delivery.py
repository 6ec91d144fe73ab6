"""Getting texts out and webhooks in: X-Twilio-Signature (also behind a proxy), the send actor with its
retries and per-number rate limit in a real dramatiq worker, Twilio's permanent refusals, key rotation
and the retention sweep."""

from __future__ import annotations

import time
from typing import Any

import dramatiq
import pytest
from cryptography.fernet import Fernet, InvalidToken

import dispatcher.relay.actors  # noqa: F401  (declares the send actor before the worker starts)
from dispatcher.config import set_settings
from dispatcher.relay.errors import InvalidRelayKey
from dispatcher.relay.keys import number_fernet
from dispatcher.relay.phones import decrypt_number, ensure_phone, phone_number, rotate_number_keys
from dispatcher.relay.sweep import sweep_relay
from tests.relay_support import AUTHOR, HELPER, Relay


def _wait_for(check: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_webhooks_without_twilios_signature_are_refused(relay: Relay) -> None:
    relay.add_numbers(3)
    relay.confirm("p1")
    proxy = relay.proxy_for("p1")
    forged = relay.sandbox.twilio_inbound("sms", HELPER, proxy, "forged", signature="bm90IGEgc2lnbmF0dXJl")
    assert forged["status"] == 403
    other_url = relay.sandbox.twilio_inbound("sms", HELPER, proxy, "wrong url",
                                              signed_url="https://elsewhere.example/relay/twilio/sms")
    assert other_url["status"] == 403
    call = relay.sandbox.twilio_inbound("call", HELPER, proxy, signature="bm90IGEgc2lnbmF0dXJl")
    assert call["status"] == 403 and call["dial"] is None
    relay.deliver()
    assert relay.relayed_to(AUTHOR) == []


def test_signatures_are_checked_against_the_public_url_behind_a_proxy(relay: Relay) -> None:
    relay.add_numbers(3)
    relay.confirm("p1")
    proxy = relay.proxy_for("p1")
    set_settings(relay.settings.with_(relay_public_base_url="https://relay.example.org"))
    direct = relay.text(HELPER, proxy, "signed for the local address")
    assert direct["status"] == 403
    proxied = relay.sandbox.twilio_inbound("sms", HELPER, proxy, "via the proxy",
                                            signed_url="https://relay.example.org/relay/twilio/sms")
    assert proxied["status"] == 200
    relay.deliver()
    assert relay.relayed_to(AUTHOR) == ["via the proxy"]


def test_the_actor_sends_with_retries_through_provider_faults(relay: Relay, worker: dramatiq.Worker) -> None:
    relay.add_numbers(3)
    relay.confirm("p1")
    proxy = relay.proxy_for("p1")
    relay.sandbox.faults.update("twilio", burst_count=2, burst_status=503)
    relay.text(HELPER, proxy, "through the worker")
    _wait_for(lambda: relay.relayed_to(AUTHOR) == ["through the worker"])
    assert relay.sandbox.stats()["calls"].get("twilio.fault_503") == 2
    _wait_for(lambda: relay.conn.execute("SELECT count(*) FROM relay_outbox").fetchone() == (0,))


def test_one_proxy_number_sends_at_most_its_rate(relay: Relay, worker: dramatiq.Worker) -> None:
    set_settings(relay.settings.with_(relay_rate_per_number=1.0))
    relay.add_numbers(3)
    relay.confirm("p1")
    proxy = relay.proxy_for("p1")
    for index in range(3):
        relay.text(HELPER, proxy, f"text {index}")
    _wait_for(lambda: len(relay.relayed_to(AUTHOR)) == 3)
    stamps = sorted(m["ts"] for m in relay.inbox(AUTHOR) if m["via"] == "rest")
    assert stamps[-1] - stamps[0] >= 1.0  # three texts from one number take at least two windows


def test_a_permanent_refusal_drops_the_text_and_its_body(relay: Relay) -> None:
    relay.add_numbers(3)
    relay.confirm("p1")
    proxy = relay.proxy_for("p1")
    relay.text(HELPER, proxy, "hello")
    sender = relay.conn.execute("SELECT from_number FROM relay_outbox").fetchone()
    assert sender is not None
    relay.sandbox.app.twilio.stopped.add((AUTHOR, sender[0]))  # the author opted out at the carrier
    assert relay.deliver() == ["refused"]
    assert relay.conn.execute("SELECT count(*) FROM relay_outbox").fetchone() == (0,)


def test_numbers_survive_a_key_rotation(relay: Relay, tmp_path: Any) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    set_settings(relay.settings.with_(relay_number_keys=old))
    phone = ensure_phone(relay.conn, HELPER)
    set_settings(relay.settings.with_(relay_number_keys=f"{new},{old}"))
    assert rotate_number_keys(relay.conn) == 1
    set_settings(relay.settings.with_(relay_number_keys=new))
    assert phone_number(relay.conn, phone) == HELPER
    stored = relay.conn.execute("SELECT number_encrypted FROM relay_phones").fetchone()
    assert stored is not None
    set_settings(relay.settings.with_(relay_number_keys=old))
    with pytest.raises(InvalidToken):
        decrypt_number(stored[0])
    with pytest.raises(InvalidRelayKey, match="Fernet keys"):
        number_fernet(relay.settings.with_(relay_number_keys="not-a-key"))


def test_the_sweep_keeps_abuse_metadata_for_a_bounded_time_and_drops_stale_texts(relay: Relay) -> None:
    relay.add_numbers(3)
    relay.confirm("p1")
    proxy = relay.proxy_for("p1")
    relay.text(HELPER, proxy, "old news")
    relay.text(HELPER, proxy, "recent")
    relay.conn.execute("UPDATE relay_abuse_log SET at = now() - interval '31 days' WHERE id = (SELECT min(id)"
                       " FROM relay_abuse_log)")
    relay.conn.execute("UPDATE relay_outbox SET created_at = now() - interval '2 hours' WHERE id = (SELECT min(id)"
                       " FROM relay_outbox)")
    kept = relay.conn.execute("SELECT count(*) FROM relay_abuse_log").fetchone()
    assert kept is not None
    report = sweep_relay(relay.conn, stranded_seconds=3600)
    assert report is not None and report.deleted_abuse_rows == 1 and report.dropped_texts == 1
    assert relay.conn.execute("SELECT count(*) FROM relay_abuse_log").fetchone() == (kept[0] - 1,)
    relay.conn.execute("UPDATE relay_outbox SET created_at = now() - interval '5 minutes'")
    report = sweep_relay(relay.conn)
    assert report is not None and len(report.requeued) == 1  # its queue message was lost: enqueued again
    columns = {row[0] for row in relay.conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'relay_abuse_log'").fetchall()}
    assert columns == {"id", "session_id", "phone_id", "kind", "outcome", "body_chars", "at"}
