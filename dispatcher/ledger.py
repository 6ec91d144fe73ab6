"""The delivery ledger: one row per (request, resident, channel), the source of truth for sending.

Rows are written set-based from targeting (:func:`insert_deliveries`), claimed in batches under a lease
by fan-out workers (:func:`claim_batch`, ``FOR UPDATE SKIP LOCKED``), and closed with an outcome
(:func:`record_outcomes`). A worker that dies leaves a lease that expires; the rows become claimable
again and another worker finishes them. A row that is sent is never claimed again. A row may also be
held until its ``not_before`` (a resident's quiet hours, decided when it is claimed): it stays ``pending``,
so a request is complete only when nothing is pending or held.

This module is the only writer of ``deliveries`` and ``request_activity``; who gets a row, and why a
row is skipped, is decided by :mod:`dispatcher.preferences.eligibility`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from psycopg import sql
from psycopg.rows import class_row

from dispatcher.config import get_settings
from dispatcher.db.types import Conn
from dispatcher.preferences import quiet_hours
from dispatcher.preferences.eligibility import EMAIL_REASON_SQL, PUSH_REASON_SQL, TAKES_REQUESTS_SQL


class Channel(enum.StrEnum):
    """The ways a resident is notified."""

    PUSH = "push"
    EMAIL = "email"


class Status(enum.StrEnum):
    """Where a ledger row stands."""

    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"
    SUPPRESSED = "suppressed"
    EXPIRED = "expired"


@dataclass(frozen=True)
class Outcome:
    """The result of trying one resident on one channel."""

    status: Status
    reason: str | None = None


# The eligibility rules come from :mod:`dispatcher.preferences.eligibility`, their one home; the doubled
# braces keep the ``{ids}`` and ``{request_id}`` placeholders for :meth:`sql.SQL.format`.
_INSERT_DELIVERIES = sql.SQL(
    f"""
    WITH t(resident_id) AS ({{ids}}),
    r AS (
        SELECT r.id,
               {PUSH_REASON_SQL} AS push_reason,
               {EMAIL_REASON_SQL} AS email_reason
        FROM t
        JOIN residents r ON r.id = t.resident_id
        LEFT JOIN resident_settings s ON s.resident_id = r.id
        WHERE {TAKES_REQUESTS_SQL}
    )
    INSERT INTO deliveries (request_id, channel, resident_id, status, reason)
    SELECT {{request_id}}, v.channel, r.id,
           CASE WHEN v.reason IS NULL THEN 'pending' ELSE 'skipped' END, v.reason
    FROM r CROSS JOIN LATERAL (VALUES ('push', r.push_reason), ('email', r.email_reason)) AS v(channel, reason)
    ON CONFLICT DO NOTHING
    """
)


def insert_deliveries(conn: Conn, request_id: str, ids_sql: sql.Composable, params: Sequence[object]) -> int:
    """Write ledger rows for the residents ``ids_sql`` yields (one column of ids); return rows written.

    This is the targeting sink: the ids never come to Python. Every in-area resident with Community
    Requests on gets a row per channel, pending or skipped with the reason (push off, no token, ...);
    residents who switched Community Requests off get none. Re-running it is harmless.
    """
    query = _INSERT_DELIVERIES.format(request_id=sql.Literal(request_id), ids=ids_sql)
    cur = conn.execute(query, list(params))
    return cur.rowcount


def delivery_sink(request_id: str, *, on_commit: Callable[[int], None] | None = None,
                  first_chunk: int = 1_000, max_chunk: int = 10_000) -> DeliverySink:
    """A targeting sink bound to one request, committing its rows in growing chunks (see :class:`DeliverySink`)."""
    return DeliverySink(request_id, on_commit=on_commit, first_chunk=first_chunk, max_chunk=max_chunk)


#: Each sink call's ids land here first (one column, no index), then go to the ledger chunk by chunk.
_STAGE_TABLE = "dispatcher_targeted"
_CREATE_STAGE = sql.SQL(
    "CREATE TEMPORARY TABLE IF NOT EXISTS {} (resident_id bigint) ON COMMIT PRESERVE ROWS"
).format(sql.Identifier(_STAGE_TABLE))
_STAGE_IDS = sql.SQL("INSERT INTO {} (resident_id) SELECT t.resident_id FROM ({}) AS t(resident_id)")
_STAGE_PAGES = sql.SQL("SELECT pg_relation_size({}::regclass) / current_setting('block_size')::bigint").format(
    sql.Literal(f"pg_temp.{_STAGE_TABLE}"))
# A TID range scan (PostgreSQL 14+) reads only the pages of one chunk: the staged table is written once,
# in order, and never updated, so its pages are the chunks, without an index or a sort.
_STAGED_CHUNK = sql.SQL("SELECT resident_id FROM {} WHERE ctid >= %s::tid AND ctid < %s::tid").format(
    sql.Identifier(_STAGE_TABLE))
#: A staged set smaller than this is analyzed before its chunks are written. Autovacuum never visits a
#: temporary table, and PostgreSQL then takes a small one for ten pages (about 2,000 ids): a district's
#: few hundred residents were joined by hashing every resident of the metro with their settings (160 ms
#: at 133,000 residents, growing with the metro) instead of looking each one up (21 ms). Cheap below
#: this size (a millisecond or two); a larger set's size is read off its pages well enough.
ANALYZE_STAGED_BELOW = 10_000
_ANALYZE_STAGE = sql.SQL("ANALYZE {}").format(sql.Identifier(_STAGE_TABLE))
#: The last chunk has no upper bound: whatever the page count said, no staged id is left behind.
_STAGED_REST = sql.SQL("SELECT resident_id FROM {} WHERE ctid >= %s::tid").format(sql.Identifier(_STAGE_TABLE))


@dataclass
class DeliverySink:
    """Callable sink for :func:`dispatcher.targeting.match.match_area` that writes ledger rows as a stream.

    Why: a county-wide request writes millions of rows; in one transaction nothing could be sent until
    the last one was written. Each call's ids are staged in a temporary table (one statement, the ids
    stay in the database), then moved into the ledger in chunks that grow from ``first_chunk`` to
    ``max_chunk`` residents, each chunk its own transaction, so the first rows are claimable within a
    fraction of a second and ``on_commit`` (given the rows written so far) can start the fan-out.
    Streaming needs ``conn`` in autocommit mode; inside a caller's transaction each chunk is a savepoint
    and nothing is visible before the caller commits. Re-running a request is harmless: rows are unique
    per (request, resident, channel) and conflicts are skipped. One connection, one thread: the staged
    table is the connection's own.
    """

    request_id: str
    on_commit: Callable[[int], None] | None = None
    first_chunk: int = 1_000
    max_chunk: int = 10_000
    written: int = field(default=0)
    _chunk: int = field(default=0, repr=False)

    def __call__(self, conn: Conn, ids_sql: sql.Composable, params: Sequence[object]) -> int:
        conn.execute(_CREATE_STAGE)
        conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(_STAGE_TABLE)))
        staged = conn.execute(_STAGE_IDS.format(sql.Identifier(_STAGE_TABLE), ids_sql), list(params)).rowcount
        if staged <= 0:
            return 0
        if staged < ANALYZE_STAGED_BELOW:
            conn.execute(_ANALYZE_STAGE)
        row = conn.execute(_STAGE_PAGES).fetchone()
        pages = max(int(row[0]) if row else 1, 1)
        per_page = -(-staged // pages)
        count, page = 0, 0
        while page < pages:
            self._chunk = min(self.max_chunk, self._chunk * 2) if self._chunk else self.first_chunk
            step = max(1, self._chunk // per_page)
            if page + step >= pages:
                chunk, bounds = _STAGED_REST, [f"({page},0)"]
            else:
                chunk, bounds = _STAGED_CHUNK, [f"({page},0)", f"({page + step},0)"]
            with conn.transaction():
                rows = insert_deliveries(conn, self.request_id, chunk, bounds)
                mark_activity(conn, self.request_id, "target")
            page += step
            count += rows
            self.written += rows
            if self.on_commit is not None:
                self.on_commit(self.written)
        return count

    def close(self, conn: Conn) -> None:
        """Drop the staged table (the connection goes back to a pool)."""
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(_STAGE_TABLE)))


#: First key of the advisory lock "this request's ledger rows are being written" (the second key is
#: ``hashtext(request_id)``); the two-key space never meets the reconciler's one-key lock.
_WRITER_LOCK_CLASS = 0x6C6467  # "ldg"


@contextmanager
def writing_rows(conn: Conn, request_id: str) -> Iterator[bool]:
    """Hold the request's writer lock for the block if nobody else does; yield whether we hold it.

    Why a session-level advisory lock: targeting now commits as it goes, so no transaction stays open
    to show that a worker is still on it. The lock lives as long as the connection: a worker that dies
    loses it at once, and the reconciler (:func:`rows_being_written`) can tell a request being targeted
    from one a crash left behind. ``conn`` must stay checked out for the whole block.
    """
    row = conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))", (_WRITER_LOCK_CLASS, request_id)).fetchone()
    held = bool(row and row[0])
    try:
        yield held
    finally:
        if held and not conn.closed:
            conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (_WRITER_LOCK_CLASS, request_id))


def rows_being_written(conn: Conn, request_id: str) -> bool:
    """Whether a live worker holds the request's writer lock (without taking it)."""
    row = conn.execute(
        """
        SELECT EXISTS (SELECT 1 FROM pg_locks
                       WHERE locktype = 'advisory' AND objsubid = 2 AND granted
                         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                         AND classid = (%s)::int4::oid AND objid = hashtext(%s)::oid)
        """,
        (_WRITER_LOCK_CLASS, request_id),
    ).fetchone()
    return bool(row and row[0])


