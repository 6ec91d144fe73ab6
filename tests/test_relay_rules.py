"""Contact Me's product rules, each against real PostgreSQL, Redis, the Twilio sandbox and the relay's
HTTP app: confirmation, relaying, calls, the 7- and 30-day limits, CANCEL/STOP/HELP, remove versus hide,
resolve and delete, blocking, and the polite reply to an ended conversation."""

from __future__ import annotations

import time
from typing import Any

from dispatcher.relay.sweep import sweep_relay
from tests.relay_support import AUTHOR, HELPER, OTHER, Relay

ENDED = "this conversation has ended"


def _author_proxy(r: Relay, helper: str = HELPER, post: str = "p1") -> str:
    """The proxy number the author sees a helper through (the sender of what the helper's text became)."""
    r.text(helper, r.proxy_for(post, helper), "hello")
    r.deliver()
    return str([m for m in r.inbox(AUTHOR) if m["via"] == "rest"][-1]["from"])


def _session_state(r: Relay, session_id: int) -> tuple[Any, ...]:
    row = r.conn.execute("SELECT state, end_reason FROM relay_sessions WHERE id = %s", (session_id,)).fetchone()
    assert row is not None
    return tuple(row)


def test_contact_me_needs_the_authors_confirmation_by_text_first(relay: Relay) -> None:
    relay.add_numbers(3)
    assert relay.enable("p1") == "pending"
    refused = relay.contact("p1")
    assert refused.status_code == 409 and refused.json()["error"] == "PostNotContactable"
    relay.deliver()
    request = relay.inbox(AUTHOR)
    assert len(request) == 1 and "reply YES" in request[0]["body"]
    # YES from a stranger confirms nothing.
    relay.text(OTHER, request[0]["from"], "YES")
    assert relay.contact("p1").status_code == 409
    answer = relay.text(AUTHOR, request[0]["from"], "Yes")
    assert "Contact Me is on" in answer["replies"][0]
    assert relay.contact("p1").status_code == 200
    # A confirmed number needs no second confirmation for the next post.
    assert relay.enable("p2") == "on"


def test_texts_are_relayed_both_ways_from_proxy_numbers_only(relay: Relay) -> None:
    relay.add_numbers(3)
    relay.confirm("p1")
    helper_proxy = relay.proxy_for("p1")
    relay.text(HELPER, helper_proxy, "I saw your cat on Elm Street")
    relay.deliver()
    to_author = [m for m in relay.inbox(AUTHOR) if m["via"] == "rest"][-1]
    assert to_author["body"] == "I saw your cat on Elm Street"
    author_proxy = to_author["from"]
    assert author_proxy != HELPER
    relay.text(AUTHOR, author_proxy, "Thank you, which house?")
    relay.deliver()
    to_helper = relay.inbox(HELPER)[-1]
    assert to_helper == {**to_helper, "body": "Thank you, which house?", "from": helper_proxy}
    assert relay.conn.execute("SELECT count(*) FROM relay_outbox").fetchone() == (0,)  # bodies not kept


def test_yes_and_start_out_of_context_are_relayed_as_ordinary_texts(relay: Relay) -> None:
    relay.add_numbers(3)
    relay.confirm("p1")
    helper_proxy = relay.proxy_for("p1")
    for word in ("Yes", "START"):  # the author has nothing pending, the helper never texted STOP
        assert relay.text(HELPER, helper_proxy, word)["replies"] == []
    relay.deliver()
    assert relay.relayed_to(AUTHOR) == ["Yes", "START"]
    outcomes = relay.conn.execute("SELECT outcome FROM relay_abuse_log ORDER BY id").fetchall()
    assert outcomes[-2:] == [("relayed",), ("relayed",)]


def test_a_call_is_bridged_with_the_proxy_number_as_caller_id(relay: Relay) -> None:
    relay.add_numbers(3)
    relay.confirm("p1")
    helper_proxy = relay.contact("p1", channel="call").json()["proxy_number"]
    answer = relay.call(HELPER, helper_proxy)
    assert answer["dial"]["numbers"] == [AUTHOR]
    author_proxy = answer["dial"]["caller_id"]
    assert author_proxy not in (HELPER, AUTHOR)
    back = relay.call(AUTHOR, author_proxy)
    assert back["dial"] == {"caller_id": helper_proxy, "numbers": [HELPER]}


