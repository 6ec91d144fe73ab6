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

import contextlib
import csv
import io
import itertools
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, cast

import h3.api.basic_int as h3_int
import numpy as np
import psycopg
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter

from dispatcher.config import RESIDENT_CELL_RESOLUTION
from dispatcher.errors import ImportProblem
from dispatcher.preferences import validation

Connection = psycopg.Connection[Any]
Format = Literal["csv", "jsonl"]
#: ``progress(phase, done, total)``: phase "read" counts characters of the file, "upsert" counts steps.
Progress = Callable[[str, int, int | None], None]

REQUIRED_COLUMNS = ("id", "lat", "lng")
OPTIONAL_COLUMNS = (
    "email", "locale", "time_zone", "has_camera", "push_tokens",
    "community_requests", "push", "email_enabled", "version",
)
_BOOLEAN_COLUMNS = ("has_camera", "community_requests", "push", "email_enabled")
#: Rows per chunk written to COPY.
_CHUNK_ROWS = 20_000
#: Upsert steps reported to ``progress`` in the "upsert" phase.
_UPSERT_STEPS = 6

_STAGING_SQL = """
CREATE TEMP TABLE resident_import (
    line               INTEGER NOT NULL,
    id                 BIGINT NOT NULL,
    lat                DOUBLE PRECISION NOT NULL,
    lng                DOUBLE PRECISION NOT NULL,
    cell               BIGINT NOT NULL,
    email              TEXT,
    locale             TEXT,
    time_zone          TEXT,
    has_camera         BOOLEAN,
    push_tokens        TEXT,
    community_requests BOOLEAN,
    push_enabled       BOOLEAN,
    email_enabled      BOOLEAN,
    version            BIGINT
) ON COMMIT DROP
"""


@dataclass
class ImportReport:
    """What an import did; ``rejected`` lists ``(line number, problem)`` for every row not loaded."""

    rows_read: int = 0
    rows_loaded: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped_stale: int = 0
    skipped_deleted: int = 0
    tokens_added: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    #: Wall time in all, of which reading, checking and COPY into staging, and the set-based upserts.
    seconds: float = 0.0
    copy_seconds: float = 0.0
    upsert_seconds: float = 0.0

    @property
    def rows_upserted(self) -> int:
        """Residents inserted or changed."""
        return self.inserted + self.updated

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds > 0 else 0.0


#: Converts one optional cell to its COPY text ("\\N" for NULL) or raises ValueError naming the column.
Converter = Callable[[str], str]
#: Distinct values remembered per cached column (locales and time zones repeat across millions of rows).
_CACHE_LIMIT = 10_000
_TOKENS = re.compile(r"[A-Za-z0-9_:.~+/=-]{1,4096}(?:;[A-Za-z0-9_:.~+/=-]{1,4096})*")


def _bool_converter(name: str) -> Converter:
    known = {"": "\\N"}
    for spelling in ("true", "t", "1", "yes", "y", "on", "false", "f", "0", "no", "n", "off"):
        value = "t" if validation.parse_bool(spelling) else "f"
        for variant in (spelling, spelling.upper(), spelling.capitalize()):
            known[variant] = value

    def convert(text: str) -> str:
        value = known.get(text)
        if value is not None:
            return value
        parsed = validation.parse_bool(text)
        if parsed is None:
            if not text.strip():
                return "\\N"
            raise ValueError(f"{name} must be true or false")
        return "t" if parsed else "f"

    return convert


def _cached_text_converter(problem: Callable[[str], str | None]) -> Converter:
    good: set[str] = set()

    def convert(text: str) -> str:
        if text in good:
            return text
        stripped = text.strip()
        if not stripped:
            return "\\N"
        bad = problem(stripped)
        if bad:
            raise ValueError(bad)
        if stripped == text and len(good) < _CACHE_LIMIT:
            good.add(text)
        return stripped

    return convert


def _email(text: str) -> str:
    # Present but empty means "no address": '' in staging, NULL in the index.
    stripped = text.strip()
    if stripped and validation.email_problem(stripped):
        raise ValueError("email is not a valid address")
    return stripped


def _tokens(text: str) -> str:
    if _TOKENS.fullmatch(text):  # the common case: clean tokens, no spaces, no empty entries
        return text
    tokens = [t.strip() for t in text.split(";") if t.strip()]
    if not tokens:
        return "\\N"
    for token in tokens:
        bad = validation.token_problem(token)
        if bad:
            raise ValueError(bad)
    return ";".join(tokens)