_CLAIM = """
WITH batch AS (
    SELECT resident_id FROM deliveries
    WHERE request_id = %(request_id)s AND channel = %(channel)s AND status = 'pending'
      AND resident_id > %(after)s
      AND (lease_until IS NULL OR lease_until < now())
      AND (not_before IS NULL OR not_before <= coalesce(%(now)s::timestamptz, now()))
      AND (SELECT respond_until FROM community_requests WHERE id = %(request_id)s) > now()
    ORDER BY resident_id
    LIMIT %(size)s
    FOR UPDATE SKIP LOCKED
)
UPDATE deliveries d
SET lease_owner = %(owner)s, lease_until = now() + make_interval(secs => %(lease)s),
    attempts = d.attempts + 1, updated_at = now()
WHERE d.request_id = %(request_id)s AND d.channel = %(channel)s
  AND d.resident_id = ANY(ARRAY(SELECT resident_id FROM batch))
RETURNING d.resident_id
"""
# ``= ANY(ARRAY(...))`` rather than a join with the batch: right after targeting writes a million rows the
# table's statistics are stale, and a join was planned as a nested loop over every row of the request.


_TOUCH = """
INSERT INTO request_activity (request_id, stage, active_at) VALUES (%s, %s, now())
ON CONFLICT (request_id, stage) DO UPDATE SET active_at = excluded.active_at
"""


