"""Hostile resident files: each broken row is reported with the line it starts on, and every other row loads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dispatcher.errors import ImportProblem
from dispatcher.preferences.importing import import_residents

Conn = psycopg.Connection[Any]

HEADER = b"id,lat,lng,email,locale\n"
BEFORE = b"1,40.0,-74.0,one@example.org,en-US\n"
AFTER = b"3,40.1,-74.1,three@example.org,en-US\n"
BIG = b"x" * (128 * 1024 + 1)

#: (name, the hostile line 3 of a CSV file whose lines 2 and the last are good, words in the problem)
CSV_CASES: list[tuple[str, bytes, str]] = [
    ("NUL in email", b"2,40.0,-74.0,a\x00b@example.org,en-US\n", "email"),
    ("NUL in locale", b"2,40.0,-74.0,two@example.org,en\x00US\n", "locale"),
    ("NUL in id", b"2\x00,40.0,-74.0,two@example.org,en-US\n", "id"),
    ("NUL in lat", b"2,4\x000,-74.0,two@example.org,en-US\n", "lat"),
    ("control character in email", b"2,40.0,-74.0,a\x1bb@example.org,en-US\n", "email"),
    ("DEL in email", b"2,40.0,-74.0,ab\x7f@example.org,en-US\n", "email"),
    ("field over 128 KiB", b"2,40.0,-74.0," + BIG + b"@example.org,en-US\n", "longer than"),
    ("quoted field over 128 KiB", b'2,40.0,-74.0,"' + BIG + b'",en-US\n', "longer than"),
    ("not UTF-8", b"2,40.0,-74.0,caf\xe9@example.org,en-US\n", "UTF-8"),
    ("underscore in latitude", b"2,4_0,-74.0,two@example.org,en-US\n", "lat"),
    ("underscore in id", b"2_0,40.0,-74.0,two@example.org,en-US\n", "id"),
    ("non-ASCII digits in latitude", "2,٤٠,-74.0,two@example.org,en-US\n".encode(), "lat"),
    ("multi-line quoted record", b'2,40.0,-74.0,"two@\nexample.org",en-US\n', "email"),
    ("too few columns", b"2,40.0\n", "columns"),
]


@pytest.mark.parametrize(("name", "line", "problem"), CSV_CASES, ids=[c[0] for c in CSV_CASES])
def test_hostile_csv_row_is_reported_at_its_first_line_and_the_rest_loads(
    db: Conn, tmp_path: Path, name: str, line: bytes, problem: str
) -> None:
    path = tmp_path / "residents.csv"
    path.write_bytes(HEADER + BEFORE + line + AFTER)

    report = import_residents(db, path)

    assert [n for n, _ in report.rejected] == [3]
    assert problem in report.rejected[0][1]
    assert report.rows_loaded == 2
    assert db.execute("SELECT id, email FROM residents ORDER BY id").fetchall() == [
        (1, "one@example.org"), (3, "three@example.org")]


def test_a_byte_order_mark_on_the_header_is_not_part_of_the_first_column(db: Conn, tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbf" + HEADER + BEFORE + AFTER)
    report = import_residents(db, path)
    assert report.rejected == [] and report.inserted == 2


def test_a_file_that_is_not_utf8_at_all_is_refused_at_line_one(db: Conn, tmp_path: Path) -> None:
    path = tmp_path / "utf16.csv"
    path.write_bytes((HEADER + BEFORE).decode().encode("utf-16"))
    with pytest.raises(ImportProblem, match=r"line 1: .*UTF-8"):
        import_residents(db, path)


@pytest.mark.parametrize("where", ["missing", "directory"])
def test_a_missing_or_unreadable_file_is_a_clear_error(db: Conn, tmp_path: Path, where: str) -> None:
    path = tmp_path / "nowhere.csv" if where == "missing" else tmp_path
    with pytest.raises(ImportProblem, match="cannot read the resident file") as raised:
        import_residents(db, path)
    assert not str(raised.value).startswith("line")


JSONL_CASES: list[tuple[str, str, str]] = [
    ("NUL in email", json.dumps({"id": 2, "lat": 40.0, "lng": -74.0, "email": "a\u0000b@example.org"}), "email"),
    ("lone surrogate in email", '{"id": 2, "lat": 40.0, "lng": -74.0, "email": "\\ud800@example.org"}', "email"),
    ("deeply nested", '{"id": 2, "lat": 40.0, "lng": -74.0, "locale": ' + "[" * 100_000 + "]" * 100_000 + "}",
     "nested"),
    ("string latitude with underscore", '{"id": 2, "lat": "4_0", "lng": -74.0}', "lat"),
]


@pytest.mark.parametrize(("name", "line", "problem"), JSONL_CASES, ids=[c[0] for c in JSONL_CASES])
def test_hostile_json_line_is_reported_and_the_rest_loads(
    db: Conn, tmp_path: Path, name: str, line: str, problem: str
) -> None:
    path = tmp_path / "residents.jsonl"
    good = [json.dumps({"id": i, "lat": 40.0, "lng": -74.0, "email": f"r{i}@example.org"}) for i in (1, 3)]
    path.write_text("\n".join([good[0], line, good[1]]) + "\n", encoding="utf-8")

    report = import_residents(db, path)

    assert [n for n, _ in report.rejected] == [2]
    assert problem in report.rejected[0][1]
    assert [r[0] for r in db.execute("SELECT id FROM residents ORDER BY id").fetchall()] == [1, 3]