def _version(text: str) -> str:
    stripped = text.strip()
    if not stripped:
        return "\\N"
    try:
        version = int(stripped)
    except ValueError:
        raise ValueError("version must be an integer") from None
    bad = validation.version_problem(version)
    if bad:
        raise ValueError(bad)
    return str(version)


def _converter(name: str) -> Converter:
    if name == "email":
        return _email
    if name == "locale":
        return _cached_text_converter(validation.locale_problem)
    if name == "time_zone":
        return _cached_text_converter(validation.time_zone_problem)
    if name == "push_tokens":
        return _tokens
    if name == "version":
        return _version
    return _bool_converter(name)


#: Converts a whole column of a chunk, or raises ValueError (the chunk is then redone row by row).
ColumnConverter = Callable[[Sequence[str]], Sequence[str]]
#: Addresses plainly valid (or empty), needing no stripping: most of any real file.
_PLAIN_EMAIL = re.compile(r"(?:[A-Za-z0-9._%+'-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)?")


def _column_converter(name: str, convert: Converter) -> ColumnConverter:
    if name == "email":
        def emails(column: Sequence[str]) -> Sequence[str]:
            if all(map(_PLAIN_EMAIL.fullmatch, column)) and max(map(len, column)) <= validation.MAX_EMAIL_LENGTH:
                return column
            return list(map(_email, column))
        return emails
    if name == "push_tokens":
        def tokens(column: Sequence[str]) -> Sequence[str]:
            return column if all(map(_TOKENS.fullmatch, column)) else list(map(_tokens, column))
        return tokens
    if name == "version":
        return lambda column: list(map(_version, column))

    def few_distinct(column: Sequence[str]) -> Sequence[str]:
        # Booleans, locales and time zones: each distinct spelling is checked once.
        table = {value: convert(value) for value in set(column)}
        return list(map(table.__getitem__, column))
    return few_distinct


class _RowEncoder:
    """Turns the cells of one row into one COPY line (tab-separated text), or raises ValueError.

    Validation guarantees no value contains a tab, newline or backslash, so no escaping is needed.
    """

    def __init__(self, columns: Sequence[str]) -> None:
        index = {name: i for i, name in enumerate(columns)}
        self.width = len(columns)
        self.i_id, self.i_lat, self.i_lng = index["id"], index["lat"], index["lng"]
        # (cell index or None when the column is absent, converter), in staging-table order.
        self.optional = [(index.get(name), _converter(name)) for name in OPTIONAL_COLUMNS]
        self.column_converters = [(i, _column_converter(name, convert))
                                  for name, (i, convert) in zip(OPTIONAL_COLUMNS, self.optional, strict=True)]
        self.any_optional = any(i is not None for i, _ in self.optional)
        self.latlng_to_cell = h3_int.latlng_to_cell
        #: Ids of the rows encoded, for the duplicate check.
        self.ids: list[int] = []

    def encode(self, line: int, cells: Sequence[str | None]) -> str:
        if len(cells) != self.width:
            raise ValueError(f"expected {self.width} columns, found {len(cells)}")
        try:
            resident_id = int(cells[self.i_id])  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ValueError("id must be an integer") from None
        if not 0 < resident_id <= validation.MAX_RESIDENT_ID:
            raise ValueError("id must be a positive 64-bit integer")
        try:
            lat = float(cells[self.i_lat])  # type: ignore[arg-type]
            lng = float(cells[self.i_lng])  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ValueError("lat and lng must be numbers") from None
        if not (-90.0 <= lat <= 90.0 and -180.0 <= lng <= 180.0):  # also false for NaN
            raise ValueError(validation.location_problem(lat, lng) or "location is out of range")
        self.ids.append(resident_id)
        cell = self.latlng_to_cell(lat, lng, RESIDENT_CELL_RESOLUTION)
        head = f"{line}\t{resident_id}\t{lat!r}\t{lng!r}\t{cell}\t"
        if not self.any_optional:
            return head + "\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\n"
        return head + "\t".join([
            "\\N" if i is None or (text := cells[i]) is None else convert(text)
            for i, convert in self.optional
        ]) + "\n"