def test_a_session_ends_after_seven_days_even_before_the_sweep_runs(relay: Relay) -> None:
    relay.add_numbers(3)
    relay.confirm("p1")
    offer = relay.contact("p1").json()
    relay.conn.execute("UPDATE relay_sessions SET expires_at = now() - interval '1 second'")
    reply = relay.text(HELPER, offer["proxy_number"], "still there?")
    assert ENDED in reply["replies"][0]
    assert relay.deliver() == [] and relay.relayed_to(AUTHOR) == []
    call = relay.call(HELPER, offer["proxy_number"])
    assert call["dial"] is None and "ended" in call["said"]
    report = sweep_relay(relay.conn)
    assert report is not None and report.expired_sessions == 1
    assert _session_state(relay, offer["session_id"]) == ("expired", "expired")


def test_contact_me_switches_itself_off_after_thirty_days_and_conversations_go_on(relay: Relay) -> None:
    relay.add_numbers(3)
    relay.confirm("p1")
    proxy = relay.proxy_for("p1")
    relay.conn.execute("UPDATE relay_posts SET contact_until = now() - interval '1 second'")
    assert relay.contact("p1", OTHER).status_code == 409  # refused before any sweep
    report = sweep_relay(relay.conn)
    assert report is not None and report.switched_off_posts == 1
    assert relay.conn.execute("SELECT state, off_reason FROM relay_posts").fetchone() == ("off", "expired")
    relay.text(HELPER, proxy, "found it?")
    relay.deliver()
    assert relay.relayed_to(AUTHOR) == ["found it?"]


def test_cancel_from_the_author_turns_contact_me_off_on_every_post(relay: Relay) -> None:
    relay.add_numbers(4)
    relay.confirm("p1")
    relay.enable("p2")
    relay.enable("p3")
    relay.api("DELETE", "/relay/posts/p3/contact-me")  # already off: stays off, reason kept
    helper_proxy = relay.proxy_for("p1")
    author_proxy = _author_proxy(relay)
    answer = relay.text(AUTHOR, author_proxy, "CANCEL")
    assert "off on all your posts" in answer["replies"][0]
    states = dict(relay.conn.execute("SELECT post_id, off_reason FROM relay_posts").fetchall())
    assert states == {"p1": "cancelled", "p2": "cancelled", "p3": "removed"}
    assert relay.contact("p2", OTHER).status_code == 409
    reply = relay.text(HELPER, helper_proxy, "hello again")
    assert ENDED in reply["replies"][0]
    relay.deliver()
    assert relay.relayed_to(AUTHOR) == ["hello"]


def test_stop_and_help_follow_carrier_conventions(relay: Relay) -> None:
    relay.add_numbers(3)
    relay.confirm("p1")
    helper_proxy = relay.proxy_for("p1")
    author_proxy = _author_proxy(relay)
    helped = relay.text(HELPER, helper_proxy, "help")
    assert "STOP" in helped["replies"][0]
    stopped = relay.text(HELPER, helper_proxy, "Stop")
    assert "no more messages" in stopped["replies"][0]
    reply = relay.text(AUTHOR, author_proxy, "are you there?")
    assert ENDED in reply["replies"][0]
    relay.deliver()
    assert [m["body"] for m in relay.inbox(HELPER) if m["via"] == "rest"] == []
    assert relay.relayed_to(AUTHOR) == ["hello"]  # HELP and STOP were never relayed
    # Contacting again starts a new session, but the helper's STOP still holds until START.
    relay.contact("p1")
    assert ENDED in relay.text(AUTHOR, author_proxy, "still stopped?")["replies"][0]
    assert "on again" in relay.text(HELPER, helper_proxy, "START")["replies"][0]
    relay.text(AUTHOR, author_proxy, "welcome back")
    relay.deliver()
    assert [m["body"] for m in relay.inbox(HELPER) if m["via"] == "rest"] == ["welcome back"]


def test_remove_stops_new_contacts_and_lets_conversations_finish(relay: Relay) -> None:
    relay.add_numbers(3)
    relay.confirm("p1")
    proxy = relay.proxy_for("p1")
    assert relay.api("DELETE", "/relay/posts/p1/contact-me").json()["contact_me"] == "off"
    assert relay.contact("p1", OTHER).status_code == 409
    relay.text(HELPER, proxy, "still looking?")
    relay.deliver()
    assert relay.relayed_to(AUTHOR) == ["still looking?"]
    relay.conn.execute("UPDATE relay_sessions SET expires_at = now()")
    assert relay.contact("p1", HELPER).status_code == 409  # removed: not even people already in touch


