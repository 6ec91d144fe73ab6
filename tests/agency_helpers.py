"""Shared by the agencies' tests: a registry emptied for the test and restored after it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from dispatcher.db.types import Conn
from tests.factories import register_agency

#: Around the factories' SQUARE (lon -105.28..-105.267, lat 40.01..40.02), east edge on the square's.
JURISDICTION = {"type": "Polygon", "coordinates": [[[-105.30, 40.00], [-105.267, 40.00], [-105.267, 40.03],
                                                   [-105.30, 40.03], [-105.30, 40.00]]]}
#: Another town, far away.
ELSEWHERE = {"type": "Polygon", "coordinates": [[[-104.0, 39.0], [-103.9, 39.0], [-103.9, 39.1],
                                                 [-104.0, 39.1], [-104.0, 39.0]]]}


def feature(agency_id: str, geometry: Any, *, name: str = "Town Police", kind: str = "police",
            **props: Any) -> dict[str, Any]:
    """One agency as a GeoJSON Feature of an import file."""
    return {"type": "Feature", "properties": {"id": agency_id, "name": name, "kind": kind, **props},
            "geometry": geometry}


@pytest.fixture
def registry_db(db: Conn) -> Iterator[Conn]:
    """The test database with an empty agency registry; the factories' world agency is restored after."""
    db.execute("DELETE FROM agencies")
    try:
        yield db
    finally:
        db.execute("DELETE FROM agencies")
        register_agency(db)
