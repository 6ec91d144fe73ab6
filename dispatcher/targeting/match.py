"""Match an area against the resident index, inside PostgreSQL, and hand the recipients to a sink.

The interior of the area (cells safely inside, see :mod:`dispatcher.targeting.cover`) becomes a short
list of res-15 id ranges; each range is an index-only range scan on ``residents (cell) INCLUDE (id, lng,
lat)``, and those ids never leave the database. Only the residents under the boundary band come to
Python, as one binary string of records in one query, and are tested against the area with vectorised
shapely (GEOS), which gives exactly PostGIS's ``ST_Covers(area, point)``: inside or on the boundary.

The sink contract
-----------------
The caller decides where recipients go. A sink is a callable::

    sink(conn, ids_sql, params) -> int

``ids_sql`` is a :class:`psycopg.sql.Composable` for a query yielding one column, resident ids, with
``%s`` placeholders bound by ``params``. The sink wraps it (``INSERT INTO deliveries ... SELECT ... FROM
(<ids_sql>) AS t(resident_id) ... ON CONFLICT DO NOTHING``, a count, ...), runs it on ``conn`` and returns
how many rows it wrote. :func:`match_area` calls it once for the boundary residents that passed the
exact test (``SELECT unnest(%s::bigint[])``; once per batch when the band is too big to hold at once, see
:func:`candidate_batches`) and once per part of the interior (an index range scan per
range). Its ``params`` must be bound on ``conn``: the id arrays are binary ``bigint[]`` parameters
(:class:`BigintArray`) whose dumper is registered there. The id sets of the calls are disjoint and free
of duplicates. Each call is its own statement
(in the caller's transaction, if any, else autocommitted); with ``workers`` the interior is split into
chunks written at the same time, each worker connection in its own thread, so a sink that keeps state
must be thread-safe.

A sink that can write ids held in Python without the database (a file, a count) may also have a
method ``write_ids(conn, ids) -> int`` (``ids`` a numpy ``int64`` array): the boundary's tested ids then
go to it instead, sparing them a round trip to the server and back (see :func:`write_ids`).

Residents' ``cell`` must be ``h3.latlng_to_cell(lat, lng, 15)`` of their stored coordinates, and the
table should be vacuumed after a bulk load so that range scans are index-only.
"""

from __future__ import annotations

import struct
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

import h3.api.basic_int as h3
import numpy as np
import numpy.typing as npt
import shapely
from psycopg import sql
from psycopg.adapt import Dumper
from psycopg.pq import Format

from dispatcher.db.types import Conn
from dispatcher.targeting.area import Area, area_km2
from dispatcher.targeting.cover import cells_to_ranges, split_ranges
from dispatcher.targeting.planner import Plan, PlanEstimate, choose_plan
from dispatcher.targeting.stats import COUNTS_ARRAYS_SQL, CellCounts, cell_counts_query

Sink = Callable[[Conn, sql.Composable, Sequence[object]], int]

#: With workers, the interior is dealt into this many chunks per worker, taken from a shared queue.
INTERIOR_CHUNKS_PER_WORKER = 4

#: Expected candidates fetched and tested at once (about 50 bytes each while they are held).
CANDIDATES_PER_BATCH = 500_000

#: Areas smaller than this (km²) are matched on ``conn`` alone, whatever the workers.
PARALLEL_MIN_KM2 = 25.0

#: Residents under the interior ranges: one index-only range scan per range.
INTERIOR_IDS_SQL = sql.SQL(
    "SELECT r.id FROM unnest(%s::bigint[], %s::bigint[]) AS g(lo, hi) "
    "CROSS JOIN LATERAL (SELECT id FROM residents WHERE cell BETWEEN g.lo AND g.hi) AS r"
)
#: Boundary residents that passed the exact test, sent back as an array.
BOUNDARY_IDS_SQL = sql.SQL("SELECT unnest(%s::bigint[])")
#: Candidates under the boundary ranges with their coordinates, as one binary string of (id, lng, lat)
#: records (one round trip, no per-row work in Python; one aggregate costs the server half of what three
#: arrays did).
_CANDIDATES = "SELECT string_agg(int8send(r.id) || float8send(r.lng) || float8send(r.lat), ''::bytea){} " \
    "FROM unnest(%s::bigint[], %s::bigint[]) AS g(lo, hi) " \
    "CROSS JOIN LATERAL (SELECT id, lng, lat FROM residents WHERE cell BETWEEN g.lo AND g.hi) AS r"
