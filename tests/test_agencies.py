"""Agencies and jurisdictions: the registry, its import, and refusing requests outside a jurisdiction."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dispatcher.agencies.jurisdiction import check_area_in_jurisdiction, covers_with_tolerance
from dispatcher.agencies.registry import active_agencies_geojson, parse_feature_collection, upsert_agencies
from dispatcher.config import Settings
from dispatcher.db.types import Conn
from dispatcher.errors import InvalidAgency, OutsideJurisdiction, UnknownAgency
from dispatcher.pipeline import distribute
from dispatcher.targeting.area import parse_area
from tests.agency_helpers import ELSEWHERE, JURISDICTION, feature, registry_db
from tests.factories import add_resident, request_payload

__all__ = ["registry_db"]

#: Metres to degrees of longitude at latitude 40.
_LON_PER_M = 1 / (111_320 * 0.766044)


def _square_reaching_east(metres: float) -> dict[str, Any]:
    east = -105.267 + metres * _LON_PER_M
    ring = [[-105.28, 40.01], [east, 40.01], [east, 40.02], [-105.28, 40.02], [-105.28, 40.01]]
    return {"type": "Polygon", "coordinates": [ring]}


def _area(geojson: dict[str, Any]) -> Any:
    return parse_area(geojson, max_vertices=1000, max_area_km2=1e9)


@pytest.mark.parametrize(("metres", "tolerance", "inside"), [
    (0, 0, True),      # sharing the jurisdiction's edge: covered, as targeting counts the boundary inside
    (-50, 0, True),
    (10, 0, False),    # exact at tolerance 0
    (10, 25, True),
    (20, 25, True),
    (40, 25, False),
    (100, 25, False),
])
def test_covers_with_tolerance_in_metres(metres: float, tolerance: float, inside: bool) -> None:
    jurisdiction = _area(JURISDICTION)
    assert covers_with_tolerance(jurisdiction, _area(_square_reaching_east(metres)), tolerance) is inside


def test_import_file_registers_agencies_and_the_map_shows_them(registry_db: Conn, settings: Settings,
                                                                 tmp_path: Path) -> None:
    path = tmp_path / "agencies.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        feature("pd-1", JURISDICTION), feature("so-9", ELSEWHERE, name="County Sheriff", kind="sheriff")]}))
    from dispatcher.cli import app

    result = CliRunner().invoke(app, ["agencies", "import", str(path)])
    assert result.exit_code == 0, result.output
    assert "2 agencies loaded, 2 joined" in result.output
    again = CliRunner().invoke(app, ["agencies", "import", str(path)])
    assert "2 agencies loaded, 0 joined" in again.output

    shown = active_agencies_geojson(registry_db)
    assert [f["properties"] for f in shown["features"]] == [
        {"id": "pd-1", "name": "Town Police", "kind": "police",
         "joined_at": shown["features"][0]["properties"]["joined_at"]},
        {"id": "so-9", "name": "County Sheriff", "kind": "sheriff",
         "joined_at": shown["features"][1]["properties"]["joined_at"]},
    ]
    assert shown["features"][0]["geometry"] == JURISDICTION


def test_a_bad_feature_loads_nothing(registry_db: Conn, settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "agencies.geojson"
    bowtie = {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        feature("pd-1", JURISDICTION), feature("pd-2", bowtie)]}))
    from dispatcher.cli import app

    result = CliRunner().invoke(app, ["agencies", "import", str(path)])
    assert result.exit_code == 2
    assert "features[1] (pd-2): jurisdiction" in result.output
    assert registry_db.execute("SELECT count(*) FROM agencies").fetchone() == (0,)


def test_inactive_agency_leaves_the_map_and_rejoining_counts_as_new(registry_db: Conn, settings: Settings) -> None:
    records = parse_feature_collection({"type": "FeatureCollection", "features": [feature("pd-1", JURISDICTION)]})
    assert upsert_agencies(registry_db, records) == ["pd-1"]
    gone = parse_feature_collection({"type": "FeatureCollection",
                                     "features": [feature("pd-1", JURISDICTION, active=False)]})
    assert upsert_agencies(registry_db, gone) == []
    assert active_agencies_geojson(registry_db)["features"] == []
    with pytest.raises(UnknownAgency):
        check_area_in_jurisdiction(registry_db, "pd-1", _area(request_payload()["area"]))


def test_duplicate_ids_in_one_file_are_refused() -> None:
    with pytest.raises(InvalidAgency, match="appears twice"):
        parse_feature_collection({"type": "FeatureCollection",
                                  "features": [feature("pd-1", JURISDICTION), feature("pd-1", ELSEWHERE)]})


def test_publish_refuses_unknown_agency_and_area_outside_jurisdiction(registry_db: Conn, settings: Settings,
                                                                      redis_client: Any) -> None:
    from dispatcher.publishing import publish

    with pytest.raises(UnknownAgency, match="unknown or inactive agency 'pd-1'"):
        publish(request_payload("j-1"))
    upsert_agencies(registry_db, parse_feature_collection(
        {"type": "FeatureCollection", "features": [feature("pd-1", JURISDICTION)]}))
    assert publish(request_payload("j-2")) == "j-2"
    with pytest.raises(OutsideJurisdiction, match="outside the jurisdiction of agency 'pd-1'"):
        publish(request_payload("j-3", area=_square_reaching_east(200)))
    assert publish(request_payload("j-4", area=_square_reaching_east(10))) == "j-4"  # within the tolerance


def test_worker_rejects_with_the_reason_and_writes_no_ledger(registry_db: Conn, settings: Settings) -> None:
    add_resident(registry_db, 1, 40.015, -105.27, tokens=["t-1"], email="a@example.test")
    upsert_agencies(registry_db, parse_feature_collection(
        {"type": "FeatureCollection", "features": [feature("pd-1", ELSEWHERE)]}))
    outcome = distribute(request_payload("w-1"))
    assert outcome.state == "rejected"
    assert outcome.reason is not None and "outside the jurisdiction of agency 'pd-1'" in outcome.reason
    outcome = distribute(request_payload("w-2", agency={"id": "nobody", "name": "Nobody"}))
    assert outcome.state == "rejected" and "unknown or inactive agency 'nobody'" in str(outcome.reason)
    rows = registry_db.execute("SELECT id, state, reason FROM community_requests ORDER BY id").fetchall()
    assert [(r[0], r[1]) for r in rows] == [("w-1", "rejected"), ("w-2", "rejected")]
    assert registry_db.execute("SELECT count(*) FROM deliveries").fetchone() == (0,)