def _jsonl_cells(obj: Any) -> list[str | None]:
    """A JSON Lines object as cells in the order ``REQUIRED_COLUMNS + OPTIONAL_COLUMNS``.

    ``None`` marks a field that is absent (keep what the index has); ``"email": null`` clears the address.
    """
    if not isinstance(obj, dict):
        raise ValueError("line is not a JSON object")
    unknown = set(obj) - set(REQUIRED_COLUMNS) - set(OPTIONAL_COLUMNS)
    if unknown:
        raise ValueError("unknown fields: " + ", ".join(sorted(unknown)))
    cells: list[str | None] = []
    for name in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS):
        value = obj.get(name)
        if value is None:
            if name in REQUIRED_COLUMNS:
                raise ValueError(f"{name} is missing")
            cells.append("" if name == "email" and name in obj else None)
        elif name in ("id", "version") and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{name} must be an integer")
        elif name in ("lat", "lng") and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ValueError("lat and lng must be numbers")
        elif isinstance(value, bool):
            cells.append("true" if value else "false")
        elif isinstance(value, list):
            if name != "push_tokens" or not all(isinstance(t, str) for t in value):
                raise ValueError(f"{name} must not be a list")
            cells.append(";".join(value))
        elif isinstance(value, dict):
            raise ValueError(f"{name} must not be an object")
        else:
            cells.append(str(value))
    return cells


class _CountingLines:
    """Iterates the lines of a text stream, reporting characters read to ``progress`` now and then."""

    def __init__(self, stream: IO[str], progress: Progress | None, total: int | None) -> None:
        self.stream, self.progress, self.total = stream, progress, total
        self.chars = 0

    def __iter__(self) -> Iterator[str]:
        if self.progress is None:
            yield from self.stream
            return
        report_every = 1 << 20
        next_report = report_every
        for line in self.stream:
            self.chars += len(line)
            if self.chars >= next_report:
                self.progress("read", self.chars, self.total)
                next_report = self.chars + report_every
            yield line
        self.progress("read", self.chars, self.total)


def _detect_format(path: Path | None, fmt: Format | None) -> Format:
    if fmt is not None:
        return fmt
    if path is not None and path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    return "csv"


#: One COPY payload: (binary?, data, rows). Fast chunks go in binary, row-by-row ones as text.
Batch = tuple[bool, bytes | str, int]
#: Lines the vectorised CSV path checks at once; a chunk with a broken row is redone row by row.
_FAST_CHUNK_LINES = 65_536
_NULL_FIELDS = len(OPTIONAL_COLUMNS)
_BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
_BINARY_TRAILER = (-1).to_bytes(2, "big", signed=True)
#: A staging row with no optional values, in COPY binary layout (big-endian, length before each field).
_BINARY_ROW = np.dtype([
    ("fields", ">i2"),
    ("line_len", ">i4"), ("line", ">i4"),
    ("id_len", ">i4"), ("id", ">i8"),
    ("lat_len", ">i4"), ("lat", ">f8"),
    ("lng_len", ">i4"), ("lng", ">f8"),
    ("cell_len", ">i4"), ("cell", ">i8"),
    ("nulls", ">i4", (_NULL_FIELDS,)),
])


def _binary_batch(lines: np.ndarray, ids: np.ndarray, lat: np.ndarray, lng: np.ndarray,
                  cells: np.ndarray) -> bytes:
    rows = np.empty(len(ids), dtype=_BINARY_ROW)
    rows["fields"] = 5 + _NULL_FIELDS
    rows["line_len"], rows["id_len"], rows["lat_len"], rows["lng_len"], rows["cell_len"] = 4, 8, 8, 8, 8
    rows["line"], rows["id"], rows["lat"], rows["lng"], rows["cell"] = lines, ids, lat, lng, cells
    rows["nulls"] = -1
    return rows.tobytes()


@dataclass
class _Seen:
    """Resident ids and token hashes read: when nothing repeats, the SQL that looks for repeats is skipped."""

    ids: list[np.ndarray] = field(default_factory=list)
    token_hashes: list[np.ndarray] = field(default_factory=list)
    #: False once a row's tokens went unhashed (row by row, JSON Lines): then repeats are assumed.
    tokens_complete: bool = True

    def repeated_ids(self) -> bool:
        return _any_repeated(self.ids)

    def repeated_tokens(self) -> bool:
        # Equal tokens have equal hashes; a hash collision merely keeps the check.
        return not self.tokens_complete or _any_repeated(self.token_hashes)