_CANDIDATES_SQL = sql.SQL(_CANDIDATES.format(""))
#: The same, setting JIT back to its first parameter once the rows are aggregated: the statement was
#: planned (and JIT decided) with JIT off, and the setting is back for the next without a round trip.
_CANDIDATES_THEN_JIT_SQL = sql.SQL(_CANDIDATES.format(", (SELECT set_config('jit', %s, false))"))
_CANDIDATE_RECORD = np.dtype([("id", ">i8"), ("lng", ">f8"), ("lat", ">f8")])
_ARRAY_ELEMENT = np.dtype([("length", ">i4"), ("value", ">i8")])
_INT8_OID = 20
#: JIT off for the rest of the session, returning its previous setting.
_JIT_OFF_SQL = "SELECT current_setting('jit'), set_config('jit', 'off', false)"
#: ... and the statistics around an area as two arrays, in the same statement.
_JIT_OFF_WITH_COUNTS_SQL = COUNTS_ARRAYS_SQL.format("current_setting('jit'), set_config('jit', 'off', false)")
_JIT_BACK_SQL = "SELECT set_config('jit', %s, false)"


@dataclass(frozen=True)
class MatchTimings:
    """Seconds spent in each step of a match."""

    cover: float
    candidates: float
    refine: float
    write: float
    total: float


@dataclass(frozen=True)
class MatchResult:
    """What a match did. Internal figures for operators and tests: never reported to an agency."""

    #: Rows the sink wrote for the interior ranges (one per resident for the simple sinks).
    interior_written: int
    #: Rows the sink wrote for the boundary residents that are inside.
    boundary_written: int
    #: Boundary residents inside the area (on the boundary counts as inside).
    boundary_kept: int
    #: Residents under the boundary band, tested one by one.
    boundary_candidates: int
    #: Ranges scanned for the interior and for the boundary band.
    interior_ranges: int
    boundary_ranges: int
    timings: MatchTimings
    #: The plan that ran (see :mod:`dispatcher.targeting.planner`) and the ones it beat.
    plan: Plan | None = None

    @property
    def matched(self) -> int:
        """Residents matched, when the sink writes one row per resident."""
        return self.interior_written + self.boundary_written


