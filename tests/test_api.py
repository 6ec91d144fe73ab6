"""`dispatcher api`: the feed over HTTP, its token, its one error shape, health, readiness and metrics."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from dispatcher import lifecycle
from dispatcher.api.app import create_app, openapi_text
from dispatcher.config import Settings, set_settings
from dispatcher.db.pool import close_pool
from dispatcher.errors import ConfigurationError
from dispatcher.feed.cards import FeedResponse, RequestDetail
from tests.api_client import AUTH, TOKEN, assert_error, client
from tests.factories import add_resident
from tests.feed_helpers import publish, square

__all__ = ["client"]  # the fixture, imported to be used here

ROOT = Path(__file__).resolve().parent.parent
#: What a feed item shows of a request, and nothing else (the area is one call away).
CARD_FIELDS = {"kind", "id", "agency", "incident_type", "details", "footage_window", "investigator", "bbox",
               "published_at", "respond_until", "open"}


def test_point_feed_answers_the_published_request(client: TestClient, db: Any) -> None:
    publish(db, "req-1", square(-105.30, 40.00, 0.01))
    response = client.get("/v1/requests", params={"lat": 40.005, "lng": -105.295}, headers=AUTH)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"requests", "next_cursor"} and body["next_cursor"] is None
    FeedResponse.model_validate_json(response.content)  # the documented shape, exactly
    [card] = body["requests"]
    assert set(card) == CARD_FIELDS
    assert card["id"] == "req-1" and card["open"] is True
    assert card["agency"] == {"id": "pd-1", "name": "Springfield Police"}
    assert card["investigator"]["email"] == "jpark@pd.example"
    assert card["bbox"] == pytest.approx([-105.30, 40.00, -105.29, 40.01])  # the box, not the area
    assert "coordinates" not in response.text
    assert "SPD-2026-0042" not in response.text  # the investigation code is the agency's, not the residents'
    outside = client.get("/v1/requests", params={"lat": 41.0, "lng": -105.295}, headers=AUTH)
    assert outside.json() == {"requests": [], "next_cursor": None}


def test_one_request_answers_its_area_as_published(client: TestClient, db: Any) -> None:
    area = {"type": "Feature", "properties": {"name": "Elm Street"}, "geometry": square(-105.30, 40.00, 0.01)}
    publish(db, "req-1", area)
    [card] = client.get("/v1/requests", params={"lat": 40.005, "lng": -105.295}, headers=AUTH).json()["requests"]
    response = client.get("/v1/requests/req-1", headers=AUTH)
    assert response.status_code == 200, response.text
    RequestDetail.model_validate_json(response.content)  # the documented shape, exactly
    body = response.json()
    assert body == {**card, "area": area}  # the feed item, plus the area exactly as the agency sent it
    assert "SPD-2026-0042" not in response.text


def test_an_unknown_or_rejected_request_is_a_json_404(client: TestClient, db: Any) -> None:
    assert assert_error(client.get("/v1/requests/nothing-here", headers=AUTH), 404)["code"] == "not_found"
    publish(db, "gone", square(-105.30, 40.00, 0.01))
    assert client.get("/v1/requests/gone", headers=AUTH).status_code == 200
    lifecycle.reject(db, "gone", "moderation")
    assert_error(client.get("/v1/requests/gone", headers=AUTH), 404)
    assert client.get("/v1/requests", params={"lat": 40.005, "lng": -105.295}, headers=AUTH).json()["requests"] == []


def test_resident_feed_pages_with_the_cursor(client: TestClient, db: Any) -> None:
    now = datetime.now(UTC)
    for i in range(5):
        publish(db, f"r-{i}", square(-105.30, 40.00, 0.01), published=now - timedelta(days=i * 20))
    add_resident(db, 11, 40.005, -105.295, email="someone@example.org")
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        response = client.get("/v1/residents/11/requests", params=params, headers=AUTH)
        assert response.status_code == 200, response.text
        body = response.json()
        seen.extend(card["id"] for card in body["requests"])
        if body["next_cursor"] is None:
            break
        params["cursor"] = body["next_cursor"]
    assert seen == ["r-0", "r-1", "r-2", "r-3", "r-4"]
    assert "someone@example.org" not in response.text


def test_unknown_resident_is_a_json_404(client: TestClient) -> None:
    error = assert_error(client.get("/v1/residents/999/requests", headers=AUTH), 404)
    assert error["code"] == "not_found"
    assert assert_error(client.get("/v2/nothing", headers=AUTH), 404)["code"] == "not_found"


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": TOKEN}, {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": f"Bearer {TOKEN[:-1]}"},
])
def test_feed_routes_need_the_token(client: TestClient, headers: dict[str, str]) -> None:
    for path in ("/v1/requests?lat=40&lng=-105", "/v1/residents/1/requests", "/v1/requests?lat=900",
                 "/v1/requests/req-1"):
        response = client.get(path, headers=headers)
        error = assert_error(response, 401)
        assert error["code"] == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"


def test_validation_errors_name_the_parameter_not_the_value(client: TestClient) -> None:
    response = client.get("/v1/requests", params={"lat": "91.123456", "lng": "-105.987654"}, headers=AUTH)
    error = assert_error(response, 422)
    assert [detail["field"] for detail in error["details"]] == ["query.lat"]
    assert "91.123456" not in response.text
    error = assert_error(client.get("/v1/requests", headers=AUTH), 422)
    assert sorted(detail["field"] for detail in error["details"]) == ["query.lat", "query.lng"]


def test_an_unexpected_failure_is_a_json_500(settings: Settings) -> None:
    app = create_app(settings.with_(api_token=TOKEN))

    @app.get("/v1/boom")
    def boom() -> None:
        raise RuntimeError("secret detail 40.005,-105.295")

    with TestClient(app, raise_server_exceptions=False) as test_client:
        response = test_client.get("/v1/boom", headers=AUTH)
    error = assert_error(response, 500)
    assert error["code"] == "internal_error" and "secret" not in response.text


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}


def test_not_ready_without_postgresql(settings: Settings) -> None:
    close_pool()
    set_settings(settings.with_(database_url="postgresql://root@127.0.0.1:1/none?connect_timeout=1"))
    try:
        app = create_app(settings.with_(api_token=TOKEN))
        with TestClient(app, raise_server_exceptions=False) as test_client:
            error = assert_error(test_client.get("/readyz"), 503)
            assert test_client.get("/healthz").status_code == 200
    finally:
        close_pool()
        set_settings(settings)
    assert "1/none" not in error["message"]


def test_metrics_count_and_time_by_route_template(client: TestClient, db: Any) -> None:
    add_resident(db, 12345, 40.005, -105.295)
    client.get("/v1/residents/12345/requests", headers=AUTH)
    client.get("/v1/requests", params={"lat": 40.005, "lng": -105.295}, headers=AUTH)
    client.get("/v1/requests", params={"lat": 40.005, "lng": -105.295})
    client.get("/nowhere/6789")
    client.request("BREW", "/v1/requests")
    text = client.get("/metrics").text
    assert ('dispatcher_api_requests_total{method="GET",route="/v1/residents/{resident_id}/requests",'
            'status="200"} 1.0') in text
    assert 'dispatcher_api_requests_total{method="GET",route="/v1/requests",status="200"} 1.0' in text
    assert 'dispatcher_api_requests_total{method="GET",route="/v1/requests",status="401"} 1.0' in text
    assert 'route="unmatched",status="404"' in text and 'method="other"' in text
    assert "dispatcher_api_request_seconds_bucket" in text
    # Ids, coordinates and methods never become labels (the values are numbers: a timestamp or a duration
    # may spell "6789" by chance, so the labels are what is searched).
    labels = " ".join(line[line.index("{"):line.rindex("}") + 1] for line in text.splitlines()
                      if not line.startswith("#") and "{" in line)
    assert "resident_id" in labels
    for private in ("12345", "6789", "40.005", "BREW"):
        assert private not in labels


def test_refuses_to_start_without_a_token(settings: Settings) -> None:
    with pytest.raises(ConfigurationError, match="API_TOKEN"):
        create_app(settings.with_(api_token=None, api_insecure_dev=False))
    with pytest.raises(ConfigurationError, match="at least 16"):
        create_app(settings.with_(api_token="short"))
    open_app = create_app(settings.with_(api_token=None, api_insecure_dev=True))
    with TestClient(open_app) as test_client:
        assert test_client.get("/v1/residents/1/requests").status_code == 404  # no token asked: dev mode


def test_openapi_document_is_in_sync() -> None:
    kept = (ROOT / "docs" / "openapi.json").read_text(encoding="utf-8")
    assert kept == openapi_text(), "regenerate it: dispatcher api --write-openapi docs/openapi.json"
    document = json.loads(kept)
    assert set(document["paths"]) >= {"/v1/requests", "/v1/requests/{request_id}",
                                      "/v1/residents/{resident_id}/requests", "/healthz", "/readyz", "/metrics"}
    feed_item = document["components"]["schemas"]["FeedRequest"]["properties"]
    assert "area" not in feed_item and "bbox" in feed_item
    assert document["paths"]["/v1/requests"]["get"]["security"] == [{"HTTPBearer": []}]


@pytest.mark.parametrize(("lat", "lng"), [(90, 180), (-90, -180), (0, 0), (-16.79, 180), (-16.79, -180)])
def test_the_edges_of_the_map_are_valid_points(client: TestClient, lat: float, lng: float) -> None:
    response = client.get("/v1/requests", params={"lat": lat, "lng": lng}, headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.json() == {"requests": [], "next_cursor": None}


def test_the_api_serves_the_relays_webhooks_outside_its_token(settings: Settings) -> None:
    """Twilio cannot present the API's bearer token: its webhooks must answer for themselves (signature)."""
    api = TestClient(create_app(settings.with_(api_token="t" * 32)))
    unsigned = api.post("/relay/twilio/sms", data={"From": "+15550001111", "To": "+15550002222", "Body": "hi"})
    # Refused for its missing Twilio signature, not for a missing bearer token.
    assert unsigned.status_code == 403, unsigned.text
    assert api.get("/v1/requests", params={"lat": 0, "lng": 0}).status_code == 401