class _CsvReader:
    """Reads a CSV file a chunk at a time, checking whole columns at once.

    A chunk whose rows all pass the vectorised checks is encoded without a Python loop per row; a chunk
    with any broken row is redone row by row by :class:`_RowEncoder`, so problems and line numbers are
    exactly those of the row-by-row path. Quoted fields may span lines: from the first quote on, the
    rest of the file goes row by row.
    """

    def __init__(self, columns: Sequence[str], report: ImportReport, seen: _Seen) -> None:
        self.encoder = _RowEncoder(columns)
        self.report = report
        self.seen = seen
        self.width = len(columns)
        self.tokens_at = OPTIONAL_COLUMNS.index("push_tokens") if "push_tokens" in columns else None

    def batches(self, lines: Iterator[str]) -> Iterator[Batch]:
        consumed = 1  # the header
        while True:
            chunk = list(itertools.islice(lines, _FAST_CHUNK_LINES))
            if not chunk:
                return
            text = "".join(chunk)
            if '"' in text:
                yield from self._row_by_row(csv.reader(itertools.chain(chunk, lines)), consumed)
                return
            batch = self._fast(chunk, text, consumed + 1)
            if batch is None:
                yield from self._row_by_row(csv.reader(chunk), consumed)
            else:
                yield batch
            consumed += len(chunk)

    def _row_by_row(self, reader: Any, offset: int) -> Iterator[Batch]:
        encode, rejected, report = self.encoder.encode, self.report.rejected, self.report
        start = len(self.encoder.ids)
        if self.tokens_at is not None:
            self.seen.tokens_complete = False
        out: list[str] = []
        for cells in reader:
            line = offset + reader.line_num
            if not cells:
                continue
            report.rows_read += 1
            try:
                out.append(encode(line, cells))
            except ValueError as exc:
                rejected.append((line, str(exc)))
            if len(out) >= _CHUNK_ROWS:
                yield False, "".join(out), len(out)
                out = []
        if out:
            yield False, "".join(out), len(out)
        self.seen.ids.append(np.array(self.encoder.ids[start:], dtype=np.int64))
        del self.encoder.ids[start:]

    def _columns(self, chunk: list[str], text: str) -> list[Sequence[str]] | None:
        width = self.width
        if "\r" in text:
            rows = list(csv.reader(chunk))
            if any(len(row) != width for row in rows):
                return None
            return list(zip(*rows, strict=True))
        if list(map(str.count, chunk, itertools.repeat(","))).count(width - 1) != len(chunk):
            return None  # a blank line or a row with the wrong number of columns
        if not text.endswith("\n"):
            text += "\n"
        fields = text.replace("\n", ",").split(",")
        return [fields[j:-1:width] for j in range(width)]

    def _hash_tokens(self, values: Sequence[str]) -> None:
        if "\\N" in values:
            self.seen.tokens_complete = False  # rows without tokens: not worth telling apart here
            return
        tokens = ";".join(values).split(";")
        self.seen.token_hashes.append(np.fromiter(map(hash, tokens), dtype=np.int64, count=len(tokens)))

    def _fast(self, chunk: list[str], text: str, first_line: int) -> Batch | None:
        columns = self._columns(chunk, text)
        if columns is None:
            return None
        enc = self.encoder
        try:
            ids = np.array(list(map(int, columns[enc.i_id])), dtype=np.int64)
            lat = np.array(list(map(float, columns[enc.i_lat])), dtype=np.float64)
            lng = np.array(list(map(float, columns[enc.i_lng])), dtype=np.float64)
            optional = [None if i is None else convert(columns[i]) for i, convert in enc.column_converters]
        except (ValueError, OverflowError):
            return None
        # Negated so that NaN fails too.
        if not (np.all(ids > 0) and np.all((lat >= -90.0) & (lat <= 90.0) & (lng >= -180.0) & (lng <= 180.0))):
            return None
        count = len(ids)
        lat_list, lng_list = lat.tolist(), lng.tolist()
        cells = list(map(enc.latlng_to_cell, lat_list, lng_list, itertools.repeat(RESIDENT_CELL_RESOLUTION)))
        self.report.rows_read += count
        self.seen.ids.append(ids)
        tokens = None if self.tokens_at is None else optional[self.tokens_at]
        if tokens is not None:
            self._hash_tokens(tokens)
        line_numbers = range(first_line, first_line + count)
        if not enc.any_optional:
            return True, _binary_batch(np.arange(first_line, first_line + count, dtype=np.int32), ids,
                                       lat, lng, np.array(cells, dtype=np.int64)), count
        nulls = itertools.repeat("\\N")
        fields = [map(str, line_numbers), map(str, ids.tolist()), map(repr, lat_list), map(repr, lng_list),
                  map(str, cells), *(nulls if values is None else values for values in optional)]
        return False, "\n".join(map("\t".join, zip(*fields, strict=False))) + "\n", count


