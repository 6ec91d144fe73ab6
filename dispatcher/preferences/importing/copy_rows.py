"""COPY payloads: the binary layout of a row with no optional values, and the writer of batches."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from psycopg.copy import QueuedLibpqWriter

from dispatcher.db.types import Conn
from dispatcher.preferences.importing import statements
from dispatcher.preferences.importing.report import OPTIONAL_COLUMNS, ImportReport

#: One COPY payload: (binary?, data, rows). Fast chunks go in binary, row-by-row ones as text.
Batch = tuple[bool, bytes | str, int]
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


def binary_batch(lines: np.ndarray, ids: np.ndarray, lat: np.ndarray, lng: np.ndarray,
                  cells: np.ndarray) -> bytes:
    rows = np.empty(len(ids), dtype=_BINARY_ROW)
    rows["fields"] = 5 + _NULL_FIELDS
    rows["line_len"], rows["id_len"], rows["lat_len"], rows["lng_len"], rows["cell_len"] = 4, 8, 8, 8, 8
    rows["line"], rows["id"], rows["lat"], rows["lng"], rows["cell"] = lines, ids, lat, lng, cells
    rows["nulls"] = -1
    return rows.tobytes()

def copy_rows(conn: Conn, batches: Iterator[Batch], report: ImportReport) -> None:
    """One COPY per run of batches in the same format, sent by a worker thread.

    The queued writer lets the server parse one chunk while this thread checks the next: on two cores
    that overlap is worth a third of the reading time.
    """
    cursor = conn.cursor()
    batch = next(batches, None)
    while batch is not None:
        binary = batch[0]
        statement = statements.COPY_BINARY if binary else statements.COPY_TEXT
        with cursor.copy(statement, writer=QueuedLibpqWriter(cursor)) as copy:
            if binary:
                copy.write(_BINARY_HEADER)
            while batch is not None and batch[0] == binary:
                copy.write(batch[1])
                report.rows_loaded += batch[2]
                batch = next(batches, None)
            if binary:
                copy.write(_BINARY_TRAILER)
