"""Hostile input at every agencies entry point: the import file, `dispatcher moderate`, the response and
agency actors, the router's routes, and the contract's ``kind``. Each ends with a clear error naming the
problem (or a logged drop for an actor), and nothing is written."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from dispatcher.agencies.actors import agency_updated, resident_responded
from dispatcher.agencies.api import router
from dispatcher.cli import app
from dispatcher.config import Settings
from dispatcher.contract import parse_request
from dispatcher.db.types import Conn
from dispatcher.errors import InvalidRequest
from dispatcher.pipeline import distribute
from tests.agency_helpers import JURISDICTION, feature, registry_db
from tests.factories import add_resident, request_payload

__all__ = ["registry_db"]

_NESTED = "[" * 100_000 + "]" * 100_000
_BOWTIE = {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}


def _collection(*features: Any) -> str:
    return json.dumps({"type": "FeatureCollection", "features": list(features)})


#: (name, file content, what the error line must contain)
HOSTILE_AGENCY_FILES: list[tuple[str, str | bytes, str]] = [
    ("not JSON", "{nope", "not JSON"),
    ("not UTF-8", b"\xff\xfe{", "UTF-8"),
    ("deeply nested", _NESTED, "nested"),
    ("a list", "[1, 2]", "FeatureCollection"),
    ("a single Feature", json.dumps(feature("pd-1", JURISDICTION)), "FeatureCollection"),
    ("features not an array", json.dumps({"type": "FeatureCollection", "features": {}}), "features must be"),
    ("a feature that is a string", _collection("pd-1"), "features[0]: expected a GeoJSON Feature"),
    ("no properties", _collection({"type": "Feature", "geometry": JURISDICTION}), "properties must be"),
    ("id with markup", _collection(feature("[/x]", JURISDICTION)), "properties.id"),
    ("id too long", _collection(feature("p" * 65, JURISDICTION)), "properties.id"),
    ("id a number", _collection(feature(7, JURISDICTION)), "properties.id"),  # type: ignore[arg-type]
    ("empty name", _collection(feature("pd-1", JURISDICTION, name=" ")), "properties.name"),
    ("name of 10,000 characters", _collection(feature("pd-1", JURISDICTION, name="n" * 10_000)),
     "properties.name"),
    ("kind upper case", _collection(feature("pd-1", JURISDICTION, kind="POLICE")), "properties.kind"),
    ("active as a string", _collection(feature("pd-1", JURISDICTION, active="yes")), "properties.active"),
    ("point jurisdiction", _collection(feature("pd-1", {"type": "Point", "coordinates": [0, 0]})), "not an area"),
    ("no geometry", _collection(feature("pd-1", None)), "jurisdiction"),
    ("self-intersecting", _collection(feature("pd-1", _BOWTIE)), "jurisdiction"),
    ("crs member", _collection(feature("pd-1", {**JURISDICTION, "crs": {"type": "name"}})), "crs"),
    ("latitude out of range", _collection(feature("pd-1", {"type": "Polygon", "coordinates": [
        [[0, 0], [0, 100], [1, 100], [0, 0]]]})), "jurisdiction"),
    ("string coordinates", _collection(feature("pd-1", {"type": "Polygon", "coordinates": [
        [["0", "0"], ["0", "1"], ["1", "1"], ["0", "0"]]]})), "jurisdiction"),
    ("same id twice", _collection(feature("pd-1", JURISDICTION), feature("pd-1", JURISDICTION)), "appears twice"),
    ("good then bad", _collection(feature("pd-1", JURISDICTION), feature("pd-2", _BOWTIE)), "features[1]"),
]


@pytest.mark.parametrize(("name", "content", "named"), HOSTILE_AGENCY_FILES,
                         ids=[row[0] for row in HOSTILE_AGENCY_FILES])
def test_hostile_agency_file_fails_cleanly_and_loads_nothing(
    name: str, content: str | bytes, named: str, tmp_path: Path, registry_db: Conn, settings: Settings
) -> None:
    path = tmp_path / "agencies.geojson"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    result = CliRunner().invoke(app, ["agencies", "import", str(path)])
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0], result.stderr
    assert registry_db.execute("SELECT count(*) FROM agencies").fetchone() == (0,)


#: (name, file content, what the error line must contain) for `dispatcher moderate`.
HOSTILE_MODERATE_FILES: list[tuple[str, str | bytes, str]] = [
    ("not JSON", "{nope", "JSON"),
    ("not UTF-8", b"\xff\xfe{", "UTF-8"),
    ("deeply nested", _NESTED, "nested"),
    ("a list", "[1]", "object"),
]


@pytest.mark.parametrize(("name", "content", "named"), HOSTILE_MODERATE_FILES,
                         ids=[row[0] for row in HOSTILE_MODERATE_FILES])
def test_hostile_moderate_file_fails_cleanly(name: str, content: str | bytes, named: str, tmp_path: Path) -> None:
    path = tmp_path / "request.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    result = CliRunner().invoke(app, ["moderate", str(path)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], result.stderr


@pytest.mark.parametrize("request_doc", [
    {"details": 5, "incident_type": ["x"], "investigator": "nobody"},
    {"details": "Call 303-555-0199" * 2000, "investigator": {"phone": 7}},
    {},
], ids=["wrong types", "long text and a numeric phone", "empty object"])
def test_moderate_tolerates_what_it_cannot_read(request_doc: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "odd.json"
    path.write_text(json.dumps(request_doc))
    result = CliRunner().invoke(app, ["moderate", str(path), "--json"])
    assert result.exit_code == 0, result.output
    assert isinstance(json.loads(result.stdout)["flags"], list)


@pytest.fixture
def answered(db: Conn, settings: Settings) -> Iterator[Conn]:
    """A stored request and a resident in its area, nothing answered yet."""
    add_resident(db, 1, 40.015, -105.273, tokens=["t-1"], email="a@example.test")
    assert distribute(request_payload("h-1")).state == "sending"
    yield db


def _nothing_recorded(db: Conn) -> None:
    assert db.execute("SELECT count(*) FROM request_responses").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM request_opt_outs").fetchone() == (0,)


#: (name, JSON body, expected status, what the detail must contain)
HOSTILE_RESPONSE_BODIES: list[tuple[str, Any, int, str]] = [
    ("a list", [1, 2], 422, ""),
    ("a string", "share", 422, ""),
    ("empty object", {}, 422, "request_id"),
    ("unknown field", {"request_id": "h-1", "resident_id": 1, "response": "share", "email": "x@y.z"}, 422,
     "unknown fields"),
    ("response unknown", {"request_id": "h-1", "resident_id": 1, "response": "SHARE"}, 422, "response"),
    ("response a list", {"request_id": "h-1", "resident_id": 1, "response": ["share"]}, 422, "response"),
    ("resident id a string", {"request_id": "h-1", "resident_id": "1", "response": "share"}, 422, "resident_id"),
    ("resident id a bool", {"request_id": "h-1", "resident_id": True, "response": "share"}, 422, "resident_id"),
    ("resident id negative", {"request_id": "h-1", "resident_id": -1, "response": "share"}, 422, "resident_id"),
    ("resident id past 64 bits", {"request_id": "h-1", "resident_id": 2**64, "response": "share"}, 422,
     "resident_id"),
    ("request id with a newline", {"request_id": "h-1\nx", "resident_id": 1, "response": "share"}, 422,
     "request_id"),
    ("request id of 5,000 characters", {"request_id": "r" * 5000, "resident_id": 1, "response": "share"}, 422,
     "request_id"),
    ("consent a string", {"request_id": "h-1", "resident_id": 1, "response": "share", "contact_consent": "true"},
     422, "contact_consent"),
    ("contact without consent", {"request_id": "h-1", "resident_id": 1, "response": "share",
                                 "contact": {"name": "Sam"}}, 422, "contact"),
    ("contact with an address", {"request_id": "h-1", "resident_id": 1, "response": "share",
                                 "contact_consent": True, "contact": {"address": "1 Main St"}}, 422, "contact"),
    ("contact name of 10,000 characters", {"request_id": "h-1", "resident_id": 1, "response": "share",
                                           "contact_consent": True, "contact": {"name": "n" * 10_000}}, 422,
     "contact.name"),
    ("contact a list", {"request_id": "h-1", "resident_id": 1, "response": "share", "contact_consent": True,
                        "contact": ["Sam"]}, 422, "contact"),
    ("unknown request", {"request_id": "nope", "resident_id": 1, "response": "share"}, 404, "no such request"),
    ("unknown resident", {"request_id": "h-1", "resident_id": 999, "response": "decline"}, 404,
     "no such resident"),
]


@pytest.mark.parametrize(("name", "body", "status", "named"), HOSTILE_RESPONSE_BODIES,
                         ids=[row[0] for row in HOSTILE_RESPONSE_BODIES])
def test_hostile_response_post_is_refused_and_records_nothing(
    name: str, body: Any, status: int, named: str, answered: Conn
) -> None:
    api = FastAPI()
    api.include_router(router)
    response = TestClient(api).post("/responses", json=body)
    assert response.status_code == status, response.text
    assert named in json.dumps(response.json()["detail"])
    _nothing_recorded(answered)


@pytest.mark.parametrize(("path", "status"), [
    ("/agencies/[x]/requests/h-1/shares", 422),
    ("/agencies/pd-1/requests/" + "r" * 200 + "/shares", 422),
    ("/agencies/so-9/requests/h-1/shares", 404),
    ("/agencies/pd-1/requests/nope/shares", 404),
    ("/residents/-5/responses", 422),
    ("/residents/99999999999999999999999/responses", 422),
    ("/residents/abc/responses", 422),
])
def test_hostile_paths_are_refused(path: str, status: int, answered: Conn) -> None:
    api = FastAPI()
    api.include_router(router)
    assert TestClient(api).get(path).status_code == status


#: (name, positional arguments, keyword fields) of resident_responded messages that must be dropped.
HOSTILE_RESPONSE_MESSAGES: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("no fields", (), {}),
    ("too many positional values", ("h-1", 1, "share", False, None, "extra"), {}),
    ("resident id a string", ("h-1", "1", "share"), {}),
    ("response unknown", ("h-1", 1, "maybe"), {}),
    ("contact without consent", ("h-1", 1, "share"), {"contact": {"name": "Sam"}}),
    ("request id a dict", ({"id": "h-1"}, 1, "share"), {}),
    ("unknown request", ("nope", 1, "share"), {}),
    ("unknown resident", ("h-1", 5, "share"), {}),
]


@pytest.mark.parametrize(("name", "args", "fields"), HOSTILE_RESPONSE_MESSAGES,
                         ids=[row[0] for row in HOSTILE_RESPONSE_MESSAGES])
def test_hostile_response_message_is_dropped_without_raising(
    name: str, args: tuple[Any, ...], fields: dict[str, Any], answered: Conn
) -> None:
    resident_responded.fn(*args, **fields)
    _nothing_recorded(answered)


@pytest.mark.parametrize("message", [
    "pd-1", [1], {"type": "Feature"}, feature("pd-2", _BOWTIE), feature("[x]", JURISDICTION), {},
], ids=["a string", "a list", "no properties", "bad jurisdiction", "bad id", "empty"])
def test_hostile_agency_message_is_dropped(message: Any, registry_db: Conn, settings: Settings) -> None:
    agency_updated.fn(message)
    assert registry_db.execute("SELECT count(*) FROM agencies").fetchone() == (0,)
    agency_updated.fn(feature("pd-3", JURISDICTION))  # and the next good one goes through
    assert registry_db.execute("SELECT id FROM agencies").fetchall() == [("pd-3",)]


@pytest.mark.parametrize(("kind", "problem"), [
    (None, "kind must be one of"),
    (["video_request"], "kind must be one of"),
    ("VIDEO_REQUEST", "kind must be one of"),
    ("video_request\n", "kind must be one of"),
    ("k" * 10_000, "kind must be one of"),
])
def test_hostile_kind_is_named(kind: Any, problem: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        parse_request({**request_payload(), "kind": kind})
    assert any(problem in p for p in raised.value.problems)
    assert all(len(p) < 300 for p in raised.value.problems)


@pytest.mark.parametrize("message", [["pd-1"], {"id": "pd-1"}, 7, None, "[x]", "p" * 5000, "unknown-agency"],
                         ids=["a list", "a dict", "a number", "null", "markup", "5,000 characters", "unknown"])
def test_hostile_announcement_message_is_dropped(message: Any, db: Conn, settings: Settings) -> None:
    from dispatcher.agencies.actors import announce_agency

    announce_agency.fn(message)
    assert db.execute("SELECT count(*) FROM community_requests").fetchone() == (0,)
