"""Hostile calls to `dispatcher api`, every route and parameter: each ends in the API's one JSON error
shape with the right status, never echoes the value sent (it may be a location), and leaves the
service answering the next good call. Also the `dispatcher api` command's hostile settings."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from dispatcher.cli import app as cli
from dispatcher.config import Settings, set_settings
from dispatcher.feed.cursor import MAX_CURSOR_LENGTH
from tests.api_client import AUTH, TOKEN, assert_error, client
from tests.factories import add_resident
from tests.feed_helpers import publish, square

__all__ = ["client"]  # the fixture, imported to be used here


def _b64(data: object) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


_GOOD_KEY = {"v": 1, "t": 1_700_000_000_000_000, "o": True, "p": 1_700_000_000_000_000, "i": "r-1"}
POINT = "/v1/requests?lat=40.005&lng=-105.295"
RESIDENT = "/v1/residents/1/requests"

#: (name, path with its raw query, extra headers, status, a value that must not come back)
HOSTILE_CALLS: list[tuple[str, str, dict[str, Any], int, str | None]] = [
    # resident_id
    ("resident id not a number", "/v1/residents/abc/requests", AUTH, 422, None),
    ("resident id negative", "/v1/residents/-7/requests", AUTH, 422, None),
    ("resident id zero", "/v1/residents/0/requests", AUTH, 422, None),
    ("resident id past BIGINT", "/v1/residents/9223372036854775808/requests", AUTH, 422, "9223372036854775808"),
    ("resident id of 5,000 digits", "/v1/residents/" + "9" * 5000 + "/requests", AUTH, 422, "9" * 50),
    ("resident id a float", "/v1/residents/1.5/requests", AUTH, 422, None),
    ("resident id with exponent", "/v1/residents/1e3/requests", AUTH, 422, None),
    ("resident id NUL", "/v1/residents/1%00/requests", AUTH, 422, None),
    ("resident id traversal", "/v1/residents/..%2F..%2Fmetrics/requests", AUTH, 404, None),
    ("unknown resident", "/v1/residents/424242/requests", AUTH, 404, "424242"),
    # request_id
    ("request id too long", "/v1/requests/" + "r" * 129, AUTH, 422, "r" * 50),
    ("request id with a space", "/v1/requests/req%201", AUTH, 422, None),
    ("request id starting with a dot", "/v1/requests/.hidden", AUTH, 422, None),
    ("request id NUL", "/v1/requests/req%00", AUTH, 422, None),
    ("request id not ASCII", "/v1/requests/r%C3%A9q", AUTH, 422, None),
    ("request id with SQL", "/v1/requests/x%27%3B%20DROP%20TABLE%20feed_cover%3B--", AUTH, 422, "DROP TABLE"),
    ("request id traversal", "/v1/requests/..%2F..%2Fmetrics", AUTH, 404, None),
    ("unknown request", "/v1/requests/req-424242", AUTH, 404, "req-424242"),
    ("request id of another case", "/v1/requests/GOOD", AUTH, 404, None),
    ("no token, known request", "/v1/requests/good", {}, 401, None),
    # lat / lng
    ("lat missing", "/v1/requests?lng=-105.295", AUTH, 422, None),
    ("lng missing", "/v1/requests?lat=40.005", AUTH, 422, None),
    ("lat above 90", "/v1/requests?lat=90.0000001&lng=-105.295", AUTH, 422, "90.0000001"),
    ("lat below -90", "/v1/requests?lat=-91&lng=-105.295", AUTH, 422, None),
    ("lng above 180", "/v1/requests?lat=40&lng=180.5", AUTH, 422, "180.5"),
    ("lng below -180", "/v1/requests?lat=40&lng=-180.0001", AUTH, 422, "-180.0001"),
    ("lat NaN", "/v1/requests?lat=NaN&lng=-105.295", AUTH, 422, None),
    ("lng infinite", "/v1/requests?lat=40&lng=-Infinity", AUTH, 422, None),
    ("lat overflows a float", "/v1/requests?lat=1e400&lng=0", AUTH, 422, None),
    ("lat hexadecimal", "/v1/requests?lat=0x10&lng=0", AUTH, 422, None),
    ("lat with a comma", "/v1/requests?lat=40,005&lng=-105.295", AUTH, 422, "40,005"),
    ("lat empty", "/v1/requests?lat=&lng=-105.295", AUTH, 422, None),
    ("lat of 60,000 digits", "/v1/requests?lat=" + "4" * 60_000 + "&lng=0", AUTH, 422, "4" * 50),
    ("lat and lng swapped beyond range", "/v1/requests?lat=-105.295&lng=40.005", AUTH, 422, "-105.295"),
    # limit
    ("limit zero", POINT + "&limit=0", AUTH, 422, None),
    ("limit above the maximum", POINT + "&limit=101", AUTH, 422, None),
    ("limit negative", POINT + "&limit=-1", AUTH, 422, None),
    ("limit not a number", POINT + "&limit=all", AUTH, 422, None),
    ("limit with exponent", POINT + "&limit=1e2", AUTH, 422, None),
    ("resident limit huge", RESIDENT + "?limit=99999999999999999999", AUTH, 422, None),
    # cursor
    ("cursor empty", POINT + "&cursor=", AUTH, 422, None),
    ("cursor too long", POINT + "&cursor=" + "a" * (MAX_CURSOR_LENGTH + 1), AUTH, 422, None),
    ("cursor not base64", POINT + "&cursor=%21%21%21%21", AUTH, 422, None),
    ("cursor base64 of bytes", POINT + "&cursor=" + _b64(b"\xff\xfe\x00garbage"), AUTH, 422, None),
    ("cursor JSON not an object", POINT + "&cursor=" + _b64([1, 2, 3]), AUTH, 422, None),
    ("cursor with a missing key", POINT + "&cursor=" + _b64({"v": 1, "t": 1, "o": True, "p": 1}), AUTH, 422, None),
    ("cursor with an extra key", POINT + "&cursor=" + _b64({**_GOOD_KEY, "x": 1}), AUTH, 422, None),
    ("cursor of another version", POINT + "&cursor=" + _b64({**_GOOD_KEY, "v": 2}), AUTH, 422, None),
    ("cursor time beyond datetime", POINT + "&cursor=" + _b64({**_GOOD_KEY, "t": 10**30}), AUTH, 422, None),
    ("cursor time negative", POINT + "&cursor=" + _b64({**_GOOD_KEY, "p": -1}), AUTH, 422, None),
    ("cursor time a string", POINT + "&cursor=" + _b64({**_GOOD_KEY, "t": "now"}), AUTH, 422, None),
    ("cursor open not a boolean", POINT + "&cursor=" + _b64({**_GOOD_KEY, "o": 1}), AUTH, 422, None),
    ("cursor id with SQL", POINT + "&cursor=" + _b64({**_GOOD_KEY, "i": "x'; DROP TABLE feed_cover;--"}),
     AUTH, 422, "DROP TABLE"),
    ("cursor id NUL", POINT + "&cursor=" + _b64({**_GOOD_KEY, "i": "r\u00001"}), AUTH, 422, None),
    ("cursor deeply nested", POINT + "&cursor=" + _b64(b"[" * 300 + b"]" * 300), AUTH, 422, None),
    ("resident cursor not base64", RESIDENT + "?cursor=%E2%98%83", AUTH, 422, None),
    # authorization
    ("no token", POINT, {}, 401, None),
    ("empty bearer", POINT, {"Authorization": "Bearer"}, 401, None),
    ("bearer and spaces", POINT, {"Authorization": "Bearer    "}, 401, None),
    ("token as basic", POINT, {"Authorization": f"Basic {TOKEN}"}, 401, TOKEN),
    ("token with a NUL", POINT, {"Authorization": f"Bearer {TOKEN}\u0000"}, 401, None),
    ("token not ASCII", POINT, {"Authorization": "Bearer t\u00e9st-token-0123456789".encode()}, 401, None),
    ("token a megabyte", POINT, {"Authorization": "Bearer " + "x" * 200_000}, 401, "x" * 50),
    ("token prefix", POINT, {"Authorization": f"Bearer {TOKEN[:8]}"}, 401, None),
    ("token twice", POINT, {"Authorization": f"Bearer {TOKEN} {TOKEN}"}, 401, None),
    ("no token, bad parameters", "/v1/requests?lat=NaN", {}, 401, None),
    ("no token, unknown resident", "/v1/residents/424242/requests", {}, 401, None),
    # routes and methods
    ("unknown route", "/v1/residents", AUTH, 404, None),
    ("unknown version", "/v2/requests?lat=1&lng=1", AUTH, 404, None),
    ("docs are not served", "/docs", AUTH, 404, None),
]

#: (name, method, path, status)
HOSTILE_METHODS: list[tuple[str, str, str, int]] = [
    ("POST to the point feed", "POST", POINT, 405),
    ("DELETE a resident feed", "DELETE", RESIDENT, 405),
    ("DELETE a published request", "DELETE", "/v1/requests/good", 405),
    ("PUT a published request", "PUT", "/v1/requests/good", 405),
    ("PUT to readiness", "PUT", "/readyz", 405),
    ("POST to metrics", "POST", "/metrics", 405),
]


@pytest.mark.parametrize(("name", "path", "headers", "status", "secret"), HOSTILE_CALLS,
                         ids=[row[0] for row in HOSTILE_CALLS])
def test_hostile_calls_end_in_one_json_error(client: TestClient, db: Any, name: str, path: str,
                                             headers: dict[str, Any], status: int, secret: str | None) -> None:
    publish(db, "good", square(-105.30, 40.00, 0.01))
    add_resident(db, 1, 40.005, -105.295)
    response = client.get(path, headers=headers)
    assert_error(response, status)
    if secret is not None:
        assert secret not in response.text
    # The service still answers the next good call.
    good = client.get(POINT, headers=AUTH)
    assert good.status_code == 200 and [card["id"] for card in good.json()["requests"]] == ["good"]
    assert client.get("/v1/requests/good", headers=AUTH).json()["area"] == square(-105.30, 40.00, 0.01)
    assert db.execute("SELECT count(*) FROM feed_cover").fetchone() != (0,)


@pytest.mark.parametrize(("name", "method", "path", "status"), HOSTILE_METHODS,
                         ids=[row[0] for row in HOSTILE_METHODS])
def test_wrong_methods_end_in_one_json_error(client: TestClient, name: str, method: str, path: str,
                                             status: int) -> None:
    assert_error(client.request(method, path, headers=AUTH), status)


#: (name, settings changes, extra arguments, what the error line must name)
HOSTILE_STARTS: list[tuple[str, dict[str, Any], list[str], str]] = [
    ("no token", {"api_token": None, "api_insecure_dev": False}, [], "API_TOKEN"),
    ("short token", {"api_token": "abc"}, [], "API_TOKEN"),
    ("token with spaces", {"api_token": "a token with spaces inside"}, [], "API_TOKEN"),
    ("token with a newline", {"api_token": "0123456789abcdef\n0123456789"}, [], "API_TOKEN"),
]


@pytest.mark.parametrize(("name", "changes", "arguments", "named"), HOSTILE_STARTS,
                         ids=[row[0] for row in HOSTILE_STARTS])
def test_the_api_command_refuses_to_start_insecurely(settings: Settings, name: str, changes: dict[str, Any],
                                                    arguments: list[str], named: str) -> None:
    set_settings(settings.with_(**changes))
    try:
        result = CliRunner().invoke(cli, ["api", "--port", "1", *arguments])
    finally:
        set_settings(settings)
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0], result.stderr
    assert "abc" not in lines[0] and "spaces inside" not in lines[0]


def test_the_api_command_refuses_a_bad_openapi_path(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["api", "--write-openapi", str(tmp_path)])
    assert result.exit_code == 2 and result.stderr.startswith("error: "), result.output
    result = CliRunner().invoke(cli, ["api", "--workers", "0"])
    assert result.exit_code == 2
