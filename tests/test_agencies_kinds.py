"""Request kinds: the contract's branches, their limits, their audiences and a safety alert's own content."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema
import pytest

from dispatcher import fanout
from dispatcher.agencies.responses import parse_response, record_response
from dispatcher.config import Settings, set_settings
from dispatcher.contract import (
    CommunityRequest,
    SafetyAlert,
    VideoRequest,
    parse_request,
    published_schema,
    validate_request,
)
from dispatcher.db.types import Conn
from dispatcher.errors import InvalidRequest, InvalidResponse
from dispatcher.ledger import Channel
from dispatcher.pipeline import distribute
from tests.factories import add_resident, request_payload

INSIDE = (40.015, -105.273)


def video_payload(request_id: str = "v-1", hours: float = 6, **overrides: Any) -> dict[str, Any]:
    published = datetime.now(UTC) - timedelta(minutes=5)
    end = published - timedelta(hours=1)
    payload = request_payload(request_id, published=published, kind="video_request", case_number="CASE-77",
                              footage_window={"start": (end - timedelta(hours=hours)).isoformat(),
                                              "end": end.isoformat()})
    payload.update(overrides)
    return payload


def alert_payload(request_id: str = "a-1", **overrides: Any) -> dict[str, Any]:
    payload = request_payload(request_id, kind="safety_alert", incident_type="gas_leak",
                              details="Gas leak on 5th: avoid the area until crews clear it.")
    del payload["footage_window"], payload["investigation_code"]
    payload.update(overrides)
    return payload


def test_kind_absent_is_a_community_request_stored_as_before() -> None:
    published = datetime.now(UTC) - timedelta(minutes=5)
    request = parse_request(request_payload(published=published))
    assert type(request) is CommunityRequest and request.kind == "community_request"
    assert "kind" not in request.to_json_dict()
    explicit = parse_request(request_payload(published=published, kind="community_request"))
    assert explicit.fingerprint() == request.fingerprint()


def test_each_kind_parses_to_its_model_and_validates_against_the_schema() -> None:
    schema = published_schema()
    assert type(parse_request(video_payload())) is VideoRequest
    assert type(parse_request(alert_payload())) is SafetyAlert
    for payload in (request_payload(), video_payload(), alert_payload()):
        jsonschema.validate(payload, schema)
    for bad in ({k: v for k, v in video_payload().items() if k != "case_number"},
                {**alert_payload(), "footage_window": request_payload()["footage_window"]},
                {**request_payload(), "kind": "rumour"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


@pytest.mark.parametrize(("payload", "problem"), [
    ({k: v for k, v in video_payload().items() if k != "case_number"}, "case_number: Field required"),
    ({**alert_payload(), "footage_window": request_payload()["footage_window"]}, "footage_window: Extra inputs"),
    ({**request_payload(), "kind": "rumour"}, "kind must be one of community_request, video_request, safety_alert"),
    ({**request_payload(), "kind": 7}, "kind must be one of"),
])
def test_each_kind_names_its_bad_fields(payload: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        parse_request(payload)
    assert any(problem in p for p in raised.value.problems), raised.value.problems


def test_video_request_window_and_area_are_bounded_by_settings(settings: Settings) -> None:
    validate_request(video_payload(hours=12))
    with pytest.raises(InvalidRequest, match="spans 13 hours, more than the 12 hours"):
        validate_request(video_payload(hours=13))
    big = {"type": "Polygon", "coordinates": [[[-105.30, 40.00], [-105.25, 40.00], [-105.25, 40.03],
                                               [-105.30, 40.03], [-105.30, 40.00]]]}  # about 14 km²
    with pytest.raises(InvalidRequest, match="more than the maximum of 5 km²"):
        validate_request(video_payload(area=big))
    validate_request(request_payload(area=big))  # a Community Request keeps the general limit
    try:
        set_settings(settings.with_(video_max_window_hours=24, video_max_area_km2=20))
        validate_request(video_payload(hours=13, area=big))
    finally:
        set_settings(settings)


def _town(db: Conn) -> None:
    add_resident(db, 1, *INSIDE, email="cam@example.test", tokens=["t-1"], has_camera=True)
    add_resident(db, 2, *INSIDE, email="nocam@example.test", tokens=["t-2"])
    add_resident(db, 3, *INSIDE, email="off@example.test", tokens=["t-3"], has_camera=True,
                 community_requests=False)
    add_resident(db, 4, *INSIDE, email="optout@example.test", tokens=["t-4"], has_camera=True)
    add_resident(db, 5, *INSIDE, email="noalerts@example.test", tokens=["t-5"], has_camera=True)
    db.execute("UPDATE resident_settings SET community_requests = TRUE, video_requests = FALSE"
               " WHERE resident_id = 3")
    db.execute("INSERT INTO resident_settings (resident_id, safety_alerts) VALUES (5, FALSE)")


def _audience(db: Conn, request_id: str) -> list[int]:
    return [int(r[0]) for r in db.execute(
        "SELECT DISTINCT resident_id FROM deliveries WHERE request_id = %s ORDER BY 1", (request_id,))]


def test_each_kind_reaches_its_audience(db: Conn, settings: Settings) -> None:
    _town(db)
    record_response(db, parse_response("any", 4, "opt_out_all_future"))
    for payload in (request_payload("c-1"), video_payload("v-1"), alert_payload("a-1")):
        assert distribute(payload).state == "sending"
    assert _audience(db, "c-1") == [1, 2, 3, 5]     # not the opted-out resident
    assert _audience(db, "v-1") == [1, 5]           # cameras only, video requests on, not opted out
    assert _audience(db, "a-1") == [1, 2, 3, 4]     # safety alerts on; an opt-out of requests is not of alerts
    with pytest.raises(InvalidResponse, match="a safety alert takes no response"):
        record_response(db, parse_response("a-1", 1, "share"))


def test_safety_alert_goes_out_with_its_own_content(db: Conn, engine: Settings, sandbox: Any) -> None:
    _town(db)
    distribute(alert_payload("a-2"))
    for channel in Channel:
        fanout.drain("a-2", channel, budget_seconds=10)
    sandbox.flush()
    pushes = {r["token"]: r["message"] for r in sandbox.records("fcm")}
    assert sorted(pushes) == ["t-1", "t-2", "t-3", "t-4"]
    data = pushes["t-1"]["data"]
    assert data["type"] == "safety_alert" and data["action"] == "view_alert"
    assert data["deep_link"].endswith("/alerts/a-2")
    emails = sandbox.records("sendgrid")
    assert emails and all(r["subject"].startswith("Safety Alert from Springfield Police") for r in emails)


def test_settings_per_kind_follow_their_versions(db: Conn, settings: Settings) -> None:
    from dispatcher.preferences.actors import kind_settings_changed

    add_resident(db, 1, *INSIDE, email="k@example.test", tokens=["t-1"], has_camera=True)
    kind_settings_changed.fn(1, 5, safety_alerts=False, video_requests=False)
    kind_settings_changed.fn(1, 3, safety_alerts=True)          # older: ignored
    kind_settings_changed.fn(1, 6, video_requests="no")         # malformed: dropped, logged by id
    kind_settings_changed.fn(1, 7, announcements=False)
    row = db.execute("SELECT safety_alerts, video_requests, announcements, community_requests"
                     " FROM resident_settings WHERE resident_id = 1").fetchone()
    assert row == (False, False, False, True)
    distribute(alert_payload("a-3"))
    distribute(video_payload("v-3"))
    distribute(request_payload("c-3"))
    assert (_audience(db, "a-3"), _audience(db, "v-3"), _audience(db, "c-3")) == ([], [], [1])


def test_a_joining_agency_is_announced_once_by_push_to_residents_inside(
    db: Conn, engine: Settings, sandbox: Any
) -> None:
    from dispatcher.agencies.actors import agency_updated, announce_agency
    from tests.agency_helpers import ELSEWHERE, JURISDICTION, feature

    _town(db)
    add_resident(db, 6, 39.05, -103.95, email="far@example.test", tokens=["t-6"])  # inside ELSEWHERE
    db.execute("INSERT INTO resident_settings (resident_id, announcements) VALUES (2, FALSE)"
               " ON CONFLICT (resident_id) DO UPDATE SET announcements = FALSE")
    try:
        agency_updated.fn(feature("new-pd", JURISDICTION, name="New Town Police"))
        agency_updated.fn(feature("far-so", ELSEWHERE, name="Far Sheriff", kind="sheriff"))
        for agency_id in ("new-pd", "far-so", "new-pd"):  # what agency_updated enqueued, and a redelivery
            announce_agency.fn(agency_id)
        ids = sorted(str(r[0]) for r in db.execute(
            "SELECT id FROM community_requests WHERE payload->>'kind' = 'agency_announcement'"))
        assert len(ids) == 2 and all(i.startswith("agency-joined.") for i in ids)
        for request_id in ids:
            for channel in Channel:
                fanout.drain(request_id, channel, budget_seconds=10)
        sandbox.flush()
        pushes = {r["token"]: r["message"]["data"] for r in sandbox.records("fcm")}
        assert sorted(pushes) == ["t-1", "t-3", "t-4", "t-5", "t-6"]  # announcements off: resident 2
        assert pushes["t-1"]["type"] == "agency_announcement" and pushes["t-1"]["action"] == "view_agencies"
        assert sandbox.records("sendgrid") == []  # push only
        emails = db.execute("SELECT DISTINCT status, reason FROM deliveries WHERE channel = 'email'").fetchall()
        assert emails == [("skipped", "push_only")]
    finally:
        db.execute("DELETE FROM agencies WHERE id IN ('new-pd', 'far-so')")