#: Batches held in one :func:`claim_batch` call before it returns (so a call ends in bounded time).
MAX_HOLD_ROUNDS = 50


def claim_batch(conn: Conn, request_id: str, channel: Channel, *, size: int, owner: str,
                lease_seconds: int, now: datetime | None = None, after: int = 0) -> list[int]:
    """Lease up to ``size`` pending rows nobody else holds; return their resident ids, sorted.

    Only residents above ``after`` are looked at: a drain that passes the last id it claimed starts
    where it stopped instead of stepping again over every row it sent or holds in flight (the
    caller goes back to 0 when nothing is left above it).

    Nothing is claimed once the request's response window has ended, and no row before its
    ``not_before``. Quiet hours are decided here, at the last moment (:func:`_hold_quiet`): rows whose
    resident is in their quiet period go back with a ``not_before`` and are not returned. ``now`` stands
    in for the database clock in that decision (tests freeze it); leases always use the database clock.
    A claim also marks the channel active, which tells the reconciler this request is not stuck.
    """
    spread: dict[str, timedelta] = {}  # the morning's spread window, counted once per call
    for _ in range(MAX_HOLD_ROUNDS):
        with conn.transaction():
            rows = conn.execute(
                _CLAIM,
                {"request_id": request_id, "channel": channel.value, "size": size, "owner": owner,
                 "lease": lease_seconds, "now": now, "after": after},
            ).fetchall()
            if not rows:
                return []
            mark_activity(conn, request_id, channel.value)
            claimed = sorted(int(r[0]) for r in rows)
            ready = _hold_quiet(conn, request_id, channel, claimed, owner=owner, now=now, spread=spread)
        if ready or len(claimed) < size:
            return ready
        after = claimed[-1]  # every row of this batch was held: the next ones
    return []  # a night's worth of rows held; the caller sees claimable rows left and comes back


