"""The demo's three requests, one of each kind, and the oracle of whom each must reach.

The oracle is independent of the engine's SQL: shapely's ``covers`` on every resident of the town and
the settings the demo seeded, read from memory (see :mod:`dispatcher.preferences.eligibility` for the
rules it mirrors).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import shapely

from dispatcher.demo_town import TOWN_CENTER, Town

AGENCY = {"id": "bpd", "name": "Boulder Valley Police Department"}
INVESTIGATOR = {"name": "Det. Alex Rivera", "phone": "+1 303 555 0147", "email": "arivera@bvpd.example"}
#: Who each kind reaches, in words (the summary prints it beside the oracle's count).
AUDIENCES = {
    "community_request": "Community Requests on, not opted out of all future requests",
    "video_request": "camera owners with video requests on, not opted out of all future requests",
    "safety_alert": "everyone with safety alerts on",
}


def _polygon(offsets: list[tuple[float, float]]) -> list[list[float]]:
    """A ring of ``(dlat, dlng)`` offsets from the town's centre as GeoJSON ``[lng, lat]`` positions."""
    lat0, lng0 = TOWN_CENTER
    return [[round(lng0 + dx, 6), round(lat0 + dy, 6)] for dy, dx in offsets]


def _box(south: float, west: float, north: float, east: float) -> list[tuple[float, float]]:
    return [(south, west), (south, east), (north, east), (north, west), (south, west)]


def demo_area() -> dict[str, Any]:
    """A concave area over the east of the town, with a park (a hole) that is left out."""
    shell = [(-0.004, -0.020), (0.030, -0.012), (0.040, 0.020), (0.028, 0.045), (0.010, 0.030),
             (-0.006, 0.048), (-0.030, 0.030), (-0.022, 0.004), (-0.004, -0.020)]
    park = _box(0.004, 0.010, 0.010, 0.018)
    return {"type": "Feature", "properties": {"name": "East side"},
            "geometry": {"type": "Polygon", "coordinates": [_polygon(shell), _polygon(park)]}}


def neighbourhood_area() -> dict[str, Any]:
    """A small neighbourhood in the north-east (about 3 km², under a video request's limit)."""
    return {"type": "Polygon", "coordinates": [_polygon(_box(0.010, 0.015, 0.026, 0.035))]}


def west_side_area() -> dict[str, Any]:
    """The west of the town, where the safety alert is."""
    return {"type": "Polygon", "coordinates": [_polygon(_box(-0.035, -0.060, 0.030, -0.005))]}


def _stamp(now: datetime) -> str:
    return now.strftime("%Y%m%d%H%M%S")


def _published(now: datetime) -> dict[str, str]:
    return {"approved_at": (now - timedelta(minutes=10)).isoformat(),
            "published_at": (now - timedelta(minutes=5)).isoformat()}


def demo_request(now: datetime) -> dict[str, Any]:
    """A sample approved Community Request over :func:`demo_area` (no ``kind``: the default)."""
    return {
        "id": f"demo-{_stamp(now)}",
        "agency": AGENCY,
        "incident_type": "burglary",
        "details": "Residential burglary reported on the east side. We are asking for doorbell and "
                   "driveway camera footage showing people or vehicles between 9 pm and 2 am.",
        "footage_window": {"start": (now - timedelta(hours=30)).isoformat(),
                           "end": (now - timedelta(hours=25)).isoformat()},
        "investigator": INVESTIGATOR,
        "area": demo_area(),
        "investigation_code": "BVPD-2026-004211",
        **_published(now),
    }


def video_request(now: datetime) -> dict[str, Any]:
    """A video request of an active case: six hours of footage over :func:`neighbourhood_area`."""
    return {
        **demo_request(now),
        "kind": "video_request",
        "id": f"demo-video-{_stamp(now)}",
        "incident_type": "hit_and_run",
        "details": "A cyclist was hit by a car that drove off north. Camera footage of the street may "
                   "show the car.",
        "footage_window": {"start": (now - timedelta(hours=8)).isoformat(),
                           "end": (now - timedelta(hours=2)).isoformat()},
        "area": neighbourhood_area(),
        "investigation_code": "BVPD-2026-004377",
        "case_number": "BV-26-11873",
    }


def safety_alert(now: datetime) -> dict[str, Any]:
    """A safety alert over :func:`west_side_area`: information only, nothing to answer."""
    return {
        "kind": "safety_alert",
        "id": f"demo-alert-{_stamp(now)}",
        "agency": AGENCY,
        "incident_type": "gas_leak",
        "details": "Gas leak on the west side: avoid the area until crews have cleared it.",
        "investigator": INVESTIGATOR,
        "area": west_side_area(),
        **_published(now),
    }


def demo_requests(now: datetime) -> list[dict[str, Any]]:
    """One request of each kind, the Community Request first."""
    return [demo_request(now), video_request(now), safety_alert(now)]


def kind_of(payload: dict[str, Any]) -> str:
    return str(payload.get("kind", "community_request"))


@dataclass(frozen=True)
class Expected:
    """What the oracle says one request must reach."""

    in_area: int
    #: Residents in the area and in the kind's audience.
    audience: int
    #: Every live token of the audience with push on, and its resident.
    tokens: dict[str, int]
    #: Every address of the audience with email on.
    emails: set[str]


def audience_mask(town: Town, kind: str) -> np.ndarray:
    """Who takes requests of ``kind`` at all, wherever they live (the rules of :data:`AUDIENCES`)."""
    if kind == "video_request":
        return np.asarray(town.has_camera & town.video_on & ~town.opted_out)
    if kind == "safety_alert":
        return np.asarray(town.alerts_on)
    return np.asarray(town.community_on & ~town.opted_out)


def expected_recipients(town: Town, kind: str, area: dict[str, Any]) -> Expected:
    """The oracle: residents covered by the area (shapely) in the kind's audience, their tokens and emails."""
    geometry = shapely.geometry.shape(area.get("geometry", area))
    inside = shapely.covers(geometry, shapely.points(town.lng, town.lat))
    reached = inside & audience_mask(town, kind)
    tokens: dict[str, int] = {}
    emails: set[str] = set()
    for i in np.flatnonzero(reached).tolist():
        rid = int(town.ids[i])
        if town.push_on[i]:
            for token in town.tokens.get(rid, []):
                tokens[token] = rid
        if town.email_on[i] and town.has_email[i]:
            emails.add(f"resident{rid}@example.test")
    return Expected(int(inside.sum()), int(reached.sum()), tokens, emails)