def _batches(lines: Iterator[str], fmt: Format, report: ImportReport, seen: _Seen) -> Iterator[Batch]:
    """COPY payloads for every good row; bad rows go to ``report.rejected``, what was read to ``seen``."""
    if fmt == "csv":
        first = next(lines, None)
        header = next(csv.reader([first]), None) if first is not None else None
        if header is None:
            raise ImportProblem(1, "the file is empty: expected a header with id,lat,lng")
        columns = [name.strip().lower() for name in header]
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        unknown = [c for c in columns if c not in REQUIRED_COLUMNS and c not in OPTIONAL_COLUMNS]
        if missing or unknown or len(set(columns)) != len(columns):
            raise ImportProblem(
                1, f"header must name id,lat,lng and optional {','.join(OPTIONAL_COLUMNS)}; "
                f"missing {missing or 'none'}, unknown {unknown or 'none'}"
            )
        yield from _CsvReader(columns, report, seen).batches(lines)
        return
    seen.tokens_complete = False
    encoder = _RowEncoder((*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS))
    out: list[str] = []
    for line, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        report.rows_read += 1
        try:
            out.append(encoder.encode(line, _jsonl_cells(json.loads(text))))
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            problem = "line is not valid JSON" if isinstance(exc, json.JSONDecodeError) else str(exc)
            report.rejected.append((line, problem))
        if len(out) >= _CHUNK_ROWS:
            yield False, "".join(out), len(out)
            out = []
    if out:
        yield False, "".join(out), len(out)
    seen.ids.append(np.array(encoder.ids, dtype=np.int64))


def _copy_rows(conn: Connection, batches: Iterator[Batch], report: ImportReport) -> None:
    """One COPY per run of batches in the same format, sent by a worker thread.

    The queued writer lets the server parse one chunk while this thread checks the next: on two cores
    that overlap is worth a third of the reading time.
    """
    cursor = conn.cursor()
    batch = next(batches, None)
    while batch is not None:
        binary = batch[0]
        statement = "COPY resident_import FROM STDIN" + (" (FORMAT binary)" if binary else "")
        with cursor.copy(statement, writer=QueuedLibpqWriter(cursor)) as copy:
            if binary:
                copy.write(_BINARY_HEADER)
            while batch is not None and batch[0] == binary:
                copy.write(batch[1])
                report.rows_loaded += batch[2]
                batch = next(batches, None)
            if binary:
                copy.write(_BINARY_TRAILER)


_DUPLICATES_SQL = """
DELETE FROM resident_import AS earlier USING resident_import AS later
WHERE later.id = earlier.id AND later.line > earlier.line
RETURNING earlier.line
"""

_DELETED_SQL = """
DELETE FROM resident_import AS i USING resident_tombstones AS t
WHERE t.id = i.id AND COALESCE(i.version, 0) <= t.version
"""

_RESURRECTED_SQL = """
DELETE FROM resident_tombstones AS t USING resident_import AS i WHERE t.id = i.id
"""

_STALE_SQL = """
DELETE FROM resident_import AS i USING residents AS r
WHERE r.id = i.id AND i.version IS NOT NULL AND i.version < r.version
"""

#: What an existing resident becomes (refers to the old row as ``r``), in the order of ``_UPDATE_SQL``.
_NEW_VALUES = """
    i.lat, i.lng, i.cell,
    CASE WHEN i.email IS NULL OR COALESCE(i.version, r.email_version) < r.email_version THEN r.email
         ELSE NULLIF(i.email, '') END,
    COALESCE(i.locale, r.locale), COALESCE(i.time_zone, r.time_zone), COALESCE(i.has_camera, r.has_camera),
    COALESCE(i.version, r.version), GREATEST(r.email_version, COALESCE(i.version, 0))
"""

# One join of staging and residents; SET sees the old row, so the new values can be written in place.
_UPDATE_SQL = f"""
UPDATE residents AS r
SET (lat, lng, cell, email, locale, time_zone, has_camera, version, email_version) = ({_NEW_VALUES}),
    updated_at = now()
FROM resident_import AS i
WHERE r.id = i.id
  AND (r.lat, r.lng, r.cell, r.email, r.locale, r.time_zone, r.has_camera, r.version, r.email_version)
      IS DISTINCT FROM ({_NEW_VALUES})
"""

