"""The job contract: valid requests pass, invalid ones are refused naming each bad field."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import jsonschema
import pytest

from dispatcher.config import get_settings, set_settings
from dispatcher.contract import (
    REQUEST_ID_MAX_LENGTH,
    REQUEST_ID_PATTERN,
    is_request_id,
    json_schema,
    parse_request,
    published_schema,
    validate_request,
)
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


@pytest.mark.parametrize(
    ("published", "named"),
    [
        (datetime(9999, 12, 31, 23, 59, tzinfo=UTC), "future"),
        (datetime(2099, 1, 1, tzinfo=UTC), "future"),
        (timedelta(minutes=6), "future"),
        (-timedelta(days=61), "window"),
        (datetime(1, 1, 2, tzinfo=UTC), "window"),
    ],
    ids=["9999", "2099", "6 minutes ahead", "61 days ago", "year 1"],
)
def test_publish_refuses_a_published_at_no_fresh_approval_can_have(
    published: datetime | timedelta, named: str
) -> None:
    # Offsets are taken from the clock when the test runs, not when it was collected.
    when = datetime.now(UTC) + published if isinstance(published, timedelta) else published
    with pytest.raises(InvalidRequest) as caught:
        validate_request(request_payload(published=when))
    problems = [p for p in caught.value.problems if p.startswith("published_at")]
    assert problems and named in problems[0], caught.value.problems


def test_the_allowed_clock_skew_is_a_setting() -> None:
    settings = get_settings()
    ahead = request_payload(published=datetime.now(UTC) + timedelta(minutes=4))
    assert validate_request(ahead).id == "req-1"  # within the default 5 minutes
    set_settings(settings.with_(max_clock_skew_seconds=60))
    try:
        with pytest.raises(InvalidRequest, match="more than 60 seconds"):
            validate_request(ahead)
    finally:
        set_settings(settings)


def test_the_request_id_format_is_defined_once() -> None:
    assert is_request_id("req-1") and is_request_id("A" * REQUEST_ID_MAX_LENGTH)
    for bad in ["", "A" * (REQUEST_ID_MAX_LENGTH + 1), "has space", "-dash", "a/b", "é", None, 7]:
        assert not is_request_id(bad), bad
    schema_id = published_schema()["$defs"]["CommunityRequest"]["properties"]["id"]
    assert schema_id["maxLength"] == REQUEST_ID_MAX_LENGTH and schema_id["pattern"] == REQUEST_ID_PATTERN


def test_an_unexpected_field_with_a_huge_name_is_named_briefly() -> None:
    payload = request_payload()
    payload["x" * 1_000_000] = 1
    with pytest.raises(InvalidRequest) as caught:
        parse_request(payload)
    assert len(str(caught.value)) < 500 and "Extra inputs are not permitted" in str(caught.value)


def test_the_published_schema_refuses_a_crs_member() -> None:
    area = {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]], "crs": {"type": "name"}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(request_payload(area=area), published_schema())
