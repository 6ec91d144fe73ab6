"""Targeting streams the ledger: the fan-out sends the first chunk while later chunks are still written,
a crash mid-way is finished by the reconciler with no row missed or doubled, and nothing completes a
request before its last row is in."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import h3
import psycopg
import pytest

from dispatcher import fanout, ledger, lifecycle, reconciler
from dispatcher.config import RESIDENT_CELL_RESOLUTION, Settings
from dispatcher.contract import parse_request
from dispatcher.ledger import Channel
from dispatcher.lifecycle import State
from dispatcher.pipeline import target
from tests.factories import request_payload
from tests.test_lifecycle import RecordedNudges, _age

Conn = psycopg.Connection[Any]
#: Enough residents for several chunks (the first chunk is about a thousand residents).
TOWN = 3_000


def _town(db: Conn, n: int = TOWN) -> None:
    """``n`` residents inside the test square, each with one token and one address (COPY: fast)."""
    with db.cursor() as cur:
        with cur.copy("COPY residents (id, lat, lng, cell, email, time_zone) FROM STDIN") as copy:
            for i in range(1, n + 1):
                lat, lng = 40.011 + (i % 97) * 8e-5, -105.279 + (i // 97) * 3.5e-4
                cell = h3.str_to_int(h3.latlng_to_cell(lat, lng, RESIDENT_CELL_RESOLUTION))
                copy.write_row((i, lat, lng, cell, f"r{i}@example.test", "America/Denver"))
        with cur.copy("COPY device_tokens (token, resident_id) FROM STDIN") as copy:
            for i in range(1, n + 1):
                copy.write_row((f"tok-{i}", i))


def _accept(db: Conn, request_id: str) -> None:
    lifecycle.accept(db, parse_request(request_payload(request_id)))


def _rows(db: Conn, request_id: str) -> Counter[tuple[str, str]]:
    return Counter((str(c), str(s)) for c, s in db.execute(
        "SELECT channel, status FROM deliveries WHERE request_id = %s", (request_id,)))


def _state(db: Conn, request_id: str) -> str:
    return str(lifecycle.current_state(db, request_id))


def _drain_all(request_id: str) -> None:
    for channel in Channel:
        while not fanout.drain(request_id, channel, budget_seconds=30).finished:
            pass


@pytest.fixture
def commits(monkeypatch: pytest.MonkeyPatch) -> list[Callable[[int], None]]:
    """Actions run after each committed chunk, in order (the ledger's own hook, wrapped: no mocks of
    the database or the broker)."""
    actions: list[Callable[[int], None]] = []
    original = ledger.delivery_sink

    def sink(request_id: str, **kwargs: Any) -> ledger.DeliverySink:
        built = original(request_id, **kwargs)
        inner = built.on_commit

        def on_commit(written: int) -> None:
            if inner is not None:
                inner(written)
            if actions:
                actions.pop(0)(written)

        built.on_commit = on_commit
        return built

    monkeypatch.setattr(ledger, "delivery_sink", sink)
    return actions


def test_the_first_chunk_is_sent_while_later_chunks_are_still_being_written(
    db: Conn, engine: Settings, sandbox: Any, commits: list[Callable[[int], None]]
) -> None:
    _town(db)
    _accept(db, "stream-1")
    seen: dict[str, Any] = {}

    def fan_out_now(written: int) -> None:
        # Targeting is paused right after its first commit: the fan-out runs against what is in.
        seen["state"] = _state(db, "stream-1")
        seen["written"] = written
        seen["drain"] = fanout.drain("stream-1", Channel.PUSH, budget_seconds=30)
        sandbox.flush()
        seen["sent"] = len(sandbox.records("fcm"))

    commits.append(fan_out_now)
    started: list[bool] = []
    outcome = target("stream-1", on_first_rows=lambda: started.append(True))
    assert started == [True] and not outcome.start_fanout  # started once, from the first commit
    assert seen["state"] == "targeting"
    assert 0 < seen["written"] < 2 * TOWN  # only part of the ledger was in when sending began
    assert 0 < seen["sent"] == seen["written"] // 2 < TOWN
    # The drain caught up with targeting and asked to look again shortly instead of finishing.
    assert seen["drain"].more_work and not seen["drain"].finished
    assert seen["drain"].retry_in == fanout.TARGETING_POLL_SECONDS
    assert outcome.state == "sending" and outcome.recipients_written == 2 * TOWN
    _drain_all("stream-1")
    assert _state(db, "stream-1") == "completed"
    sandbox.flush()
    assert Counter(r["token"] for r in sandbox.records("fcm")) == Counter({f"tok-{i}": 1 for i in range(1, TOWN + 1)})


def test_nothing_completes_a_request_while_its_rows_are_still_being_written(
    db: Conn, engine: Settings, sandbox: Any, commits: list[Callable[[int], None]]
) -> None:
    _town(db)
    _accept(db, "wait-1")
    seen: dict[str, Any] = {}

    def everything_sent_so_far(written: int) -> None:
        _drain_all_claimable("wait-1")
        seen["pending"] = ledger.any_pending(db, "wait-1")
        seen["completed"] = lifecycle.complete_if_done(db, "wait-1")
        seen["sweep"] = reconciler.sweep(db, stale_seconds=30, nudges=RecordedNudges().nudges)
        seen["state"] = _state(db, "wait-1")

    commits.append(everything_sent_so_far)
    target("wait-1")
    assert seen["pending"] is False  # every committed row was sent ...
    assert seen["completed"] is False and seen["sweep"].completed == []  # ... and still not complete
    assert seen["state"] == "targeting"
    assert _rows(db, "wait-1")[("push", "pending")] > 0  # the later chunks came after
    _drain_all("wait-1")
    assert _state(db, "wait-1") == "completed"
    assert _rows(db, "wait-1") == Counter({("push", "sent"): TOWN, ("email", "sent"): TOWN})


def _drain_all_claimable(request_id: str) -> None:
    for channel in Channel:
        fanout.drain(request_id, channel, budget_seconds=30)


def test_a_crash_mid_targeting_is_finished_by_the_reconciler_with_no_row_missed_or_doubled(
    db: Conn, engine: Settings, sandbox: Any, commits: list[Callable[[int], None]]
) -> None:
    _town(db)
    _accept(db, "crash-1")
    assert engine.database_url

    def send_first_chunk(written: int) -> None:
        _drain_all_claimable("crash-1")

    def lose_the_connection(written: int) -> None:
        # The worker's database connection dies between two chunks (a killed worker, a restarted server).
        db.execute("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'"
                   " AND classid = %s::int4::oid", (ledger._WRITER_LOCK_CLASS,))

    commits.extend([send_first_chunk, lose_the_connection])
    with pytest.raises(psycopg.OperationalError):
        target("crash-1")
    assert _state(db, "crash-1") == "targeting"
    partial = _rows(db, "crash-1")
    assert 0 < sum(partial.values()) < 2 * TOWN and partial[("push", "sent")] > 0
    recorded = RecordedNudges()
    reconciler.sweep(db, stale_seconds=30, nudges=recorded.nudges)
    assert recorded.targets == []  # recently active: its message may still be on its way
    _age(db, "crash-1", 120)
    report = reconciler.sweep(db, stale_seconds=30, nudges=recorded.nudges)
    assert report is not None and report.retargeted == ["crash-1"] and report.completed == []
    outcome = target("crash-1")  # what the reconciler's nudge runs
    assert outcome.state == "sending" and outcome.recipients_written == 2 * TOWN - sum(partial.values())
    _drain_all("crash-1")
    assert _state(db, "crash-1") == "completed"
    assert _rows(db, "crash-1") == Counter({("push", "sent"): TOWN, ("email", "sent"): TOWN})
    sandbox.flush()
    assert Counter(r["token"] for r in sandbox.records("fcm")) == Counter({f"tok-{i}": 1 for i in range(1, TOWN + 1)})
    emails = Counter(r["email"] for r in sandbox.records("sendgrid"))
    assert emails == Counter({f"r{i}@example.test": 1 for i in range(1, TOWN + 1)})


def test_a_request_whose_rows_a_live_worker_is_writing_is_left_alone(db: Conn, engine: Settings) -> None:
    _town(db, 20)
    _accept(db, "busy-2")
    _age(db, "busy-2", 120)
    assert engine.database_url
    with psycopg.connect(engine.database_url, autocommit=True) as writer, \
            ledger.writing_rows(writer, "busy-2") as holding:
        assert holding and ledger.rows_being_written(db, "busy-2")
        recorded = RecordedNudges()
        reconciler.sweep(db, stale_seconds=30, nudges=recorded.nudges)
        assert recorded.targets == []
        started: list[bool] = []
        outcome = target("busy-2", on_first_rows=lambda: started.append(True))  # a duplicate message
        assert not outcome.start_fanout and started == [] and sum(_rows(db, "busy-2").values()) == 0
    assert not ledger.rows_being_written(db, "busy-2")
    reconciler.sweep(db, stale_seconds=30, nudges=recorded.nudges)
    assert recorded.targets == [("busy-2", False)]


def test_a_request_expired_while_its_rows_were_written_keeps_nothing_pending(
    db: Conn, engine: Settings, commits: list[Callable[[int], None]]
) -> None:
    _town(db)
    _accept(db, "late-1")

    def window_ends(written: int) -> None:
        db.execute("UPDATE community_requests SET respond_until = now() - interval '1 second' WHERE id = 'late-1'")
        lifecycle.expire(db, "late-1")

    commits.append(window_ends)
    outcome = target("late-1")
    assert outcome.state == State.EXPIRED.value and not outcome.start_fanout
    assert set(_rows(db, "late-1")) == {("push", "expired"), ("email", "expired")}


def test_the_sink_commits_growing_chunks_and_leaves_no_staged_id_behind(db: Conn, engine: Settings) -> None:
    _town(db)
    _accept(db, "chunks-1")
    from psycopg import sql

    ids = "{" + ",".join(str(i) for i in range(1, TOWN + 1)) + "}"
    seen: list[int] = []
    sink = ledger.delivery_sink("chunks-1", on_commit=seen.append, first_chunk=100, max_chunk=800)
    written = sink(db, sql.SQL("SELECT unnest(%s::bigint[])"), [ids])
    assert written == sink.written == 2 * TOWN and seen[-1] == 2 * TOWN
    assert len(seen) >= 5 and seen == sorted(seen) and seen[0] < 2 * 800  # small first, growing, each committed
    again = ledger.delivery_sink("chunks-1")
    assert again(db, sql.SQL("SELECT unnest(%s::bigint[])"), [ids]) == 0  # re-running writes nothing
    sink.close(db)
    assert _rows(db, "chunks-1") == Counter({("push", "pending"): TOWN, ("email", "pending"): TOWN})


def _staged_rows_known(db: Conn) -> float:
    """What the planner knows of the staged table's size (-1: never analyzed, it guesses ten pages)."""
    row = db.execute("SELECT reltuples FROM pg_class WHERE oid = 'pg_temp.dispatcher_targeted'::regclass").fetchone()
    assert row is not None
    return float(row[0])