_INSERT_SQL = """
INSERT INTO residents (id, lat, lng, cell, email, email_version, locale, time_zone, has_camera, version)
SELECT i.id, i.lat, i.lng, i.cell, NULLIF(i.email, ''), COALESCE(i.version, 0),
       COALESCE(i.locale, 'en-US'), COALESCE(i.time_zone, 'UTC'), COALESCE(i.has_camera, FALSE),
       COALESCE(i.version, 0)
FROM resident_import AS i
WHERE NOT EXISTS (SELECT 1 FROM residents AS r WHERE r.id = i.id)
ON CONFLICT (id) DO NOTHING
"""

#: Into an empty index (staging ids are unique by now): no per-row conflict checks.
_FIRST_INSERT_SQL = _INSERT_SQL[:_INSERT_SQL.index("WHERE NOT EXISTS")]

_SETTINGS_UPDATE_SQL = """
UPDATE resident_settings AS s
SET community_requests = COALESCE(i.community_requests, s.community_requests),
    push_enabled       = COALESCE(i.push_enabled, s.push_enabled),
    email_enabled      = COALESCE(i.email_enabled, s.email_enabled),
    community_requests_version = CASE WHEN i.community_requests IS NULL THEN s.community_requests_version
                                      ELSE GREATEST(s.community_requests_version, COALESCE(i.version, 0)) END,
    push_version          = CASE WHEN i.push_enabled IS NULL THEN s.push_version
                                 ELSE GREATEST(s.push_version, COALESCE(i.version, 0)) END,
    email_enabled_version = CASE WHEN i.email_enabled IS NULL THEN s.email_enabled_version
                                 ELSE GREATEST(s.email_enabled_version, COALESCE(i.version, 0)) END,
    version    = GREATEST(s.version, COALESCE(i.version, 0)),
    updated_at = now()
FROM resident_import AS i
WHERE s.resident_id = i.id
  AND (i.community_requests IS NOT NULL OR i.push_enabled IS NOT NULL OR i.email_enabled IS NOT NULL)
  AND COALESCE(i.version, s.version) >= s.version
  AND (COALESCE(i.community_requests, s.community_requests), COALESCE(i.push_enabled, s.push_enabled),
       COALESCE(i.email_enabled, s.email_enabled))
      IS DISTINCT FROM (s.community_requests, s.push_enabled, s.email_enabled)
"""

_SETTINGS_INSERT_SQL = """
INSERT INTO resident_settings
    (resident_id, community_requests, push_enabled, email_enabled,
     community_requests_version, push_version, email_enabled_version, version)
SELECT i.id, COALESCE(i.community_requests, TRUE), COALESCE(i.push_enabled, TRUE),
       COALESCE(i.email_enabled, TRUE),
       CASE WHEN i.community_requests IS NULL THEN 0 ELSE COALESCE(i.version, 0) END,
       CASE WHEN i.push_enabled IS NULL THEN 0 ELSE COALESCE(i.version, 0) END,
       CASE WHEN i.email_enabled IS NULL THEN 0 ELSE COALESCE(i.version, 0) END,
       COALESCE(i.version, 0)
FROM resident_import AS i
WHERE (i.community_requests IS FALSE OR i.push_enabled IS FALSE OR i.email_enabled IS FALSE
       -- all on and unversioned is what no row means already: no row is written
       OR (i.version IS NOT NULL AND (i.community_requests IS NOT NULL OR i.push_enabled IS NOT NULL
                                      OR i.email_enabled IS NOT NULL)))
  AND NOT EXISTS (SELECT 1 FROM resident_settings AS s WHERE s.resident_id = i.id)
ON CONFLICT (resident_id) DO NOTHING
"""

_TOKENS_SQL = """
INSERT INTO device_tokens AS t (token, resident_id, version)
SELECT DISTINCT ON (x.token COLLATE "C") x.token, i.id, COALESCE(i.version, 0)
FROM resident_import AS i, unnest(string_to_array(i.push_tokens, ';')) AS x(token)
WHERE i.push_tokens IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM device_tokens AS d WHERE d.token = x.token AND d.resident_id = i.id)
ORDER BY x.token COLLATE "C", i.line DESC  -- byte order: same groups, a much cheaper sort
ON CONFLICT (token) DO UPDATE SET resident_id = EXCLUDED.resident_id, registered_at = now()
WHERE t.resident_id <> EXCLUDED.resident_id
"""

