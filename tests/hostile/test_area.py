"""Hostile areas: each row is refused by the targeting parser and by the contract, naming the problem.

The same input goes through :func:`parse_area` (what ``dispatcher target``/``preview`` and the worker use)
and through the contract (what ``publish()`` and the worker's first check use), so neither path can
coerce what the other refuses.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from dispatcher.contract import parse_request
from dispatcher.errors import InvalidArea, InvalidRequest
from dispatcher.targeting.area import parse_area
from tests.factories import SQUARE, request_payload

LIMITS: dict[str, Any] = {"max_vertices": 200_000, "max_area_km2": 20_000.0, "max_bytes": 1_000_000}


def _polygon(ring: list[Any], **members: Any) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [ring], **members}


def _with_position(position: Any, at: int = 1) -> dict[str, Any]:
    ring: list[Any] = copy.deepcopy(SQUARE)
    ring[at] = position
    return _polygon(ring)


#: (name, area, what the targeting parser's message names, what the contract's message names)
HOSTILE_AREAS: list[tuple[str, Any, str, str]] = [
    ("crs member", _polygon(SQUARE, crs={"type": "name", "properties": {"name": "EPSG:3857"}}), "crs", "crs"),
    ("crs on a feature", {"type": "Feature", "properties": {}, "crs": {"type": "name"},
                          "geometry": _polygon(SQUARE)}, "crs", "crs"),
    ("crs inside a feature's geometry", {"type": "Feature", "properties": {},
                                         "geometry": _polygon(SQUARE, crs={"type": "name"})}, "crs", "crs"),
    ("longitude as a string", _with_position(["-105.267", 40.01]), "number", "number"),
    ("latitude as a string", _with_position([-105.267, "40.01"]), "number", "number"),
    ("a boolean coordinate", _with_position([True, 40.01]), "number", "number"),
    ("a null coordinate", _with_position([None, 40.01]), "number", "number"),
    ("an object as a position", _with_position({"lon": -105.267, "lat": 40.01}), "position", "position"),
    ("a position of one number", _with_position([-105.267]), "position", "position"),
    ("a position of four numbers", _with_position([-105.267, 40.01, 1.0, 2.0]), "position", "position"),
    ("NaN", _with_position([float("nan"), 40.01]), "finite", "finite"),
    ("Infinity", _with_position([-105.267, float("inf")]), "finite", "finite"),
    ("a huge integer", _with_position([10**400, 40.01]), "range", "range"),
    ("huge properties", {"type": "Feature", "properties": {"blob": "x" * 2_000_000},
                         "geometry": _polygon(SQUARE)}, "bytes", "bytes"),
    ("huge foreign member", _polygon(SQUARE, notes=["y" * 1000] * 2000), "bytes", "bytes"),
    ("deeply nested properties", {"type": "Feature", "geometry": _polygon(SQUARE),
                                  "properties": {"a": __import__("functools").reduce(
                                      lambda inner, _: [inner], range(5000), [])}}, "nested", "nested"),
    ("bbox of strings", _polygon(SQUARE, bbox=["a", "b", "c", "d"]), "bbox", "bbox"),
    ("a Point", {"type": "Point", "coordinates": [-105.27, 40.01]}, "not an area", "type"),
]


@pytest.mark.parametrize(("name", "area", "parser_names", "contract_names"), HOSTILE_AREAS,
                         ids=[row[0] for row in HOSTILE_AREAS])
def test_the_targeting_parser_refuses_it_naming_the_problem(
    name: str, area: Any, parser_names: str, contract_names: str
) -> None:
    with pytest.raises(InvalidArea) as caught:
        parse_area(area, **LIMITS)
    assert parser_names in caught.value.problem.lower(), caught.value.problem


@pytest.mark.parametrize(("name", "area", "parser_names", "contract_names"), HOSTILE_AREAS,
                         ids=[row[0] for row in HOSTILE_AREAS])
def test_the_contract_refuses_it_naming_the_area(
    name: str, area: Any, parser_names: str, contract_names: str
) -> None:
    payload = request_payload()
    payload["area"] = area  # as it is: a copy of a deeply nested area would itself recurse too deep
    with pytest.raises(InvalidRequest) as caught:
        parse_request(payload, max_area_bytes=LIMITS["max_bytes"])
    problems = caught.value.problems
    assert problems and all(p.startswith("area") for p in problems), problems
    assert any(contract_names in p.lower() for p in problems), problems
    assert len(str(caught.value)) < 2_000  # the message names the problem, it does not echo the input


def test_a_valid_area_with_small_foreign_members_and_altitudes_still_passes(settings: Any) -> None:
    ring = [[*position, 1600.0] for position in SQUARE]
    area = {"type": "Feature", "id": 7, "properties": {"name": "block 12"}, "bbox": [-105.28, 40.01, -105.267, 40.02],
            "geometry": {"type": "Polygon", "coordinates": [ring]}}
    request = parse_request(request_payload(area=area))
    assert request.area.model_dump() == area  # kept exactly: integers stay integers, members stay
    assert not parse_area(request.area.model_dump(), **LIMITS).is_empty