def _hold_quiet(conn: Conn, request_id: str, channel: Channel, claimed: list[int], *, owner: str,
                now: datetime | None, spread: dict[str, timedelta]) -> list[int]:
    """Hold the claimed rows whose resident is in quiet hours; return the rest (to send now).

    Urgent requests, and email unless configured, are never held. A row whose quiet period outlasts the
    response window is closed as expired (see :mod:`dispatcher.preferences.quiet_hours`).
    """
    settings = get_settings()
    if not settings.quiet_hours or (channel is Channel.EMAIL and not settings.quiet_hours_email):
        return claimed
    request = conn.execute(
        "SELECT urgent, respond_until, coalesce(%s::timestamptz, now()) FROM community_requests WHERE id = %s",
        (now, request_id),
    ).fetchone()
    if request is None or request[0]:
        return claimed
    respond_until, at = request[1], request[2]
    assert isinstance(respond_until, datetime) and isinstance(at, datetime)
    clocks = quiet_hours.resident_clocks(conn, claimed)
    ends = {rid: end for rid, c in clocks.items()
            if (end := quiet_hours.quiet_period_end(at, c.time_zone, c.hours)) is not None}
    if not ends:
        return claimed
    if "window" not in spread:
        held_estimate = _pending_count(conn, request_id, channel)
        rate = settings.push_rate_per_minute if channel is Channel.PUSH else settings.email_rate_per_minute
        spread["window"] = quiet_hours.spread_window(held_estimate, rate)
    window = spread["window"]
    held: dict[int, datetime] = {}
    expired: dict[int, Outcome] = {}
    for rid, end in ends.items():
        release_at = quiet_hours.release_time(end, rid, window, respond_until)
        if release_at is None:
            expired[rid] = Outcome(Status.EXPIRED, quiet_hours.QUIET_PAST_WINDOW)
        else:
            held[rid] = release_at
    if held:
        conn.execute(_HOLD, (quiet_hours.HELD, list(held), list(held.values()), request_id, channel.value,
                             list(held), owner))
    record_outcomes(conn, request_id, channel, expired)
    return [rid for rid in claimed if rid not in ends]


_HOLD = """
UPDATE deliveries d
SET not_before = h.until, reason = %s, lease_owner = NULL, lease_until = NULL,
    attempts = greatest(d.attempts - 1, 0), updated_at = now()
FROM unnest(%s::bigint[], %s::timestamptz[]) AS h(resident_id, until)
WHERE d.request_id = %s AND d.channel = %s AND d.resident_id = h.resident_id
  AND d.resident_id = ANY(%s::bigint[]) AND d.status = 'pending' AND d.lease_owner = %s
"""


def _pending_count(conn: Conn, request_id: str, channel: Channel) -> int:
    row = conn.execute(
        "SELECT count(*) FROM deliveries WHERE request_id = %s AND channel = %s AND status = 'pending'",
        (request_id, channel.value),
    ).fetchone()
    return int(row[0]) if row else 0


