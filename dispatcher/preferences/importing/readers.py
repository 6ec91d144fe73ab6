"""Readers of CSV and JSON Lines files: each row checked and encoded for COPY, problems kept by line."""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import numpy as np

from dispatcher.config import RESIDENT_CELL_RESOLUTION
from dispatcher.errors import ImportProblem
from dispatcher.preferences.importing.converters import NOT_COPYABLE, RowEncoder, jsonl_cells, plain_number
from dispatcher.preferences.importing.copy_rows import Batch, binary_batch
from dispatcher.preferences.importing.report import (
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    Format,
    ImportFileUnreadable,
    ImportReport,
    Progress,
)

#: Rows per chunk written to COPY.
_CHUNK_ROWS = 20_000
#: Lines the vectorised CSV path checks at once; a chunk with a broken row is redone row by row.
_FAST_CHUNK_LINES = 65_536


class CountingLines:
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


def detect_format(path: Path | None, fmt: Format | None) -> Format:
    if fmt is not None:
        return fmt
    if path is not None and path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    return "csv"


@dataclass
class Seen:
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


class CsvReader:
    """Reads a CSV file a chunk at a time, checking whole columns at once.

    A chunk whose rows all pass the vectorised checks is encoded without a Python loop per row; a chunk
    with any broken row is redone row by row by :class:`RowEncoder`, so problems and line numbers are
    exactly those of the row-by-row path. Quoted fields may span lines: from the first quote on, the
    rest of the file goes row by row.
    """

    def __init__(self, columns: Sequence[str], report: ImportReport, seen: Seen) -> None:
        self.encoder = RowEncoder(columns)
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
        while True:
            # A record starts on the line after the last one read (a quoted field may span lines).
            line = offset + reader.line_num + 1
            try:
                cells = next(reader)
            except StopIteration:
                break
            except csv.Error as error:  # the reader drops the rest of that line and goes on
                report.rows_read += 1
                rejected.append((line, _csv_problem(error)))
                continue
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
        numbers = "".join(itertools.chain(columns[enc.i_id], columns[enc.i_lat], columns[enc.i_lng]))
        if not plain_number(numbers) or NOT_COPYABLE.search(text):
            return None  # the row-by-row path names the row and the field
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
            return True, binary_batch(np.arange(first_line, first_line + count, dtype=np.int32), ids,
                                       lat, lng, np.array(cells, dtype=np.int64)), count
        nulls = itertools.repeat("\\N")
        fields = [map(str, line_numbers), map(str, ids.tolist()), map(repr, lat_list), map(repr, lng_list),
                  map(str, cells), *(nulls if values is None else values for values in optional)]
        return False, "\n".join(map("\t".join, zip(*fields, strict=False))) + "\n", count


def batches(lines: Iterator[str], fmt: Format, report: ImportReport, seen: Seen) -> Iterator[Batch]:
    """COPY payloads for every good row; bad rows go to ``report.rejected``, what was read to ``seen``."""
    first = next(lines, None)
    if first is not None:
        first = first.removeprefix("\ufeff")  # a byte order mark, as spreadsheets write it
        if NOT_COPYABLE.search(first):
            raise ImportProblem(1, "the file is not UTF-8 text")
    if fmt == "csv":
        try:
            header = next(csv.reader([first]), None) if first is not None else None
        except csv.Error as error:
            raise ImportProblem(1, "header: " + _csv_problem(error)) from None
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
        yield from CsvReader(columns, report, seen).batches(lines)
        return
    seen.tokens_complete = False
    encoder = RowEncoder((*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS))
    out: list[str] = []
    for line, text in enumerate(itertools.chain([] if first is None else [first], lines), start=1):
        if not text.strip():
            continue
        report.rows_read += 1
        try:
            out.append(encoder.encode(line, jsonl_cells(json.loads(text))))
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            problem = "line is not valid JSON" if isinstance(exc, json.JSONDecodeError) else str(exc)
            report.rejected.append((line, problem))
        except RecursionError:
            report.rejected.append((line, "line is nested too deeply"))
        if len(out) >= _CHUNK_ROWS:
            yield False, "".join(out), len(out)
            out = []
    if out:
        yield False, "".join(out), len(out)
    seen.ids.append(np.array(encoder.ids, dtype=np.int64))



def _any_repeated(ids: list[np.ndarray]) -> bool:
    """Whether a resident id occurs twice: usually not, and then the self-join that finds them is skipped."""
    every = np.concatenate(ids) if ids else np.empty(0, dtype=np.int64)
    every.sort()
    return bool(np.any(every[1:] == every[:-1]))


def _csv_problem(error: csv.Error) -> str:
    if "field limit" in str(error):
        return f"a field is longer than {csv.field_size_limit()} characters"
    return "line is not valid CSV"


@contextlib.contextmanager
def open_text(source: str | os.PathLike[str] | IO[str] | IO[bytes]) -> Iterator[tuple[IO[str], Path | None]]:
    """The source as text. Bytes that are not UTF-8 become surrogates, so the rows holding them are
    rejected by line (see ``NOT_COPYABLE``) instead of the whole file failing at the first one."""
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        try:
            stream = path.open("r", encoding="utf-8", errors="surrogateescape", newline="")
        except OSError as error:
            raise ImportFileUnreadable(f"cannot read the resident file {path.name}: {error.strerror}") from None
        with stream:
            yield stream, path
    elif isinstance(source, io.TextIOBase):
        yield source, None
    else:
        yield io.TextIOWrapper(cast(IO[bytes], source), encoding="utf-8", errors="surrogateescape",
                               newline=""), None

