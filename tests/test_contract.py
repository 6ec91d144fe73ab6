"""The job contract: valid requests pass, invalid ones are refused naming each bad field."""

from __future__ import annotations

import json

import jsonschema
import pytest

from dispatcher.contract import json_schema, parse_request, published_schema, validate_request
from dispatcher.errors import InvalidArea, InvalidRequest
from tests.factories import request_payload


def test_valid_request_parses_and_round_trips() -> None:
    payload = request_payload()
    request = parse_request(payload)
    assert request.id == "req-1"
    assert request.agency.name == "Springfield Police"
    again = parse_request(json.dumps(request.to_json_dict()))
    assert again.fingerprint() == request.fingerprint()


def test_published_schema_file_matches_the_model() -> None:
    assert published_schema() == json_schema()


def test_schema_accepts_a_valid_request_and_rejects_a_bad_one() -> None:
    schema = published_schema()
    jsonschema.validate(request_payload(), schema)
    bad = request_payload()
    del bad["investigation_code"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_every_bad_field_is_named() -> None:
    payload = request_payload()
    payload["agency"] = {"id": "pd-1"}
    payload["investigator"]["email"] = "not-an-email"
    payload["footage_window"] = {"start": "2026-01-02T10:00:00+00:00", "end": "2026-01-01T10:00:00+00:00"}
    payload["unexpected"] = 1
    with pytest.raises(InvalidRequest) as caught:
        parse_request(payload)
    text = "\n".join(caught.value.problems)
    assert "agency.name" in text
    assert "investigator.email" in text
    assert "footage_window" in text and "end must be after start" in text
    assert "unexpected" in text


def test_naive_datetimes_are_refused() -> None:
    payload = request_payload(published_at="2026-01-01T10:00:00")
    with pytest.raises(InvalidRequest) as caught:
        parse_request(payload)
    assert any(p.startswith("published_at") for p in caught.value.problems)


def test_not_an_object_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="expected a JSON object"):
        parse_request(["a", "list"])


def test_point_area_is_refused_before_enqueueing() -> None:
    payload = request_payload(area={"type": "Point", "coordinates": [-105.2, 40.0]})
    with pytest.raises(InvalidRequest) as caught:
        validate_request(payload)
    assert any(p.startswith("area") for p in caught.value.problems)


def test_self_intersecting_area_is_refused() -> None:
    bowtie = [[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]
    with pytest.raises(InvalidArea):
        validate_request(request_payload(area={"type": "Polygon", "coordinates": [bowtie]}))