def reconsider_holds(conn: Conn, resident_id: int) -> int:
    """The resident changed their quiet hours or zone: their held rows are decided again at the next claim."""
    cur = conn.execute(
        "UPDATE deliveries SET not_before = NULL, updated_at = now()"
        " WHERE resident_id = %s AND status = 'pending' AND not_before IS NOT NULL",
        (resident_id,),
    )
    return cur.rowcount


def confirm_lease(conn: Conn, request_id: str, channel: Channel, resident_ids: Sequence[int], *, owner: str,
                  lease_seconds: int) -> list[int]:
    """Renew our lease right before sending; return the rows still ours and still pending.

    A worker stalled past its lease (a long rate-limit pause, a stop-the-world pause) may have lost rows
    to another worker; sending them anyway would notify those residents twice.
    """
    rows = conn.execute(
        """
        UPDATE deliveries SET lease_until = now() + make_interval(secs => %s), updated_at = now()
        WHERE request_id = %s AND channel = %s AND resident_id = ANY(%s) AND status = 'pending'
          AND lease_owner = %s
          AND (SELECT respond_until FROM community_requests WHERE id = %s) > now()
        RETURNING resident_id
        """,
        (lease_seconds, request_id, channel.value, list(resident_ids), owner, request_id),
    ).fetchall()
    return sorted(int(r[0]) for r in rows)


def mark_activity(conn: Conn, request_id: str, stage: str) -> None:
    """Record that a stage (``target``, ``push``, ``email``) of a request moved just now."""
    conn.execute(_TOUCH, (request_id, stage))


_SENT_PLAIN = Outcome(Status.SENT)


def record_outcomes(conn: Conn, request_id: str, channel: Channel, outcomes: Mapping[int, Outcome]) -> int:
    """Close rows with their outcome; only rows still pending change (the first outcome wins).

    Most rows of most batches are plainly sent: those are closed by one statement over their ids, the
    rest (skipped, failed, unconfirmed ...) by one that joins each id with its outcome. The ledger's
    most frequent write costs PostgreSQL the least.
    """
    if not outcomes:
        return 0
    sent = [i for i, outcome in outcomes.items() if outcome == _SENT_PLAIN]
    closed = 0
    if sent:
        closed += conn.execute(
            """
            UPDATE deliveries SET status = 'sent', reason = NULL, lease_owner = NULL, lease_until = NULL,
                sent_at = now(), updated_at = now()
            WHERE request_id = %s AND channel = %s AND resident_id = ANY(%s::bigint[]) AND status = 'pending'
            """,
            (request_id, channel.value, sent),
        ).rowcount
    if len(sent) == len(outcomes):
        return closed
    ids = [i for i, outcome in outcomes.items() if outcome != _SENT_PLAIN]
    statuses = [outcomes[i].status.value for i in ids]
    reasons = [outcomes[i].reason for i in ids]
    cur = conn.execute(
        """
        UPDATE deliveries d
        SET status = o.status, reason = o.reason, lease_owner = NULL, lease_until = NULL,
            sent_at = CASE WHEN o.status = 'sent' THEN now() END, updated_at = now()
        FROM unnest(%s::bigint[], %s::text[], %s::text[]) AS o(resident_id, status, reason)
        WHERE d.request_id = %s AND d.channel = %s AND d.resident_id = o.resident_id
          AND d.resident_id = ANY(%s::bigint[]) AND d.status = 'pending'
        """,
        (ids, statuses, reasons, request_id, channel.value, ids),
    )
    return closed + cur.rowcount


