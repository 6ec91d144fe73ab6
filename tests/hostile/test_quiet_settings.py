"""Hostile values for the quiet-hours settings, straight into :func:`updates.change_settings` (the worker
path is in test_resident_update.py): each is refused with a problem naming the field and never the
value, nothing is written, and a good change beside it still applies and is ordered per setting."""

from __future__ import annotations

from datetime import time
from typing import Any

import psycopg
import pytest

from dispatcher.errors import InvalidResidentUpdate
from dispatcher.preferences import updates
from tests.factories import add_resident

Conn = psycopg.Connection[Any]
BIG = "2" * (1 << 20)

#: (case, the change's fields, the field the problem names)
CASES: list[tuple[str, dict[str, Any], str]] = [
    ("switch as text", {"quiet_hours": "off"}, "quiet_hours must be true or false"),
    ("switch as a number", {"quiet_hours": 0}, "quiet_hours must be true or false"),
    ("switch as a list", {"quiet_hours": [False]}, "quiet_hours must be true or false"),
    ("start as a number", {"quiet_start": 2200}, "quiet_start must be a time of day"),
    ("start as a float", {"quiet_start": 22.5}, "quiet_start must be a time of day"),
    ("start as a boolean", {"quiet_start": True}, "quiet_start must be a time of day"),
    ("start as an object", {"quiet_start": {"h": 22}}, "quiet_start must be a time of day"),
    ("start 24:00", {"quiet_start": "24:00"}, "quiet_start must be a time of day"),
    ("start without zero padding", {"quiet_start": "7:00"}, "quiet_start must be a time of day"),
    ("start with seconds", {"quiet_start": "22:00:00"}, "quiet_start must be a time of day"),
    ("start with a zone", {"quiet_start": "22:00+02:00"}, "quiet_start must be a time of day"),
    ("start with am/pm", {"quiet_start": "10:00 PM"}, "quiet_start must be a time of day"),
    ("start empty", {"quiet_start": ""}, "quiet_start must be a time of day"),
    ("start with a NUL", {"quiet_start": "22:00\x00"}, "quiet_start must be a time of day"),
    ("start with a newline", {"quiet_start": "22:00\n"}, "quiet_start must be a time of day"),
    ("start in Arabic-Indic digits", {"quiet_start": "٢٢:٠٠"}, "quiet_start must be a time of day"),
    ("start as SQL", {"quiet_start": "22:00'); DROP TABLE residents; --"}, "quiet_start must be a time of day"),
    ("end 07:60", {"quiet_end": "07:60"}, "quiet_end must be a time of day"),
    ("end negative", {"quiet_end": "-07:00"}, "quiet_end must be a time of day"),
    ("end a megabyte long", {"quiet_end": BIG}, "quiet_end must be a time of day"),
    ("good start, bad end", {"quiet_start": "21:00", "quiet_end": "7"}, "quiet_end must be a time of day"),
]


@pytest.mark.parametrize(("case", "fields", "problem"), CASES, ids=[c[0] for c in CASES])
def test_a_hostile_quiet_setting_is_refused_by_name_and_writes_nothing(
        db: Conn, case: str, fields: dict[str, Any], problem: str) -> None:
    add_resident(db, 1, 40.0, -105.0)
    with pytest.raises(InvalidResidentUpdate, match=problem) as refused:
        updates.change_settings(db, 1, version=2, **fields)
    for value in fields.values():
        if isinstance(value, str) and len(value) > 3:
            assert value not in str(refused.value)
    assert db.execute("SELECT count(*) FROM resident_settings").fetchone() == (0,)
    # The good change beside it applies.
    assert updates.change_settings(db, 1, version=2, quiet_start="21:30", quiet_end="06:15")
    assert db.execute("SELECT quiet_hours, quiet_start, quiet_end FROM resident_settings").fetchone() == (
        True, time(21, 30), time(6, 15))


def test_quiet_settings_are_ordered_per_setting(db: Conn) -> None:
    add_resident(db, 1, 40.0, -105.0)
    assert updates.change_settings(db, 1, version=5, quiet_end="06:00")
    assert updates.change_settings(db, 1, version=4, quiet_start="23:00", quiet_end="08:00")  # start is newer
    assert not updates.change_settings(db, 1, version=4, quiet_start="23:00", quiet_end="08:00")  # a replay
    assert updates.change_settings(db, 1, version=6, quiet_hours=False)
    assert not updates.change_settings(db, 1, version=3, quiet_hours=True)
    row = db.execute("SELECT quiet_hours, quiet_start, quiet_end, push_enabled, version FROM resident_settings"
                     ).fetchone()
    assert row == (False, time(23, 0), time(6, 0), True, 6)
