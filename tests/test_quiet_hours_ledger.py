"""Quiet hours in the ledger: held when claimed, released in the morning, understood by completion, the
reconciler, the fan-out and `dispatcher status`. Clocks are explicit: a frozen ``now`` for the claim's
decision, or rows and settings placed around the database's own clock; nothing sleeps."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import redis
from psycopg import sql

from dispatcher import fanout, ledger, lifecycle, reconciler
from dispatcher.config import Settings, get_settings, set_settings
from dispatcher.contract import parse_request
from dispatcher.ledger import Channel, Outcome, Status
from dispatcher.lifecycle import State
from dispatcher.ops.status import collect_status, render_status
from dispatcher.pipeline import distribute
from dispatcher.preferences import updates
from dispatcher.preferences.quiet_hours import HELD, QUIET_PAST_WINDOW
from tests.factories import add_resident, request_payload

Conn = psycopg.Connection[Any]
INSIDE = (40.015, -105.273)
#: 23:00 in New York, 12:00 in Tokyo, 04:00 in London (summer time).
NY_NIGHT = datetime(2026, 6, 11, 3, 0, tzinfo=UTC)
NY_MORNING = datetime(2026, 6, 11, 11, 0, tzinfo=UTC)  # 07:00 EDT
#: The longest a tiny test request's release is spread over (a handful of rows at the default FCM rate).
SPREAD = timedelta(seconds=1)


@pytest.fixture
def quiet(settings: Settings) -> Iterator[Settings]:
    """Quiet hours switched on (the test suite runs with them off)."""
    before = get_settings()
    on = before.with_(quiet_hours=True)
    set_settings(on)
    try:
        yield on
    finally:
        set_settings(before)


def _request(db: Conn, residents: list[int], request_id: str = "req-q", *, sending: bool = True,
             published: datetime | None = None, **payload: Any) -> None:
    stored = lifecycle.accept(db, parse_request(request_payload(request_id, published=published, **payload)))
    assert stored.state is State.ACCEPTED
    ledger.insert_deliveries(db, request_id, sql.SQL("SELECT unnest(%s::bigint[])"), [residents])
    if sending:
        assert lifecycle.transition(db, request_id, State.TARGETING, from_={State.ACCEPTED})
        assert lifecycle.transition(db, request_id, State.SENDING, from_={State.TARGETING})


def _resident(db: Conn, resident_id: int, zone: str, **kw: Any) -> None:
    add_resident(db, resident_id, *INSIDE, email=f"r{resident_id}@example.test", tokens=[f"tok-{resident_id}"],
                 time_zone=zone, **kw)


def _claim(db: Conn, channel: Channel, now: datetime | None, request_id: str = "req-q") -> list[int]:
    return ledger.claim_batch(db, request_id, channel, size=100, owner="w", lease_seconds=60, now=now)


def _row(db: Conn, resident_id: int, channel: str = "push", request_id: str = "req-q") -> tuple[Any, ...]:
    row = db.execute(
        "SELECT status, reason, not_before, lease_owner, attempts FROM deliveries"
        " WHERE request_id = %s AND channel = %s AND resident_id = %s", (request_id, channel, resident_id),
    ).fetchone()
    assert row is not None
    return tuple(row)


def _db_now(db: Conn) -> datetime:
    row = db.execute("SELECT now()").fetchone()
    assert row is not None and isinstance(row[0], datetime)
    return row[0].astimezone(UTC)


def _quiet_around_now(db: Conn, resident_id: int, ends_in: timedelta, version: int = 1) -> None:
    """Give a resident (on UTC) quiet hours that started an hour ago and end in about ``ends_in``."""
    now = _db_now(db)
    assert updates.change_settings(db, resident_id, version=version,
                                   quiet_start=(now - timedelta(hours=1)).strftime("%H:%M"),
                                   quiet_end=(now + ends_in).strftime("%H:%M"))


def test_a_night_push_is_held_until_the_residents_morning_while_day_and_email_go_at_once(
        db: Conn, quiet: Settings) -> None:
    _resident(db, 1, "America/New_York")
    _resident(db, 2, "Asia/Tokyo")
    _resident(db, 3, "America/New_York")
    _resident(db, 4, "Europe/London")
    assert updates.change_settings(db, 3, version=1, quiet_hours=False)
    _request(db, [1, 2, 3, 4])

    assert _claim(db, Channel.PUSH, NY_NIGHT) == [2, 3]
    status, reason, not_before, owner, attempts = _row(db, 1)
    assert (status, reason, owner, attempts) == ("pending", HELD, None, 0)
    assert NY_MORNING <= not_before <= NY_MORNING + SPREAD
    london = _row(db, 4)[2]
    assert datetime(2026, 6, 11, 6, 0, tzinfo=UTC) <= london <= datetime(2026, 6, 11, 6, 0, 1, tzinfo=UTC)
    assert _claim(db, Channel.EMAIL, NY_NIGHT) == [1, 2, 3, 4]  # email wakes no one

    assert _claim(db, Channel.PUSH, NY_MORNING - timedelta(minutes=1)) == [4]
    assert _claim(db, Channel.PUSH, NY_MORNING + SPREAD) == [1]
    assert _row(db, 1)[3] == "w"  # leased for sending now; the hold is over


def test_a_claim_holds_batch_after_batch_until_it_finds_rows_to_send(db: Conn, quiet: Settings) -> None:
    for rid in range(1, 6):
        _resident(db, rid, "America/New_York")
    _resident(db, 6, "Asia/Tokyo")
    _request(db, list(range(1, 7)))
    claim = ledger.claim_batch(db, "req-q", Channel.PUSH, size=2, owner="w", lease_seconds=60, now=NY_NIGHT)
    assert claim == [6]
    held = db.execute("SELECT count(*) FROM deliveries WHERE channel = 'push' AND not_before IS NOT NULL"
                      " AND lease_owner IS NULL AND attempts = 0").fetchone()
    assert held == (5,)
    assert ledger.claim_batch(db, "req-q", Channel.PUSH, size=2, owner="w", lease_seconds=60, now=NY_NIGHT) == []


#: (case, zone, claimed at, the quiet period's end in UTC): nights across daylight saving time.
DST_NIGHTS = [
    ("New York spring forward", "America/New_York", datetime(2026, 3, 8, 4, 0, tzinfo=UTC),
     datetime(2026, 3, 8, 11, 0, tzinfo=UTC)),
    ("New York fall back", "America/New_York", datetime(2026, 11, 1, 3, 0, tzinfo=UTC),
     datetime(2026, 11, 1, 12, 0, tzinfo=UTC)),
    ("London summer time starts", "Europe/London", datetime(2026, 3, 28, 23, 0, tzinfo=UTC),
     datetime(2026, 3, 29, 6, 0, tzinfo=UTC)),
    ("London summer time ends", "Europe/London", datetime(2026, 10, 24, 22, 0, tzinfo=UTC),
     datetime(2026, 10, 25, 7, 0, tzinfo=UTC)),
]


@pytest.mark.parametrize(("case", "zone", "night", "end"), DST_NIGHTS, ids=[c[0] for c in DST_NIGHTS])
def test_a_hold_across_daylight_saving_time_ends_at_seven_on_the_new_clock(
        db: Conn, quiet: Settings, case: str, zone: str, night: datetime, end: datetime) -> None:
    _resident(db, 1, zone)
    _request(db, [1])
    assert _claim(db, Channel.PUSH, night) == []
    assert end <= _row(db, 1)[2] <= end + SPREAD
    # One hour before the end on the new clock is still night (on the old clock it would be morning).
    assert _claim(db, Channel.PUSH, end - timedelta(hours=1)) == []
    assert _claim(db, Channel.PUSH, end - timedelta(seconds=1)) == []
    assert _claim(db, Channel.PUSH, end + SPREAD) == [1]


def test_urgent_requests_go_at_once_at_night(db: Conn, quiet: Settings) -> None:
    _resident(db, 1, "America/New_York")
    _request(db, [1], incident_type="missing_person")
    assert _claim(db, Channel.PUSH, NY_NIGHT) == [1]


def test_email_is_held_too_when_configured(db: Conn, quiet: Settings) -> None:
    set_settings(quiet.with_(quiet_hours_email=True))
    _resident(db, 1, "America/New_York")
    _request(db, [1])
    assert _claim(db, Channel.EMAIL, NY_NIGHT) == []
    assert NY_MORNING <= _row(db, 1, "email")[2] <= NY_MORNING + SPREAD


def test_quiet_hours_switched_off_fleet_wide_hold_nothing(db: Conn, settings: Settings) -> None:
    assert get_settings().quiet_hours is False
    _resident(db, 1, "America/New_York")
    _request(db, [1])
    assert _claim(db, Channel.PUSH, NY_NIGHT) == [1]


def test_a_night_that_outlasts_the_response_window_expires_the_push_with_a_reason(db: Conn, quiet: Settings) -> None:
    _resident(db, 1, "UTC")
    _resident(db, 2, "UTC")
    _quiet_around_now(db, 1, ends_in=timedelta(hours=3))
    _quiet_around_now(db, 2, ends_in=timedelta(minutes=30))
    # The response window closes in two hours: resident 1's night ends after it, resident 2's before.
    _request(db, [1, 2], published=_db_now(db) - timedelta(days=60) + timedelta(hours=2))
    assert _claim(db, Channel.PUSH, None) == []
    assert _row(db, 1)[:2] == ("expired", QUIET_PAST_WINDOW)
    assert _row(db, 2)[:2] == ("pending", HELD)
    assert _claim(db, Channel.EMAIL, None) == [1, 2]


def test_settings_changed_while_held_are_honoured_at_the_next_claim(db: Conn, quiet: Settings) -> None:
    for rid in (1, 2, 3, 4):
        _resident(db, rid, "America/New_York")
    _request(db, [1, 2, 3, 4])
    assert _claim(db, Channel.PUSH, NY_NIGHT) == []
    later = NY_NIGHT + timedelta(minutes=5)

    assert updates.change_settings(db, 1, version=2, quiet_hours=False)  # switched off: goes now
    assert updates.change_settings(db, 2, version=2, quiet_end="06:00")  # an earlier morning
    assert updates.upsert_resident(db, 3, version=2, lat=INSIDE[0], lng=INSIDE[1], email="r3@example.test",
                                   time_zone="Asia/Tokyo")  # moved to where it is noon
    assert updates.change_settings(db, 4, version=2, push=True)  # unrelated: stays held
    assert not updates.change_settings(db, 1, version=1, quiet_hours=True)  # an older message: ignored

    assert _claim(db, Channel.PUSH, later) == [1, 3]
    assert datetime(2026, 6, 11, 10, 0, tzinfo=UTC) <= _row(db, 2)[2] <= datetime(2026, 6, 11, 10, 0, 1, tzinfo=UTC)
    assert NY_MORNING <= _row(db, 4)[2] <= NY_MORNING + SPREAD
    assert updates.change_settings(db, 2, version=3, quiet_start="02:00", quiet_end="03:00")  # 23:05: not quiet
    assert _claim(db, Channel.PUSH, later) == [2]


def test_held_rows_keep_the_request_open_and_the_reconciler_wakes_it_when_they_end(
        db: Conn, quiet: Settings) -> None:
    _resident(db, 1, "UTC")
    _resident(db, 2, "UTC")
    _quiet_around_now(db, 1, ends_in=timedelta(hours=3))
    assert updates.change_settings(db, 2, version=1, quiet_hours=False)
    _request(db, [1, 2])
    assert _claim(db, Channel.PUSH, None) == [2]
    ledger.record_outcomes(db, "req-q", Channel.PUSH, {2: Outcome(Status.SENT)})
    assert _claim(db, Channel.EMAIL, None) == [1, 2]
    ledger.record_outcomes(db, "req-q", Channel.EMAIL, {1: Outcome(Status.SENT), 2: Outcome(Status.SENT)})

    work = ledger.pending_work(db, "req-q", Channel.PUSH)
    assert (work.claimable, work.leased, work.held) == (0, 0, 1)
    assert work.next_hold_end_seconds is not None and 2 * 3600 - 60 < work.next_hold_end_seconds <= 3 * 3600
    assert not lifecycle.complete_if_done(db, "req-q")
    nudged: list[tuple[str, Channel]] = []
    nudges = reconciler.Nudges(target=lambda r, u: None, drain=lambda r, c, u: nudged.append((r, c)))
    db.execute("UPDATE request_activity SET active_at = now() - interval '1 hour'")
    report = reconciler.sweep(db, nudges=nudges, stale_seconds=30)
    assert report is not None and report.completed == [] and nudged == []  # held: neither done nor stuck

    # The night passes (the hold's end is placed before the database clock instead of waiting for it).
    db.execute("UPDATE deliveries SET not_before = now() - interval '1 second' WHERE not_before IS NOT NULL")
    report = reconciler.sweep(db, nudges=nudges, stale_seconds=30)
    assert report is not None and nudged == [("req-q", Channel.PUSH)]
    assert _claim(db, Channel.PUSH, _db_now(db) + timedelta(hours=3)) == [1]  # the morning, by its clock
    ledger.record_outcomes(db, "req-q", Channel.PUSH, {1: Outcome(Status.SENT)})
    assert lifecycle.complete_if_done(db, "req-q")


def test_the_fanout_stops_for_a_long_hold_and_follows_a_short_one(db: Conn, engine: Settings, sandbox: Any) -> None:
    set_settings(engine.with_(quiet_hours=True))
    for rid in (1, 2):
        _resident(db, rid, "UTC")
    _quiet_around_now(db, 1, ends_in=timedelta(hours=3))
    _quiet_around_now(db, 2, ends_in=timedelta(minutes=3))
    outcome = distribute(request_payload("fan-q"))
    assert outcome.state == "sending"

    report = fanout.drain("fan-q", Channel.PUSH, budget_seconds=5)
    assert report.more_work and report.retry_in is not None and 60 < report.retry_in <= 182
    assert fanout.drain("fan-q", Channel.EMAIL, budget_seconds=5).outcomes == {"sent": 2}
    sandbox.flush()
    assert sandbox.records("fcm") == []

    db.execute("UPDATE deliveries SET not_before = NULL WHERE resident_id = 2")  # resident 2's morning came
    assert updates.change_settings(db, 2, version=2, quiet_hours=False)
    report = fanout.drain("fan-q", Channel.PUSH, budget_seconds=5)
    assert report.outcomes == {"sent": 1} and not report.more_work  # resident 1 waits for the reconciler
    assert Counter(str(r[0]) for r in db.execute("SELECT status FROM deliveries WHERE request_id = 'fan-q'")) \
        == Counter({"sent": 3, "pending": 1})
    assert db.execute("SELECT state FROM community_requests WHERE id = 'fan-q'").fetchone() == ("sending",)


def test_status_shows_held_rows_and_until_when_and_a_held_request_is_not_overdue(
        db: Conn, redis_client: redis.Redis) -> None:
    for rid in range(1, 6):
        _resident(db, rid, "UTC")
    _request(db, list(range(1, 6)))
    db.execute("UPDATE community_requests SET targeted_at = now() - interval '3 hours'")
    db.execute("UPDATE deliveries SET not_before = now() + make_interval(hours => 2 + resident_id::int), reason = %s"
               " WHERE channel = 'push' AND resident_id <= 4", (HELD,))
    db.execute("UPDATE deliveries SET status = 'sent', updated_at = now() - interval '2 hours'"
               " WHERE channel = 'email' OR resident_id = 5")

    snapshot = collect_status(conn=db)

    [request] = snapshot["requests"]
    now = _db_now(db)
    until = datetime.fromisoformat(request["held"]["push"]["until"])
    assert request["held"]["push"]["count"] == 4 and request["recipients"]["push"]["pending"] == 4
    assert timedelta(hours=6) - timedelta(minutes=1) < until - now <= timedelta(hours=6)
    assert request["held"]["email"] == {"count": 0, "until": None}
    assert request["overdue"] is False
    assert request["eta"] is not None and datetime.fromisoformat(request["eta"]) >= until - timedelta(seconds=1)

    from rich.console import Console

    console = Console(record=True, width=200)
    render_status(snapshot, console)
    text = console.export_text()
    assert "held until" in text and "in 6.0h" in text


def test_quiet_settings_arrive_through_the_residents_worker(db: Conn, redis_client: redis.Redis) -> None:
    import dramatiq

    from dispatcher.preferences import actors
    from dispatcher.queues import RESIDENTS_QUEUE

    broker = dramatiq.get_broker()
    broker.flush_all()
    worker = dramatiq.Worker(broker, queues={RESIDENTS_QUEUE}, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        actors.resident_upserted.send(1, 1, 40.0, -74.0, None, "en-US", "America/New_York")
        broker.join(RESIDENTS_QUEUE, timeout=10_000)
        actors.settings_changed.send(1, 2, quiet_start="21:15", quiet_end="06:45")
        actors.settings_changed.send(1, 3, quiet_hours=False)
        broker.join(RESIDENTS_QUEUE, timeout=10_000)
    finally:
        worker.stop()
    assert db.execute("SELECT quiet_hours, quiet_start::text, quiet_end::text FROM resident_settings").fetchall() \
        == [(False, "21:15:00", "06:45:00")]
