"""An API app bound to the test database, and its client: shared by the API tests and their hostile table."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from dispatcher.api.app import create_app
from dispatcher.config import Settings

#: The bearer token the tests' app is configured with.
TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def client(settings: Settings, db: Any) -> Iterator[TestClient]:
    """A client of the API over empty tables; server errors come back as responses."""
    app = create_app(settings.with_(api_token=TOKEN))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def assert_error(response: Any, status: int) -> dict[str, Any]:
    """The response is an error in the API's one shape, with ``status``; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"status", "code", "message", "details"}
    assert error["status"] == status and isinstance(error["message"], str) and error["message"]
    return error
