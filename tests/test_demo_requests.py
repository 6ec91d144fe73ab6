"""The demo's requests are valid requests of their kinds, and its oracle applies each kind's audience."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from dispatcher.contract import CommunityRequest, SafetyAlert, VideoRequest, validate_request
from dispatcher.demo_requests import demo_requests, expected_recipients, neighbourhood_area
from dispatcher.demo_town import TOWN_CENTER, Town


@pytest.mark.usefixtures("settings")
def test_the_demo_publishes_one_valid_request_of_each_kind() -> None:
    requests = [validate_request(payload) for payload in demo_requests(datetime.now(UTC))]
    assert [type(request) for request in requests] == [CommunityRequest, VideoRequest, SafetyAlert]
    assert len({request.id for request in requests}) == 3


def _town_in_the_neighbourhood() -> Town:
    """Six residents inside the video request's area, one outside; every combination that matters."""
    lng, lat = neighbourhood_area()["coordinates"][0][0]  # its south-west corner
    inside_lat, inside_lng = lat + 0.005, lng + 0.005
    n = 7
    flags = {  # resident:      1      2      3      4      5      6      7 (outside)
        "has_camera": [True, False, True, True, True, False, True],
        "video_on": [True, True, False, True, True, True, True],
        "alerts_on": [True, True, True, False, True, True, True],
        "community_on": [True, True, True, True, False, True, True],
        "opted_out": [False, False, False, False, False, True, False],
    }
    return Town(
        ids=np.arange(1, n + 1, dtype=np.int64),
        lat=np.array([inside_lat] * 6 + [TOWN_CENTER[0] - 0.03]),
        lng=np.array([inside_lng] * 6 + [TOWN_CENTER[1] - 0.05]),
        push_on=np.ones(n, bool), email_on=np.ones(n, bool), has_email=np.ones(n, bool),
        tokens={rid: [f"t-{rid}"] for rid in range(1, n + 1)},
        **{name: np.array(values) for name, values in flags.items()},
    )


@pytest.mark.parametrize(("kind", "reached"), [
    ("video_request", {1, 4, 5}),         # cameras, video requests on, not opted out (5: Community off)
    ("safety_alert", {1, 2, 3, 5, 6}),    # safety alerts on, opt-outs of requests included
    ("community_request", {1, 2, 3, 4}),  # Community Requests on, not opted out
])
def test_the_oracle_applies_each_kinds_audience(kind: str, reached: set[int]) -> None:
    expected = expected_recipients(_town_in_the_neighbourhood(), kind, neighbourhood_area())
    assert expected.in_area == 6
    assert set(expected.tokens.values()) == reached
    assert expected.emails == {f"resident{rid}@example.test" for rid in reached}
