"""Bulk load of the resident index: CSV or JSON Lines through COPY, upserted by resident id.

One Python pass reads the file, checks every row and computes its H3 cell (CSV a chunk of lines at a
time, whole columns at once; a chunk with a broken row is redone row by row); good rows stream into a
temporary staging table through ``COPY`` (binary when only id,lat,lng are given); a handful of
set-based statements then upsert residents, settings and tokens in one transaction. Broken rows are
reported with their line number and the rest still loads. Running the same file again changes nothing.

What a row means:

* ``id,lat,lng`` are required; ``email,locale,time_zone,has_camera,push_tokens`` (``;``-separated),
  ``community_requests,push,email_enabled`` and ``version`` are optional.
* A column that is absent, or empty, leaves that value as the index has it (or the default for a new
  resident). An empty ``email`` in a file that has the column clears the address.
* ``version`` orders the row against incremental updates: an older row is skipped. Without it the file
  is taken as current. A deleted resident comes back only with a ``version`` above its deletion.
* Settings that are all on, in a row without ``version``, write no ``resident_settings`` row (no row
  already means "everything on"); a resident who had switched something off is switched back on.
* Tokens are added (or move to this resident); tokens not listed are left alone, and a retired token
  stays retired.
* A resident id listed twice: the last line wins, the earlier ones are reported.
"""

from __future__ import annotations

import os
import time
from typing import IO

import psycopg

from dispatcher.db.types import Conn
from dispatcher.preferences.importing import statements
from dispatcher.preferences.importing.copy_rows import copy_rows
from dispatcher.preferences.importing.first_load import built_at_the_end_if_first_load
from dispatcher.preferences.importing.readers import CountingLines, Seen, batches, detect_format, open_text
from dispatcher.preferences.importing.report import Format, ImportReport, Progress

#: Upsert steps reported to ``progress`` in the "upsert" phase.
_UPSERT_STEPS = 6


def _upsert(
    conn: Conn, report: ImportReport, progress: Progress | None, *, repeated_ids: bool, repeated_tokens: bool
) -> None:
    def step(n: int) -> None:
        if progress is not None:
            progress("upsert", n, _UPSERT_STEPS)

    # A resident deleted while we load must not come back: deletions wait for this import to commit.
    conn.execute(statements.LOCK_TOMBSTONES)
    conn.execute(statements.ANALYZE_STAGING)
    duplicates = [int(r[0]) for r in conn.execute(statements.DELETE_REPEATED_IDS)] if repeated_ids else []
    report.rejected.extend((line, "resident id repeated on a later line; the later line wins")
                           for line in duplicates)
    report.skipped_deleted = conn.execute(statements.DELETE_DELETED_RESIDENTS).rowcount
    conn.execute(statements.DELETE_RESURRECTED_TOMBSTONES)
    report.skipped_stale = conn.execute(statements.DELETE_STALE_ROWS).rowcount
    step(1)
    report.updated = conn.execute(statements.UPDATE_RESIDENTS).rowcount
    step(2)
    with built_at_the_end_if_first_load(conn) as first_load:
        insert = statements.FIRST_INSERT_RESIDENTS if first_load else statements.INSERT_RESIDENTS
        report.inserted = conn.execute(insert).rowcount
        step(3)
        if not first_load:
            conn.execute(statements.UPDATE_SETTINGS)
        step(4)
        conn.execute(statements.FIRST_INSERT_SETTINGS if first_load else statements.INSERT_SETTINGS)
        step(5)
        tokens_sql = statements.INSERT_TOKENS
        if first_load:
            tokens_sql = statements.FIRST_INSERT_TOKENS if repeated_tokens else statements.FIRST_INSERT_UNIQUE_TOKENS
        report.tokens_added = conn.execute(tokens_sql).rowcount
    step(6)
    report.unchanged = report.rows_loaded - len(duplicates) - report.skipped_deleted \
        - report.skipped_stale - report.updated - report.inserted



def _refresh_visibility(conn: Conn) -> None:
    """VACUUM the index tables after a bulk load so targeting's range scans stay index-only.

    VACUUM cannot run inside a transaction; when the caller holds one open, autovacuum does it later.
    """
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        return
    autocommit = conn.autocommit
    conn.autocommit = True
    try:
        conn.execute(statements.VACUUM_RESIDENTS)
    finally:
        conn.autocommit = autocommit


def import_residents(
    conn: Conn,
    path_or_stream: str | os.PathLike[str] | IO[str] | IO[bytes],
    *,
    fmt: Format | None = None,
    progress: Progress | None = None,
) -> ImportReport:
    """Load residents from a CSV or JSON Lines file (``fmt`` from the extension when ``None``).

    Everything happens in one transaction: either the whole good part of the file is in the index, or
    nothing is. Raises :class:`ImportProblem` when the file itself is unusable (no header, unknown
    columns); a broken row only lands in ``report.rejected``.
    """
    started = time.perf_counter()
    report = ImportReport()
    with open_text(path_or_stream) as (stream, path):
        kind = detect_format(path, fmt)
        total = path.stat().st_size if path is not None else None
        lines = CountingLines(stream, progress, total)
        with conn.transaction():
            # Sorts and hash joins of a million rows in memory; JIT costs more than it saves here.
            conn.execute(statements.SET_WORK_MEM)
            conn.execute(statements.SET_JIT_OFF)
            # A crash may lose the last import (it is simply run again), never corrupt the index.
            conn.execute(statements.SET_ASYNC_COMMIT)
            conn.execute(statements.CREATE_STAGING)
            seen = Seen()
            copy_rows(conn, batches(iter(lines), kind, report, seen), report)
            copied = time.perf_counter()
            report.copy_seconds = copied - started
            _upsert(conn, report, progress, repeated_ids=seen.repeated_ids(),
                    repeated_tokens=seen.repeated_tokens())
            report.upsert_seconds = time.perf_counter() - copied
    _refresh_visibility(conn)
    report.rejected.sort()
    report.seconds = time.perf_counter() - started
    return report
