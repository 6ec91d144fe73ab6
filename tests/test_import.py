"""Bulk import of the resident index: COPY, validation with line numbers, idempotent upserts."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import h3
import psycopg
import pytest

from dispatcher.errors import ImportProblem
from dispatcher.preferences import updates
from dispatcher.preferences.importing import import_residents

Conn = psycopg.Connection[Any]


def _cell(lat: float, lng: float) -> int:
    return int(h3.str_to_int(h3.latlng_to_cell(lat, lng, 15)))


GOOD_AND_BROKEN = """\
id,lat,lng,email,locale,time_zone,has_camera,push_tokens,community_requests,push,email_enabled
1,40.7128,-74.0060,one@example.org,en-US,America/New_York,true,tok-1a;tok-1b,true,true,true
2,91.0,-74.0,two@example.org,en-US,UTC,false,,true,true,true
3,40.70,-74.01,,fr-FR,Europe/Paris,false,tok-3,false,true,true
x4,40.70,-74.01,,,,,,,,
5,40.70,-74.01,not-an-email,,,,,,,
6,40.70,-74.01,six@example.org,,Mars/Olympus,,,,,
7,40.70,-74.01,seven@example.org,,,maybe,,,,
8,40.71,-74.02,eight@example.org,,,,,,false,
9,40.70
"""


def test_import_loads_good_rows_and_reports_broken_ones_by_line(db: Conn, tmp_path: Path) -> None:
    path = tmp_path / "residents.csv"
    path.write_text(GOOD_AND_BROKEN)
    seen: list[tuple[str, int, int | None]] = []

    report = import_residents(db, path, progress=lambda phase, done, total: seen.append((phase, done, total)))

    assert report.rows_read == 9
    assert report.inserted == 3 and report.updated == 0
    lines = dict(report.rejected)
    assert set(lines) == {3, 5, 6, 7, 8, 10}
    assert "lat" in lines[3]
    assert "id" in lines[5]
    assert "email" in lines[6]
    assert "time_zone" in lines[7]
    assert "has_camera" in lines[8]
    assert "columns" in lines[10]
    # Problems name the field, never the value.
    assert "not-an-email" not in lines[6] and "Mars" not in lines[7]

    rows = db.execute(
        "SELECT id, cell, email, locale, time_zone, has_camera FROM residents ORDER BY id"
    ).fetchall()
    assert rows == [
        (1, _cell(40.7128, -74.0060), "one@example.org", "en-US", "America/New_York", True),
        (3, _cell(40.70, -74.01), None, "fr-FR", "Europe/Paris", False),
        (8, _cell(40.71, -74.02), "eight@example.org", "en-US", "UTC", False),
    ]
    settings = db.execute(
        "SELECT resident_id, community_requests, push_enabled, email_enabled FROM resident_settings"
        " ORDER BY resident_id"
    ).fetchall()
    # Resident 1 keeps every default: no row is what "everything on" means, so none is written.
    assert settings == [(3, False, True, True), (8, True, False, True)]
    tokens = db.execute("SELECT token, resident_id FROM device_tokens ORDER BY token").fetchall()
    assert tokens == [("tok-1a", 1), ("tok-1b", 1), ("tok-3", 3)]
    assert seen and seen[-1] == ("upsert", 6, 6)
    assert any(phase == "read" and done == path.stat().st_size for phase, done, _ in seen)


def test_import_is_idempotent_and_a_new_location_recomputes_the_cell(db: Conn, tmp_path: Path) -> None:
    path = tmp_path / "residents.csv"
    path.write_text(GOOD_AND_BROKEN)
    import_residents(db, path)
    before = db.execute("SELECT * FROM residents ORDER BY id").fetchall()

    again = import_residents(db, path)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 3)
    assert db.execute("SELECT * FROM residents ORDER BY id").fetchall() == before
    assert db.execute("SELECT count(*) FROM device_tokens").fetchone() == (3,)

    switched_on = import_residents(db, io.StringIO("id,lat,lng,community_requests\n3,40.70,-74.01,true\n"), fmt="csv")
    assert switched_on.updated == 0  # settings changed, the resident row did not
    assert db.execute("SELECT community_requests FROM resident_settings WHERE resident_id = 3").fetchone() == (True,)

    moved = tmp_path / "moved.csv"
    moved.write_text("id,lat,lng\n1,51.5007,-0.1246\n")
    report = import_residents(db, moved)
    assert (report.inserted, report.updated) == (0, 1)
    row = db.execute("SELECT lat, lng, cell, email FROM residents WHERE id = 1").fetchone()
    # Columns absent from the file keep their values.
    assert row == (51.5007, -0.1246, _cell(51.5007, -0.1246), "one@example.org")


def test_import_last_duplicate_wins_and_earlier_is_reported(db: Conn) -> None:
    data = io.StringIO("id,lat,lng,email\n1,10,10,a@example.org\n2,11,11,\n1,12,12,b@example.org\n")
    report = import_residents(db, data, fmt="csv")
    assert report.rejected == [(2, "resident id repeated on a later line; the later line wins")]
    assert db.execute("SELECT lat, email FROM residents WHERE id = 1").fetchone() == (12.0, "b@example.org")


def test_import_respects_versions_and_tombstones(db: Conn) -> None:
    updates.upsert_resident(db, 1, version=5, lat=1.0, lng=1.0, email="new@example.org")
    updates.upsert_resident(db, 2, version=1, lat=2.0, lng=2.0, email=None)
    updates.delete_resident(db, 2, version=3)

    data = io.StringIO("id,lat,lng,email,version\n1,9,9,old@example.org,4\n2,9,9,,2\n3,9,9,,1\n")
    report = import_residents(db, data, fmt="csv")
    assert (report.skipped_stale, report.skipped_deleted, report.inserted) == (1, 1, 1)
    assert db.execute("SELECT lat, email FROM residents WHERE id = 1").fetchone() == (1.0, "new@example.org")
    assert db.execute("SELECT count(*) FROM residents WHERE id = 2").fetchone() == (0,)

    # An email changed at a newer version than the file's row survives the row.
    updates.change_email(db, 1, version=9, email="newest@example.org")
    import_residents(db, io.StringIO("id,lat,lng,email,version\n1,5,5,file@example.org,6\n"), fmt="csv")
    assert db.execute("SELECT lat, email FROM residents WHERE id = 1").fetchone() == (5.0, "newest@example.org")

    # A newer version brings a deleted resident back.
    report = import_residents(db, io.StringIO("id,lat,lng,version\n2,3,3,4\n"), fmt="csv")
    assert report.inserted == 1
    assert db.execute("SELECT count(*) FROM resident_tombstones").fetchone() == (0,)


def test_import_jsonl(db: Conn, tmp_path: Path) -> None:
    path = tmp_path / "residents.jsonl"
    lines = [
        {"id": 1, "lat": 40.0, "lng": -70.0, "email": "a@example.org", "push_tokens": ["t1", "t2"],
         "push": False, "has_camera": True},
        {"id": 2, "lat": 40.0, "lng": "east"},
        "not an object",
        {"id": 3, "lat": 40.0, "lng": -70.0, "shoe_size": 44},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n{broken\n")
    report = import_residents(db, path)
    assert report.inserted == 1
    assert [line for line, _ in report.rejected] == [2, 3, 4, 6]
    assert db.execute(
        "SELECT r.email, r.has_camera, s.push_enabled FROM residents r JOIN resident_settings s"
        " ON s.resident_id = r.id"
    ).fetchone() == ("a@example.org", True, False)
    assert db.execute("SELECT count(*) FROM device_tokens").fetchone() == (2,)

    # "email": null clears the address; an absent email keeps it.
    import_residents(db, io.StringIO('{"id": 1, "lat": 40.0, "lng": -70.0}\n'), fmt="jsonl")
    assert db.execute("SELECT email FROM residents").fetchone() == ("a@example.org",)
    import_residents(db, io.StringIO('{"id": 1, "lat": 40.0, "lng": -70.0, "email": null}\n'), fmt="jsonl")
    assert db.execute("SELECT email FROM residents").fetchone() == (None,)


def test_import_refuses_a_file_without_the_required_header(db: Conn) -> None:
    with pytest.raises(ImportProblem, match="line 1"):
        import_residents(db, io.StringIO("id,latitude,lng\n1,2,3\n"), fmt="csv")
    with pytest.raises(ImportProblem, match="empty"):
        import_residents(db, io.StringIO(""), fmt="csv")


def test_import_of_many_rows_builds_the_cell_index(db: Conn, tmp_path: Path) -> None:
    path = tmp_path / "many.csv"
    with path.open("w") as f:
        f.write("id,lat,lng,push_tokens,push\n")
        for i in range(1, 20_001):
            f.write(f"{i},{40 + i * 1e-5:.6f},{-74 + i * 1e-5:.6f},tok-{i},{i % 2 == 0}\n")
    report = import_residents(db, path)
    assert report.inserted == 20_000 and report.tokens_added == 20_000 and not report.rejected
    # The first load rebuilds secondary indexes at the end; they must be there afterwards.
    names = {r[0] for r in db.execute("SELECT indexname FROM pg_indexes")}
    assert {"residents_cell_idx", "device_tokens_resident_idx"} <= names
    foreign_keys = db.execute(
        "SELECT conrelid::regclass::text FROM pg_constraint WHERE contype = 'f'"
        " AND confrelid = 'residents'::regclass ORDER BY 1"
    ).fetchall()
    assert foreign_keys == [("device_tokens",), ("resident_settings",)]
    primary_keys = db.execute(
        "SELECT conrelid::regclass::text FROM pg_constraint WHERE contype = 'p'"
        " AND conrelid = ANY('{residents,resident_settings,device_tokens}'::regclass[]) ORDER BY 1"
    ).fetchall()
    assert primary_keys == [("device_tokens",), ("resident_settings",), ("residents",)]
    assert db.execute(
        "SELECT count(*) FROM residents WHERE cell = %s", (_cell(40.1, -73.9),)
    ).fetchone() == (1,)


def test_import_checks_large_files_in_chunks_and_still_reports_every_broken_line(db: Conn, tmp_path: Path) -> None:
    # Big enough for several chunks of the vectorised path: the first chunk holds a broken row (it is
    # redone row by row), the second repeats an id of the first, the third has a quoted field spanning
    # two lines (from there on, row by row, line numbers counting physical lines).
    path = tmp_path / "large.csv"
    rows = 140_000
    with path.open("w") as f:
        f.write("id,lat,lng,email\n")
        for i in range(1, rows + 1):
            line = i + 1
            if line == 50_000:
                f.write(f"{i},40.7,-181,\n")
            elif line == 100_000:
                f.write(f"{7},40.5,-73.5,\n")
            elif line == 135_000:
                f.write(f'{i},40.6,-73.6,"a@b.org\n"\n')
            elif line == 139_000:
                f.write(f"{i},40.6,-73.6,not-an-address\n")
            else:
                f.write(f"{i},{40 + i * 1e-6!r},{-74 + i * 1e-6!r},r{i}@example.org\n")
    report = import_residents(db, path)

    assert report.rows_read == rows
    assert report.rejected == [
        (8, "resident id repeated on a later line; the later line wins"),
        (50_000, "lng must be between -180 and 180"),
        (139_001, "email is not a valid address"),
    ]
    assert report.inserted == rows - 3  # two rejected, one id repeated
    assert db.execute("SELECT lat, lng, cell FROM residents WHERE id = 7").fetchone() == (
        40.5, -73.5, _cell(40.5, -73.5))
    i = 123_457
    lat, lng = 40 + i * 1e-6, -74 + i * 1e-6
    assert db.execute("SELECT lat, lng, cell, email FROM residents WHERE id = %s", (i,)).fetchone() == (
        lat, lng, _cell(lat, lng), f"r{i}@example.org")
    assert db.execute("SELECT count(*) FROM residents WHERE email IS NULL").fetchone() == (1,)
    assert db.execute("SELECT email FROM residents WHERE id = 134999").fetchone() == ("a@b.org",)


def test_a_first_load_gives_a_token_listed_twice_to_the_later_line(db: Conn) -> None:
    text = "id,lat,lng,push_tokens\n1,40.1,-74.1,shared;own-1\n2,40.2,-74.2,own-2;shared\n"
    report = import_residents(db, io.StringIO(text), fmt="csv")
    assert report.inserted == 2 and report.tokens_added == 3 and not report.rejected
    tokens = db.execute("SELECT token, resident_id FROM device_tokens ORDER BY token").fetchall()
    assert tokens == [("own-1", 1), ("own-2", 2), ("shared", 2)]