#: The first-load forms (empty tables, primary keys dropped for the load): no conflict checks.
_FIRST_SETTINGS_INSERT_SQL = _SETTINGS_INSERT_SQL[:_SETTINGS_INSERT_SQL.index("  AND NOT EXISTS")]
_FIRST_TOKENS_SQL = """
INSERT INTO device_tokens (token, resident_id, version)
SELECT DISTINCT ON (x.token COLLATE "C") x.token, i.id, COALESCE(i.version, 0)
FROM resident_import AS i, unnest(string_to_array(i.push_tokens, ';')) AS x(token)
WHERE i.push_tokens IS NOT NULL
ORDER BY x.token COLLATE "C", i.line DESC
"""
#: When no token is listed twice in the file there is no last line to pick: no sort.
_FIRST_UNIQUE_TOKENS_SQL = _FIRST_TOKENS_SQL.replace("DISTINCT ON (x.token COLLATE \"C\") ", "").replace(
    'ORDER BY x.token COLLATE "C", i.line DESC\n', "")


#: Tables a first load fills; their secondary indexes and foreign keys are built once, at the end.
_LOADED_TABLES = ("residents", "resident_settings", "device_tokens")

_SECONDARY_INDEXES_SQL = """
SELECT n.nspname, c.relname, pg_get_indexdef(i.indexrelid)
FROM pg_index AS i
JOIN pg_class AS c ON c.oid = i.indexrelid
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE i.indrelid = ANY(%s::regclass[]) AND NOT i.indisprimary AND NOT i.indisunique
"""

_FOREIGN_KEYS_SQL = """
SELECT n.nspname, c.relname, k.conname, pg_get_constraintdef(k.oid)
FROM pg_constraint AS k
JOIN pg_class AS c ON c.oid = k.conrelid
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE k.contype = 'f' AND k.conrelid = ANY(%s::regclass[])
"""


#: Primary keys of the loaded tables that no remaining foreign key depends on (run after dropping ours).
_PRIMARY_KEYS_SQL = """
SELECT n.nspname, c.relname, k.conname, pg_get_constraintdef(k.oid)
FROM pg_constraint AS k
JOIN pg_class AS c ON c.oid = k.conrelid
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE k.contype = 'p' AND k.conrelid = ANY(%s::regclass[])
  AND NOT EXISTS (SELECT 1 FROM pg_constraint AS f WHERE f.contype = 'f' AND f.confrelid = k.conrelid)
"""


@contextlib.contextmanager
def _built_at_the_end_if_first_load(conn: Connection) -> Iterator[bool]:
    """On a first load into an empty index, build secondary indexes and foreign keys once at the end.

    Building the cell index after a million inserts, and checking every foreign key with one join, is
    several times cheaper (in time and WAL) than maintaining them row by row. The tables are empty, so
    the exclusive locks this takes block nobody's targeting. Definitions are read from the catalog, so
    a migration may change them freely; everything is back before the transaction commits. Primary
    keys go too (unless a foreign key of another table needs one) and come back first, so the first
    load inserts without conflict checks. Yields whether this is such a first load.
    """
    empty_sql = ("SELECT NOT EXISTS (SELECT 1 FROM residents) AND NOT EXISTS (SELECT 1 FROM resident_settings)"
                 " AND NOT EXISTS (SELECT 1 FROM device_tokens)")
    if conn.execute(empty_sql).fetchone() != (True,):
        yield False
        return
    conn.execute("LOCK TABLE residents, resident_settings, device_tokens IN ACCESS EXCLUSIVE MODE")
    if conn.execute(empty_sql).fetchone() != (True,):  # someone wrote before we held the lock
        yield False
        return
    tables = list(_LOADED_TABLES)
    indexes = [(str(schema), str(name), str(ddl))
               for schema, name, ddl in conn.execute(_SECONDARY_INDEXES_SQL, (tables,))]
    foreign_keys = [(sql.Identifier(str(schema), str(table)), sql.Identifier(str(name)), str(ddl))
                    for schema, table, name, ddl in conn.execute(_FOREIGN_KEYS_SQL, (tables,))]
    for table, constraint, _ in foreign_keys:
        conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(table, constraint))
    for schema, name, _ in indexes:
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(schema, name)))
    primary_keys = [(sql.Identifier(str(schema), str(table)), sql.Identifier(str(name)), str(ddl))
                    for schema, table, name, ddl in conn.execute(_PRIMARY_KEYS_SQL, (tables,))]
    for table, constraint, _ in primary_keys:
        conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(table, constraint))
    yield True
    conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
    for table, constraint, ddl in primary_keys:
        definition = sql.SQL(ddl)  # the catalog's own text
        conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(table, constraint, definition))
    for _, _, ddl in indexes:
        conn.execute(ddl.encode())
    for table, constraint, ddl in foreign_keys:
        definition = sql.SQL(ddl)  # the catalog's own text
        conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(table, constraint, definition))