def release(conn: Conn, request_id: str, channel: Channel, resident_ids: Sequence[int], *,
            retry_in_seconds: float, reason: str, backoff_cap_seconds: float = 300.0) -> None:
    """Give rows back for a later attempt (a provider asked us to wait or failed temporarily).

    Each row waits at least ``retry_in_seconds`` (the provider's Retry-After) and at least an
    exponential backoff on its own attempts (1, 2, 4 ... seconds, with jitter, up to the cap), so a
    resident whose sends keep failing is tried less and less often.
    """
    conn.execute(
        """
        UPDATE deliveries SET lease_owner = NULL,
            lease_until = now() + make_interval(secs => greatest(
                %s, least(%s, power(2, greatest(attempts - 1, 0))) * (0.5 + random() / 2))),
            reason = %s, updated_at = now()
        WHERE request_id = %s AND channel = %s AND resident_id = ANY(%s) AND status = 'pending'
        """,
        (retry_in_seconds, backoff_cap_seconds, reason, request_id, channel.value, list(resident_ids)),
    )


#: The reason of a row never sent because the response window ended (here and in the channels).
WINDOW_ENDED = "response window ended"
#: The reason of a row closed as sent whose call was written but never answered: the provider may have
#: taken it, and sending again could reach the resident twice (both channels, see their docstrings).
UNCONFIRMED_REASON = "unconfirmed"


def expire_pending(conn: Conn, request_id: str) -> int:
    """The response window ended: nothing pending will be sent any more."""
    cur = conn.execute(
        "UPDATE deliveries SET status = 'expired', reason = %s, lease_owner = NULL,"
        " lease_until = NULL, updated_at = now() WHERE request_id = %s AND status = 'pending'",
        (WINDOW_ENDED, request_id),
    )
    return cur.rowcount


@dataclass(frozen=True)
class PendingWork:
    """What is left of a request on one channel."""

    claimable: int
    leased: int
    next_lease_expiry_seconds: float | None
    #: Rows waiting for their ``not_before`` (quiet hours), and when the first of them may go.
    held: int = 0
    next_hold_end_seconds: float | None = None


def pending_work(conn: Conn, request_id: str, channel: Channel) -> PendingWork:
    """Rows pending now, rows held by a lease or by quiet hours, and when the first lease or hold runs out."""
    with conn.cursor(row_factory=class_row(PendingWork)) as cur:
        work = cur.execute(
            """
            SELECT count(*) FILTER (WHERE (lease_until IS NULL OR lease_until < now())
                                      AND (not_before IS NULL OR not_before <= now())) AS claimable,
                   count(*) FILTER (WHERE lease_until >= now()) AS leased,
                   extract(epoch FROM min(lease_until) FILTER (WHERE lease_until >= now()) - now())::float8
                       AS next_lease_expiry_seconds,
                   count(*) FILTER (WHERE not_before > now() AND (lease_until IS NULL OR lease_until < now()))
                       AS held,
                   extract(epoch FROM min(not_before) FILTER (WHERE not_before > now()) - now())::float8
                       AS next_hold_end_seconds
            FROM deliveries WHERE request_id = %s AND channel = %s AND status = 'pending'
            """,
            (request_id, channel.value),
        ).fetchone()
    assert work is not None  # an aggregate always returns one row
    return work


def any_pending(conn: Conn, request_id: str) -> bool:
    """Whether any channel still has work for the request (rows held by quiet hours are pending too)."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM deliveries WHERE request_id = %s AND status = 'pending')",
        (request_id,),
    ).fetchone()
    return bool(row and row[0])


def progress(conn: Conn, request_id: str) -> dict[str, dict[str, int]]:
    """Counts by channel and status, for ops only (never for the agency)."""
    counts: dict[str, dict[str, int]] = {}
    for channel, status, n in conn.execute(
        "SELECT channel, status, count(*) FROM deliveries WHERE request_id = %s GROUP BY 1, 2",
        (request_id,),
    ):
        counts.setdefault(str(channel), {})[str(status)] = int(n)
    return counts


def skip_resident_deliveries(conn: Conn, resident_id: int, reason: str) -> int:
    """Skip every pending delivery of one resident (they left); returns how many were skipped."""
    cur = conn.execute(
        "UPDATE deliveries SET status = 'skipped', reason = %s, updated_at = now()"
        " WHERE resident_id = %s AND status = 'pending'",
        (reason, resident_id),
    )
    return cur.rowcount