def match_area(
    conn: Conn,
    area: Area,
    *,
    sink: Sink,
    workers: Sequence[Conn] = (),
    band_resolution: int | None = None,
    plan: str | None = None,
) -> MatchResult:
    """Send every resident covered by ``area`` to ``sink``.

    The planner picks the cheapest exact plan from the area's geometry and the resident statistics;
    ``plan`` forces one by name, ``band_resolution`` forces today's cover plan at that resolution.

    With ``workers`` (extra connections, e.g. from the pool), the interior is dealt into
    :data:`INTERIOR_CHUNKS_PER_WORKER` chunks per worker that the workers write concurrently, one thread
    each, while ``conn`` handles the boundary band and then takes chunks too. JIT is off on every
    connection while it works (it compiles for hundreds of milliseconds because the planner cannot know
    how few rows a range holds), then set back.
    """
    started = time.perf_counter()
    chosen, jit = _plan_with_jit_off(conn, area, band_resolution=band_resolution, plan=plan)
    try:
        cover = chosen.cover(area)
        if area_km2(area) < PARALLEL_MIN_KM2:
            workers = ()  # a few thousand residents: threads and extra round trips would cost more
        chunks = deque(split_ranges(cover.interior, INTERIOR_CHUNKS_PER_WORKER * len(workers) if workers else 1))
        interior_ranges = sum(len(chunk) for chunk in chunks)
        batches = [cells_to_ranges(batch) for batch in candidate_batches(cover.boundary, chosen)]
        bounds = area.bounds
        covered = time.perf_counter()
        fetching = testing = 0.0
        candidates = kept = boundary_written = 0
        with ThreadPoolExecutor(max_workers=max(len(workers), 1)) as pool:
            futures = [pool.submit(_write_interior_chunks_on_worker, worker, sink, chunks) for worker in workers]
            for number, ranges in enumerate(batches, start=1):  # one batch but for a band too big to hold at once
                step = time.perf_counter()
                # JIT only ever compiled the range scans (the planner takes a range for a ninth of the
                # table); with no interior left to scan it is set back in the last fetch's round trip.
                restore = jit if number == len(batches) and not interior_ranges else None
                ids, lng, lat = fetch_candidates(conn, ranges, restore_jit=restore)
                jit = None if restore is not None else jit
                fetched = time.perf_counter()
                inside = ids[covers_xy(area, bounds, lng, lat)] if len(ids) else ids
                fetching, testing = fetching + fetched - step, testing + time.perf_counter() - fetched
                candidates, kept = candidates + len(ids), kept + len(inside)
                if len(inside):
                    boundary_written += write_ids(conn, sink, inside)
            interior_written = _write_interior_chunks(conn, sink, chunks)  # then help the workers with what is left
            interior_written += sum(future.result() for future in futures)
    finally:
        _restore_jit(conn, jit)
    done = time.perf_counter()
    return MatchResult(
        interior_written=interior_written,
        boundary_written=boundary_written,
        boundary_kept=kept,
        boundary_candidates=candidates,
        interior_ranges=interior_ranges,
        boundary_ranges=sum(len(ranges) for ranges in batches),
        timings=MatchTimings(
            cover=covered - started,
            candidates=fetching,
            refine=testing,
            write=done - covered - fetching - testing,
            total=done - started,
        ),
        plan=chosen,
    )