def test_a_small_staged_set_is_analyzed_so_its_residents_are_looked_up_not_hashed(
        db: Conn, engine: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A district's few hundred ids: the planner must know they are few, or it hashes the whole metro."""
    from psycopg import sql

    _town(db)
    _accept(db, "small-1")
    sink = ledger.delivery_sink("small-1")
    assert sink(db, sql.SQL("SELECT unnest(%s::bigint[])"), ["{" + ",".join(map(str, range(1, 301))) + "}"]) == 600
    assert _staged_rows_known(db) == 300
    sink.close(db)
    monkeypatch.setattr(ledger, "ANALYZE_STAGED_BELOW", TOWN)  # at and above the bound: left as it is
    _accept(db, "large-1")
    large = ledger.delivery_sink("large-1")
    many = "{" + ",".join(str(i) for i in range(1, TOWN + 1)) + "}"
    assert large(db, sql.SQL("SELECT unnest(%s::bigint[])"), [many]) == 2 * TOWN
    assert _staged_rows_known(db) == -1
    large.close(db)


def _position(i: int) -> tuple[float, float]:
    """Where :func:`_town` puts resident ``i`` (lat, lng)."""
    return 40.011 + (i % 97) * 8e-5, -105.279 + (i // 97) * 3.5e-4


def test_with_real_workers_an_urgent_request_goes_out_while_a_large_one_is_still_being_targeted(
    db: Conn, engine: Settings, sandbox: Any, worker: Any, commits: list[Callable[[int], None]]
) -> None:
    from dispatcher.publishing import publish
    from tests.test_end_to_end import wait_for_state

    _town(db)
    release = threading.Event()
    paused = threading.Event()

    def hold_targeting(written: int) -> None:  # the large request's targeting stalls after its first chunk
        paused.set()
        release.wait(60)

    commits.append(hold_targeting)
    publish(request_payload("large-1"))
    assert paused.wait(30)
    box = [[-105.2791, 40.0109], [-105.2775, 40.0109], [-105.2775, 40.0125], [-105.2791, 40.0125],
           [-105.2791, 40.0109]]
    publish(request_payload("urgent-2", incident_type="missing_person", area={"type": "Polygon", "coordinates": [box]}))
    try:
        assert wait_for_state(db, "urgent-2", {"completed"}, timeout=30) == "completed"
        assert _state(db, "large-1") == "targeting"
        deadline = time.monotonic() + 30  # the large request's first chunk goes out meanwhile too
        while _rows(db, "large-1")[("push", "sent")] == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _rows(db, "large-1")[("push", "sent")] > 0 and _state(db, "large-1") == "targeting"
    finally:
        release.set()
    assert wait_for_state(db, "large-1", {"completed"}, timeout=120) == "completed"
    sandbox.flush()
    by_request = Counter((r["message"]["data"]["request_id"], r["token"]) for r in sandbox.records("fcm"))
    in_box = {i for i in range(1, TOWN + 1)
              if -105.2791 <= _position(i)[1] <= -105.2775 and 40.0109 <= _position(i)[0] <= 40.0125}
    assert in_box and by_request == Counter(
        {**{("large-1", f"tok-{i}"): 1 for i in range(1, TOWN + 1)}, **{("urgent-2", f"tok-{i}"): 1 for i in in_box}})