def _upsert(
    conn: Connection, report: ImportReport, progress: Progress | None, *, repeated_ids: bool, repeated_tokens: bool
) -> None:
    def step(n: int) -> None:
        if progress is not None:
            progress("upsert", n, _UPSERT_STEPS)

    # A resident deleted while we load must not come back: deletions wait for this import to commit.
    conn.execute("LOCK TABLE resident_tombstones IN SHARE ROW EXCLUSIVE MODE")
    conn.execute("ANALYZE resident_import")
    duplicates = [int(r[0]) for r in conn.execute(_DUPLICATES_SQL)] if repeated_ids else []
    report.rejected.extend((line, "resident id repeated on a later line; the later line wins")
                           for line in duplicates)
    report.skipped_deleted = conn.execute(_DELETED_SQL).rowcount
    conn.execute(_RESURRECTED_SQL)
    report.skipped_stale = conn.execute(_STALE_SQL).rowcount
    step(1)
    report.updated = conn.execute(_UPDATE_SQL).rowcount
    step(2)
    with _built_at_the_end_if_first_load(conn) as first_load:
        report.inserted = conn.execute(_FIRST_INSERT_SQL if first_load else _INSERT_SQL).rowcount
        step(3)
        if not first_load:
            conn.execute(_SETTINGS_UPDATE_SQL)
        step(4)
        conn.execute(_FIRST_SETTINGS_INSERT_SQL if first_load else _SETTINGS_INSERT_SQL)
        step(5)
        tokens_sql = _TOKENS_SQL
        if first_load:
            tokens_sql = _FIRST_TOKENS_SQL if repeated_tokens else _FIRST_UNIQUE_TOKENS_SQL
        report.tokens_added = conn.execute(tokens_sql).rowcount
    step(6)
    report.unchanged = report.rows_loaded - len(duplicates) - report.skipped_deleted \
        - report.skipped_stale - report.updated - report.inserted


def _any_repeated(ids: list[np.ndarray]) -> bool:
    """Whether a resident id occurs twice: usually not, and then the self-join that finds them is skipped."""
    every = np.concatenate(ids) if ids else np.empty(0, dtype=np.int64)
    every.sort()
    return bool(np.any(every[1:] == every[:-1]))


@contextlib.contextmanager
def _open_text(source: str | os.PathLike[str] | IO[str] | IO[bytes]) -> Iterator[tuple[IO[str], Path | None]]:
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        with path.open("r", encoding="utf-8", newline="") as stream:
            yield stream, path
    elif isinstance(source, io.TextIOBase):
        yield source, None
    else:
        yield io.TextIOWrapper(cast(IO[bytes], source), encoding="utf-8", newline=""), None


def _refresh_visibility(conn: Connection) -> None:
    """VACUUM the index tables after a bulk load so targeting's range scans stay index-only.

    VACUUM cannot run inside a transaction; when the caller holds one open, autovacuum does it later.
    """
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        return
    autocommit = conn.autocommit
    conn.autocommit = True
    try:
        conn.execute("VACUUM (ANALYZE) residents")
    finally:
        conn.autocommit = autocommit


def import_residents(
    conn: Connection,
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
    with _open_text(path_or_stream) as (stream, path):
        kind = _detect_format(path, fmt)
        total = path.stat().st_size if path is not None else None
        lines = _CountingLines(stream, progress, total)
        with conn.transaction():
            # Sorts and hash joins of a million rows in memory; JIT costs more than it saves here.
            conn.execute("SET LOCAL work_mem = '256MB'")
            conn.execute("SET LOCAL jit = off")
            # A crash may lose the last import (it is simply run again), never corrupt the index.
            conn.execute("SET LOCAL synchronous_commit = off")
            conn.execute(_STAGING_SQL)
            seen = _Seen()
            _copy_rows(conn, _batches(iter(lines), kind, report, seen), report)
            copied = time.perf_counter()
            report.copy_seconds = copied - started
            _upsert(conn, report, progress, repeated_ids=seen.repeated_ids(),
                    repeated_tokens=seen.repeated_tokens())
            report.upsert_seconds = time.perf_counter() - copied
    _refresh_visibility(conn)
    report.rejected.sort()
    report.seconds = time.perf_counter() - started
    return report