def test_hide_lets_only_people_already_in_touch_start_again(relay: Relay) -> None:
    relay.add_numbers(3)
    relay.confirm("p1")
    proxy = relay.proxy_for("p1")
    assert relay.api("POST", "/relay/posts/p1/contact-me/hide").json()["contact_me"] == "hidden"
    assert relay.contact("p1", OTHER).status_code == 409
    relay.text(HELPER, proxy, "any news?")
    relay.deliver()
    assert relay.relayed_to(AUTHOR) == ["any news?"]
    relay.conn.execute("UPDATE relay_sessions SET expires_at = now()")
    again = relay.contact("p1", HELPER)
    assert again.status_code == 200 and again.json()["proxy_number"] == proxy
    assert relay.api("POST", "/relay/posts/p1/contact-me/unhide").json()["contact_me"] == "on"
    assert relay.contact("p1", OTHER).status_code == 200


def test_resolve_and_delete_cancel_every_session(relay: Relay) -> None:
    relay.add_numbers(4)
    relay.confirm("p1")
    relay.enable("p2")
    first, second = relay.proxy_for("p1", HELPER), relay.proxy_for("p1", OTHER)
    assert relay.api("POST", "/relay/posts/p1/resolve").json()["cancelled_sessions"] == 2
    for number, proxy in ((HELPER, first), (OTHER, second)):
        assert ENDED in relay.text(number, proxy, "found?")["replies"][0]
        assert relay.call(number, proxy)["dial"] is None
    assert relay.contact("p1").status_code == 409
    assert relay.api("PUT", "/relay/posts/p1/contact-me", {"author_number": AUTHOR}).status_code == 409
    third = relay.proxy_for("p2", HELPER)
    assert relay.api("DELETE", "/relay/posts/p2").json()["cancelled_sessions"] == 1
    assert ENDED in relay.text(HELPER, third, "hello")["replies"][0]
    relay.deliver()
    assert relay.relayed_to(AUTHOR) == []


def test_a_person_blocked_on_the_phone_cannot_reach_the_author_again(relay: Relay) -> None:
    relay.add_numbers(4)
    relay.confirm("p1")
    relay.enable("p2")
    blocked_proxy = _author_proxy(relay, HELPER, "p1")
    relay.sandbox.app.twilio.block(AUTHOR, blocked_proxy)  # the author blocks that number on the handset
    relay.conn.execute("UPDATE relay_sessions SET expires_at = now()")
    # The same person comes back about another post: the author sees them through the same number.
    relay.text(HELPER, relay.proxy_for("p2", HELPER), "me again")
    relay.call(HELPER, relay.proxy_for("p2", HELPER))
    relay.deliver()
    assert "me again" not in relay.relayed_to(AUTHOR)
    calls = [c for c in relay.sandbox.records("twilio_calls") if c["to"] == AUTHOR]
    assert calls and not any(c["connected"] for c in calls)
    # Someone else still gets through.
    relay.text(OTHER, relay.proxy_for("p2", OTHER), "I can help")
    relay.deliver()
    assert relay.relayed_to(AUTHOR)[-1] == "I can help"


def test_an_unknown_sender_or_number_gets_a_polite_reply_and_nothing_is_kept(relay: Relay) -> None:
    [proxy] = relay.add_numbers(1)
    reply = relay.text(OTHER, proxy, "hello?")
    assert ENDED in reply["replies"][0]
    assert relay.conn.execute("SELECT count(*) FROM relay_phones").fetchone() == (0,)
    assert relay.text(OTHER, "+15559999999", "hello?")["replies"] == []


def test_the_reconciler_running_in_workers_enforces_the_time_rules(relay: Relay) -> None:
    from dispatcher.reconciler import Nudges, Reconciler

    relay.add_numbers(3)
    relay.confirm("p1")
    offer = relay.contact("p1").json()
    relay.conn.execute("UPDATE relay_sessions SET expires_at = now() - interval '1 second'")
    relay.conn.execute("UPDATE relay_posts SET contact_until = now() - interval '1 second'")
    reconciler = Reconciler(Nudges(target=lambda *a: None, drain=lambda *a: None), interval=0.05, stale_seconds=60)
    reconciler.start()
    try:
        deadline = time.monotonic() + 30
        while _session_state(relay, offer["session_id"])[0] != "expired":
            assert time.monotonic() < deadline, "the reconciler never expired the session"
            time.sleep(0.05)
    finally:
        reconciler.stop()
    assert relay.conn.execute("SELECT state, off_reason FROM relay_posts").fetchone() == ("off", "expired")