def covers_xy(area: Area, bounds: tuple[float, float, float, float], lng: npt.NDArray[np.float64],
              lat: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
    """Which points ``area`` covers (its boundary included), testing against the polygon only those in
    its ``bounds``: a coarse cover's candidates are a third outside them, and numpy rejects those for
    a fraction of what GEOS's test costs (0.18 µs a point along a 3,000-vertex edge). Exact: a covered
    point lies between the area's extreme vertices, whose own doubles the bounds are."""
    west, south, east, north = bounds
    shapely.prepare(area)  # the point index: built once, kept with the area
    near = np.flatnonzero((lng >= west) & (lng <= east) & (lat >= south) & (lat <= north))
    covered = np.zeros(len(lng), dtype=np.bool_)
    covered[near] = shapely.intersects_xy(area, lng[near], lat[near])
    return covered


def write_ids(conn: Conn, sink: Sink, ids: npt.NDArray[np.int64]) -> int:
    """Hand ids the engine holds to ``sink``: to its ``write_ids(conn, ids)`` when it has one (a sink
    that writes them out of the database spares them a round trip through it), else as a bound array."""
    direct = getattr(sink, "write_ids", None)
    if direct is not None:
        return int(direct(conn, ids))
    return sink(conn, BOUNDARY_IDS_SQL, [bigint_array(conn, ids)])


def candidate_batches(cells: list[int], plan: Plan) -> list[list[int]]:
    """The band's cells in batches of about :data:`CANDIDATES_PER_BATCH` expected residents (from the
    statistics), so that the candidates held at once stay bounded whatever the plan: one as a rule."""
    per_batch = CANDIDATES_PER_BATCH
    if plan.chosen.candidates <= per_batch or not cells:
        return [cells]
    by_resolution: dict[int, list[int]] = {}
    for cell in cells:
        by_resolution.setdefault(h3.get_resolution(cell), []).append(cell)
    batches: list[list[int]] = []
    current: list[int] = []
    expected = 0.0
    for resolution, group in sorted(by_resolution.items()):
        for cell, residents in zip(group, plan.counts.residents_under(group, resolution).tolist(), strict=True):
            if current and expected + residents > per_batch:
                batches.append(current)
                current, expected = [], 0.0
            current.append(cell)
            expected += residents
    return [*batches, current] if current else batches


def plan_match(conn: Conn, area: Area, *, band_resolution: int | None = None, plan: str | None = None) -> Plan:
    """The plan :func:`match_area` runs: forced by ``band_resolution``, by name, or chosen by cost."""
    return _plan_with_jit_off(conn, area, band_resolution=band_resolution, plan=plan, jit_off=False)[0]


def _plan_with_jit_off(conn: Conn, area: Area, *, band_resolution: int | None, plan: str | None,
                       jit_off: bool = True) -> tuple[Plan, str | None]:
    """(the plan, JIT's setting before it was switched off): the switch and the statistics go to the
    server in one statement, not two."""
    if band_resolution is not None:
        chosen = Plan(PlanEstimate("cover", band_resolution, 0, 0, 0, 0.0))
        return chosen, _switch_jit_off(conn) if jit_off else None
    query = cell_counts_query(area) if plan != "cover" else None
    if query is None:
        counts, previous = CellCounts.empty(), _switch_jit_off(conn) if jit_off else None
    elif not jit_off:
        counts, previous = CellCounts.from_rows(conn.execute(*query).fetchall()), None
    else:  # one statement: a pipeline of two cost a tenth of a millisecond more
        row = conn.execute(_JIT_OFF_WITH_COUNTS_SQL, query[1]).fetchone()
        assert row is not None  # an aggregate's one row
        counts, previous = CellCounts.of(row[2] or [], row[3] or []), row[0]
    try:
        chosen = choose_plan(area, counts, force=plan)
    except BaseException:  # refused by the statistics, say: the connection gets its JIT back
        _restore_jit(conn, previous)
        raise
    return chosen, previous


def _write_interior_chunks_on_worker(conn: Conn, sink: Sink, chunks: deque[list[tuple[int, int]]]) -> int:
    """Write interior chunks on ``conn`` until none is left; return rows written."""
    with _without_jit(conn):
        return _write_interior_chunks(conn, sink, chunks)


def _write_interior_chunks(conn: Conn, sink: Sink, chunks: deque[list[tuple[int, int]]]) -> int:
    written = 0
    while True:
        try:
            ranges = chunks.popleft()  # atomic: several threads share the queue
        except IndexError:
            return written
        if ranges:
            written += sink(conn, INTERIOR_IDS_SQL, _range_params(conn, ranges))


@contextmanager
def _without_jit(conn: Conn) -> Iterator[None]:
    """JIT off on ``conn`` for the duration, then its previous value back (one round trip each way)."""
    previous = _switch_jit_off(conn)
    try:
        yield
    finally:
        _restore_jit(conn, previous)


def _switch_jit_off(conn: Conn) -> str | None:
    row = conn.execute(_JIT_OFF_SQL).fetchone()
    return row[0] if row else None


def _restore_jit(conn: Conn, previous: str | None) -> None:
    if previous is not None and previous != "off" and not conn.closed:
        conn.execute(_JIT_BACK_SQL, (previous,))


def fetch_candidates(
    conn: Conn, ranges: list[tuple[int, int]], *, restore_jit: str | None = None
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(ids, lng, lat) of the residents whose cell falls in ``ranges``, as binary arrays in one query;
    with ``restore_jit``, JIT is set back to it by the same statement, once the rows are aggregated."""
    back = restore_jit is not None and restore_jit != "off"
    if not ranges:
        if back:
            _restore_jit(conn, restore_jit)
        return np.zeros(0, np.int64), np.zeros(0, np.float64), np.zeros(0, np.float64)
    params = _range_params(conn, ranges)  # before the cursor, which copies the connection's adapters
    with conn.cursor(binary=True) as cur:
        if back:
            row = cur.execute(_CANDIDATES_THEN_JIT_SQL, [restore_jit, *params]).fetchone()
        else:
            row = cur.execute(_CANDIDATES_SQL, params).fetchone()
    if row is None or row[0] is None:
        return np.zeros(0, np.int64), np.zeros(0, np.float64), np.zeros(0, np.float64)
    records = np.frombuffer(row[0], dtype=_CANDIDATE_RECORD)
    return records["id"].astype(np.int64), records["lng"].astype(np.float64), records["lat"].astype(np.float64)


def _range_params(conn: Conn, ranges: list[tuple[int, int]]) -> list[object]:
    bounds = np.array(ranges, dtype=np.int64).reshape(-1, 2)
    return [bigint_array(conn, bounds[:, 0]), bigint_array(conn, bounds[:, 1])]


class BigintArray:
    """Integers for a ``%s::bigint[]`` parameter, sent in PostgreSQL's binary array format built by numpy.

    psycopg's list adapter inspects every element to pick a type, and a text literal is written by
    Python and parsed again by the server: for a district's 1,600 ids that was 0.4 ms of a 10 ms match.
    """

    __slots__ = ("values",)

    def __init__(self, values: npt.ArrayLike) -> None:
        self.values = np.asarray(values, dtype=np.int64)


class _BigintArrayDumper(Dumper):
    """Binary ``bigint[]``: a header (dimensions, no nulls, element type, length, lower bound), then
    each element's length and value. No oid: the statement's cast types the parameter, and the
    connection's own ``bigint[]`` dumper stays as it was."""

    format = Format.BINARY

    def dump(self, obj: BigintArray) -> bytes:
        if not len(obj.values):
            return struct.pack(">iii", 0, 0, _INT8_OID)
        body = np.empty(len(obj.values), dtype=_ARRAY_ELEMENT)
        body["length"] = 8
        body["value"] = obj.values
        return struct.pack(">iiiii", 1, 0, _INT8_OID, len(obj.values), 1) + body.tobytes()


def bigint_array(conn: Conn, values: npt.ArrayLike) -> BigintArray:
    """``values`` as a binary ``bigint[]`` parameter on ``conn`` (its dumper registered there, a dict entry)."""
    conn.adapters.register_dumper(BigintArray, _BigintArrayDumper)
    return BigintArray(values)


class _CountSink:
    """A sink that only counts (for ``dispatcher target`` without ``--ids``)."""

    def __call__(self, conn: Conn, ids_sql: sql.Composable, params: Sequence[object]) -> int:
        row = conn.execute(sql.SQL("SELECT count(*) FROM ({}) AS t").format(ids_sql), params).fetchone()
        return int(row[0]) if row else 0

    def write_ids(self, conn: Conn, ids: npt.NDArray[np.int64]) -> int:
        return len(ids)


count_sink = _CountSink()


class _FileSink:
    """Writes ids to a binary file, one a line (see :func:`file_sink`)."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out

    def __call__(self, conn: Conn, ids_sql: sql.Composable, params: Sequence[object]) -> int:
        statement = sql.SQL("SELECT count(*), string_agg(t.id::text, E'\\n') FROM ({}) AS t(id)")
        row = conn.execute(statement.format(ids_sql), params).fetchone()
        if row is None or not row[0]:
            return 0
        self.out.write(row[1].encode("ascii") + b"\n")
        return int(row[0])

    def write_ids(self, conn: Conn, ids: npt.NDArray[np.int64]) -> int:
        self.out.write(b"%d\n" * len(ids) % tuple(ids.tolist()))  # one format in C: half of str() per id
        return len(ids)


def file_sink(out: IO[bytes]) -> Sink:
    """A sink writing ids to ``out``, one a line.

    The database joins the ids it finds into one text per call (``string_agg``): streaming rows with
    ``COPY`` costs about a microsecond per row in Python, five times the scan itself. Ids the engine
    already holds (the boundary's, tested here) are written here (``write_ids``): sending them to the
    server to be joined cost a round trip, 0.4 ms of a district's 1,600. Memory is about eight bytes
    per id, the size of the file being written.
    """
    return _FileSink(out)


def table_sink(table: str) -> Sink:
    """A sink inserting ids into ``table (resident_id bigint)`` (a temporary or unlogged table)."""

    def sink(conn: Conn, ids_sql: sql.Composable, params: Sequence[object]) -> int:
        statement = sql.SQL("INSERT INTO {} (resident_id) SELECT resident_id FROM ({}) AS t(resident_id)")
        with conn.cursor() as cur:
            cur.execute(statement.format(sql.Identifier(table), ids_sql), params)
            return max(cur.rowcount, 0)

    return sink
