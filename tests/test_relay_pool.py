"""Proxy numbers: a (real number, proxy number) pair identifies one session; numbers are shared across
people when that stays unambiguous; running out is a clear error and a metric, never a wrong delivery;
concurrent contacts never take the same number for the same person."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

from dispatcher.ops.metrics import registry
from dispatcher.relay.errors import ProxyPoolExhausted
from dispatcher.relay.posts import confirm_phone, enable_contact_me
from dispatcher.relay.sessions import start_contact
from tests.relay_support import AUTHOR, HELPER, OTHER, Relay


def _exhausted() -> float:
    return registry().get_sample_value("dispatcher_relay_pool_exhausted_total") or 0.0


def _on(relay: Relay, post: str, author: str) -> None:
    enable_contact_me(relay.conn, post, author)
    phone = relay.conn.execute("SELECT author_phone_id FROM relay_posts WHERE post_id = %s", (post,)).fetchone()
    assert phone is not None
    confirm_phone(relay.conn, int(phone[0]))


def test_each_real_and_proxy_pair_leads_to_one_person_and_numbers_are_shared(relay: Relay) -> None:
    relay.add_numbers(2)
    _on(relay, "p1", AUTHOR)
    _on(relay, "p2", "+15550100009")
    first = start_contact(relay.conn, "p1", HELPER, "sms")
    second = start_contact(relay.conn, "p1", OTHER, "sms")
    # The author sees the two helpers through two different numbers.
    author_side = relay.conn.execute(
        "SELECT e.proxy_id FROM relay_participants e JOIN relay_phones p ON p.id = e.phone_id"
        " JOIN relay_posts po ON po.author_phone_id = p.id WHERE po.post_id = 'p1'").fetchall()
    assert len(author_side) == 2 and len(set(author_side)) == 2
    # The second author's helpers reuse the same two numbers: unambiguous for each person.
    third = start_contact(relay.conn, "p2", HELPER, "sms")
    assert {first.proxy_number, second.proxy_number} == set(relay.add_numbers(2)) | {third.proxy_number}
    duplicates = relay.conn.execute(
        "SELECT phone_id, proxy_id FROM relay_participants GROUP BY 1, 2 HAVING count(*) > 1").fetchall()
    assert duplicates == []
    # The same contact again is the same session.
    assert start_contact(relay.conn, "p1", HELPER, "sms").session_id == first.session_id


def test_an_exhausted_pool_refuses_clearly_counts_it_and_delivers_nothing_wrong(relay: Relay) -> None:
    relay.add_numbers(2)
    relay.confirm("p1")
    proxies = [relay.proxy_for("p1", HELPER), relay.proxy_for("p1", OTHER)]
    before = _exhausted()
    refused = relay.contact("p1", "+15550100044")
    assert refused.status_code == 503 and refused.json()["error"] == "ProxyPoolExhausted"
    assert _exhausted() == before + 1
    with pytest.raises(ProxyPoolExhausted, match="add numbers to the pool"):
        start_contact(relay.conn, "p1", "+15550100045", "sms")
    # The refused person texting any proxy number reaches no one.
    for proxy in proxies:
        assert "ended" in relay.text("+15550100044", proxy, "hi")["replies"][0]
    relay.deliver()
    assert relay.relayed_to(AUTHOR) == []


def test_concurrent_contacts_never_share_a_number_for_one_person(relay: Relay) -> None:
    pool = relay.add_numbers(6)
    _on(relay, "p1", AUTHOR)
    helpers = [f"+1555031{index:04d}" for index in range(12)]
    url = relay.settings.database_url
    assert url

    def contact(number: str) -> Any:
        with psycopg.connect(url, autocommit=True) as conn:
            try:
                return start_contact(conn, "p1", number, "sms").proxy_number
            except ProxyPoolExhausted:
                return None

    with ThreadPoolExecutor(max_workers=12) as threads:
        results = list(threads.map(contact, helpers))
    assert sum(result is not None for result in results) == len(pool)
    author_side = relay.conn.execute(
        "SELECT e.proxy_id FROM relay_participants e JOIN relay_posts po ON po.author_phone_id = e.phone_id"
        ).fetchall()
    assert len(author_side) == len(pool) == len(set(author_side))
    assert relay.conn.execute("SELECT count(*) FROM relay_sessions WHERE state = 'active'").fetchone() == (len(pool),)


def test_one_active_session_per_pair_a_contact_about_another_post_replaces_it(relay: Relay) -> None:
    relay.add_numbers(2)
    _on(relay, "p1", AUTHOR)
    _on(relay, "p2", AUTHOR)
    first = start_contact(relay.conn, "p1", HELPER, "sms")
    second = start_contact(relay.conn, "p2", HELPER, "call")
    assert second.session_id != first.session_id and second.proxy_number == first.proxy_number
    states = relay.conn.execute("SELECT id, state, end_reason FROM relay_sessions ORDER BY id").fetchall()
    assert states == [(first.session_id, "cancelled", "superseded"), (second.session_id, "active", None)]


def test_cancel_from_someone_without_posts_is_the_carriers_stop(relay: Relay) -> None:
    relay.add_numbers(2)
    relay.confirm("p1")
    proxy = relay.proxy_for("p1")
    assert "no more messages" in relay.text(HELPER, proxy, "cancel")["replies"][0]
    assert relay.conn.execute("SELECT state FROM relay_posts").fetchone() == ("on",)
    assert relay.conn.execute("SELECT state FROM relay_sessions").fetchone() == ("cancelled",)
