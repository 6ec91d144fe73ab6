"""The feed lookup: exactly the requests whose area covers a point (boundary included), in order, paged."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import h3.api.basic_int as h3
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatcher import lifecycle
from dispatcher.contract import parse_request
from dispatcher.errors import UnknownResident
from dispatcher.feed.cards import FeedRequest, area_bbox
from dispatcher.feed.cursor import PageKey, decode_cursor, encode_cursor
from dispatcher.feed.errors import InvalidCursor, InvalidLocation
from dispatcher.feed.geometry import PreparedAreas
from dispatcher.feed.index import FEED_BAND_RESOLUTION, index_missing
from dispatcher.feed.lookup import (
    BAND_SLACK,
    point_cell,
    prepared_areas,
    probe_cells,
    requests_at_point,
    requests_for_resident,
    warm_prepared_areas,
)
from dispatcher.lifecycle import State
from dispatcher.preferences.updates import upsert_resident
from dispatcher.targeting.area import Area
from tests.factories import add_resident, request_payload
from tests.feed_helpers import covering, feed_ids, publish, square

Conn = Any

#: Areas of the shapes targeting meets: a square, a district with a hole, two towns, a thin corridor,
#: a diagonal sliver, and a polygon split at the antimeridian.
SHAPES: dict[str, dict[str, Any]] = {
    "square": square(-105.28, 40.01, 0.013),
    "holed": {"type": "Polygon", "coordinates": [
        [[-105.30, 40.00], [-105.25, 40.00], [-105.25, 40.03], [-105.30, 40.03], [-105.30, 40.00]],
        [[-105.285, 40.01], [-105.265, 40.01], [-105.265, 40.02], [-105.285, 40.02], [-105.285, 40.01]]]},
    "towns": {"type": "MultiPolygon", "coordinates": [
        [[[-105.27, 40.015], [-105.26, 40.015], [-105.26, 40.025], [-105.27, 40.025], [-105.27, 40.015]]],
        [[[-105.24, 40.00], [-105.23, 40.00], [-105.235, 40.01], [-105.24, 40.00]]]]},
    "corridor": {"type": "Polygon", "coordinates": [
        [[-105.31, 40.0149], [-105.22, 40.0149], [-105.22, 40.0151], [-105.31, 40.0151], [-105.31, 40.0149]]]},
    "sliver": {"type": "Polygon", "coordinates": [
        [[-105.29, 40.001], [-105.231, 40.029], [-105.2312, 40.0291], [-105.29, 40.001]]]},
    "antimeridian": {"type": "MultiPolygon", "coordinates": [
        [[[179.98, -16.80], [180.0, -16.80], [180.0, -16.78], [179.98, -16.78], [179.98, -16.80]]],
        [[[-180.0, -16.80], [-179.98, -16.80], [-179.98, -16.78], [-180.0, -16.78], [-180.0, -16.80]]]]},
}


@pytest.fixture
def areas(db: Conn) -> dict[str, Area]:
    """Every shape published as its own request."""
    prepared_areas().clear()
    return {name: publish(db, name, shape) for name, shape in SHAPES.items()}


def _boundary_points(area: Area) -> list[tuple[float, float]]:
    """(lat, lng) of every vertex of the area: on the boundary, so covered."""
    coords = shapely.get_coordinates(area.boundary)
    return [(float(lat), float(lng)) for lng, lat in coords]


def _check(db: Conn, areas: dict[str, Area], lat: float, lng: float) -> None:
    assert set(feed_ids(db, lat, lng)) == covering(areas, lat, lng), (lat, lng)


def test_every_vertex_is_covered(db: Conn, areas: dict[str, Area]) -> None:
    for name, area in areas.items():
        for lat, lng in _boundary_points(area):
            assert name in feed_ids(db, lat, lng)
            _check(db, areas, lat, lng)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_lookup_equals_shapely_covers(db: Conn, areas: dict[str, Area], data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(areas)))
    min_lng, min_lat, max_lng, max_lat = areas[name].bounds
    margin = data.draw(st.sampled_from([0.0, 1e-9, 1e-6, 0.002]))
    kind = data.draw(st.sampled_from(["box", "edge"]))
    if kind == "box":
        lng = data.draw(st.floats(max(min_lng - margin, -180), min(max_lng + margin, 180)))
        lat = data.draw(st.floats(min_lat - margin, max_lat + margin))
    else:  # on an edge, or as near to it as floats allow
        coords = shapely.get_coordinates(areas[name].boundary)
        i = data.draw(st.integers(0, len(coords) - 2))
        t = data.draw(st.floats(0, 1))
        (x0, y0), (x1, y1) = coords[i], coords[i + 1]
        lng, lat = x0 + t * (x1 - x0), y0 + t * (y1 - y0)
    _check(db, areas, float(lat), float(lng))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    centre=st.tuples(st.floats(-60, 60), st.floats(-170, 170)),
    radii=st.lists(st.floats(0.001, 0.05), min_size=3, max_size=12),
    probes=st.lists(st.tuples(st.floats(-1.2, 1.2), st.floats(-1.2, 1.2)), min_size=5, max_size=20),
)
def test_random_star_polygons(db: Conn, centre: tuple[float, float], radii: list[float],
                              probes: list[tuple[float, float]]) -> None:
    import math

    db.execute("TRUNCATE community_requests CASCADE")
    prepared_areas().clear()  # the id is reused across examples; in production an id's area never changes
    lat0, lng0 = centre
    ring = [[lng0 + r * math.cos(2 * math.pi * k / len(radii)), lat0 + r * math.sin(2 * math.pi * k / len(radii))]
            for k, r in enumerate(radii)]
    area = publish(db, "star", {"type": "Polygon", "coordinates": [[*ring, ring[0]]]})
    scale = max(radii)
    points = [(lat0 + dy * scale, lng0 + dx * scale) for dx, dy in probes]
    points += [(lat, lng) for lng, lat in ring]
    for lat, lng in points:
        _check(db, {"star": area}, lat, lng)


def test_open_first_then_closed_newest_first_and_pages(db: Conn) -> None:
    now = datetime.now(UTC)
    ages = {"open-old": 50, "open-new": 1, "open-mid": 20, "closed-new": 61, "closed-old": 200, "closed-mid": 90}
    for request_id, days in ages.items():
        publish(db, request_id, square(-105.30, 40.00, 0.05), published=now - timedelta(days=days))
    publish(db, "elsewhere", square(-104.0, 41.0, 0.01))
    expected = ["open-new", "open-mid", "open-old", "closed-new", "closed-mid", "closed-old"]
    page = requests_at_point(db, 40.02, -105.27, limit=100)
    assert [item.request_id for item in page.items] == expected
    assert [item.open for item in page.items] == [True] * 3 + [False] * 3
    assert page.next_cursor is None
    for limit in (1, 2, 4, 5):
        assert feed_ids(db, 40.02, -105.27, limit=limit) == expected


def test_a_walk_keeps_the_first_pages_clock(db: Conn) -> None:
    now = datetime.now(UTC)
    for request_id, days in {"a": 59, "b": 30, "c": 70}.items():
        publish(db, request_id, square(-105.30, 40.00, 0.05), published=now - timedelta(days=days))
    first = requests_at_point(db, 40.02, -105.27, limit=1, now=now)
    assert [item.request_id for item in first.items] == ["b"]
    # "a" closes before the next page is asked for: the walk still lists it once, where it sorted.
    later = now + timedelta(days=2)
    rest: list[str] = []
    cursor = first.next_cursor
    while cursor is not None:
        page = requests_at_point(db, 40.02, -105.27, limit=1, cursor=cursor, now=later)
        rest.extend(item.request_id for item in page.items)
        assert all(not item.open for item in page.items)  # what a resident can do now
        cursor = page.next_cursor
    assert rest == ["a", "c"]


def test_equal_publication_times_are_ordered_by_id(db: Conn) -> None:
    published = datetime.now(UTC) - timedelta(hours=1)
    for request_id in ("r-b", "r-a", "r-c"):
        publish(db, request_id, square(-105.30, 40.00, 0.05), published=published)
    assert feed_ids(db, 40.02, -105.27, limit=1) == ["r-c", "r-b", "r-a"]


def test_a_resident_who_moves_sees_the_new_location_at_once(db: Conn) -> None:
    publish(db, "west", square(-105.30, 40.00, 0.01))
    publish(db, "east", square(-105.20, 40.00, 0.01))
    upsert_resident(db, 7, version=1, lat=40.005, lng=-105.295, email=None)
    assert [item.request_id for item in requests_for_resident(db, 7).items] == ["west"]
    upsert_resident(db, 7, version=2, lat=40.005, lng=-105.195, email=None)
    assert [item.request_id for item in requests_for_resident(db, 7).items] == ["east"]
    upsert_resident(db, 7, version=3, lat=45.0, lng=-100.0, email=None)
    assert requests_for_resident(db, 7).items == []


def test_a_resident_on_the_boundary_is_covered(db: Conn) -> None:
    publish(db, "sq", square(-105.30, 40.00, 0.01))
    add_resident(db, 1, 40.00, -105.295)  # on the south edge
    add_resident(db, 2, 39.9999999, -105.295)  # just south of it
    assert [item.request_id for item in requests_for_resident(db, 1).items] == ["sq"]
    assert requests_for_resident(db, 2).items == []


def test_unknown_resident(db: Conn) -> None:
    with pytest.raises(UnknownResident):
        requests_for_resident(db, 404)


def test_a_new_request_is_on_the_feed_once_accepted_and_a_rejected_one_leaves_it(db: Conn) -> None:
    assert feed_ids(db, 40.005, -105.295) == []
    publish(db, "new", square(-105.30, 40.00, 0.01))
    assert feed_ids(db, 40.005, -105.295) == ["new"]
    lifecycle.reject(db, "new", "test")
    assert feed_ids(db, 40.005, -105.295) == []
    assert db.execute("SELECT count(*) FROM feed_cover").fetchone() == (0,)  # off the index, not filtered


def test_a_refused_area_is_not_indexed(db: Conn) -> None:
    bowtie = {"type": "Polygon", "coordinates": [[[-105.3, 40.0], [-105.2, 40.1], [-105.2, 40.0],
                                                  [-105.3, 40.1], [-105.3, 40.0]]]}
    stored = lifecycle.accept(db, parse_request(request_payload("bowtie", area=bowtie)))
    assert stored.state is State.ACCEPTED  # targeting rejects it next
    assert db.execute("SELECT count(*) FROM feed_requests").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM community_requests").fetchone() == (1,)


def test_index_missing_indexes_requests_stored_before_the_feed(db: Conn) -> None:
    publish(db, "old", square(-105.30, 40.00, 0.01))
    db.execute("DELETE FROM feed_requests")
    assert feed_ids(db, 40.005, -105.295) == []
    assert index_missing(db) == 1
    assert index_missing(db) == 0
    assert feed_ids(db, 40.005, -105.295) == ["old"]


def test_bad_locations_and_cursors_are_refused(db: Conn) -> None:
    for lat, lng in ((91.0, 0.0), (0.0, 180.5), (float("nan"), 0.0), (0.0, float("inf"))):
        with pytest.raises(InvalidLocation):
            requests_at_point(db, lat, lng)
    for cursor in ("", "x", "eyJ2IjoxfQ", "!!!!", "a" * 600, encode_cursor(_key()) + "x"):
        with pytest.raises(InvalidCursor):
            requests_at_point(db, 40.0, -105.0, cursor=cursor)


def _key(request_id: str = "r-1") -> PageKey:
    moment = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    return PageKey(as_of=moment, open=True, published_at=moment - timedelta(days=1), request_id=request_id)


def test_cursor_round_trip() -> None:
    assert decode_cursor(encode_cursor(_key())) == _key()


def test_prepared_areas_stay_within_their_vertex_budget() -> None:
    cache = PreparedAreas(max_vertices=12)
    wkb = {f"r{i}": shapely.to_wkb(shapely.box(i, 0, i + 1, 1)) for i in range(5)}  # 5 vertices each
    loads: list[str] = []

    def load(request_id: str) -> bytes:
        loads.append(request_id)
        return wkb[request_id]

    for request_id in ("r0", "r1", "r0", "r2", "r0", "r1"):
        assert cache.get(request_id, load).equals(shapely.from_wkb(wkb[request_id]))
        assert cache.vertices <= 12
    assert loads == ["r0", "r1", "r2", "r1"]  # r0 kept (recently used), r1 evicted by r2
    tiny = PreparedAreas(max_vertices=3)
    assert tiny.get("r0", load).equals(shapely.from_wkb(wkb["r0"]))  # larger than the budget: served, not kept
    assert len(tiny) == 0


def test_a_resident_who_moves_in_after_targeting_sees_the_request_but_is_not_notified(db: Conn) -> None:
    from dispatcher import pipeline

    add_resident(db, 1, 40.005, -105.295, email="inside@example.org", tokens=["tok-inside"])
    add_resident(db, 2, 41.0, -105.295, email="later@example.org", tokens=["tok-later"])
    publish(db, "req", square(-105.30, 40.00, 0.01))
    assert pipeline.target("req").state == State.SENDING.value
    upsert_resident(db, 2, version=1, lat=40.006, lng=-105.294, email="later@example.org")
    assert [item.request_id for item in requests_for_resident(db, 2).items] == ["req"]
    rows = db.execute("SELECT resident_id, count(*) FROM deliveries GROUP BY resident_id").fetchall()
    assert rows == [(1, 2)]  # push and email for the resident inside at targeting; none for the newcomer


@pytest.mark.parametrize(("lat", "lng"), [(40.005, -105.295), (-16.79, 179.99), (89.9, 0.0), (-89.9, -179.9),
                                          (0.0, 0.0), (51.5, -0.12)])
def test_the_databases_probe_cells_are_h3s_ancestors(db: Conn, lat: float, lng: float) -> None:
    cell = h3.latlng_to_cell(lat, lng, 15)
    row = db.execute("SELECT feed_probe_cells(%s, %s)", (cell, FEED_BAND_RESOLUTION)).fetchone()
    assert row == (probe_cells(cell),)


def test_stored_cards_are_the_documented_feed_item(db: Conn, areas: dict[str, Area]) -> None:
    for request_id, card in db.execute("SELECT request_id, card FROM feed_requests").fetchall():
        item = FeedRequest.model_validate({**json.loads(card), "respond_until": datetime.now(UTC), "open": True})
        assert item.id == request_id and "investigation_code" not in card and "coordinates" not in card


def test_the_bbox_of_an_area(areas: dict[str, Area]) -> None:
    assert area_bbox(areas["square"]) == pytest.approx([-105.28, 40.01, -105.267, 40.023])
    assert area_bbox(areas["towns"]) == pytest.approx([-105.27, 40.0, -105.23, 40.025])
    # Split at the antimeridian: west of it is 179.98, east of it -179.98 (RFC 7946 §5.2).
    assert area_bbox(areas["antimeridian"]) == pytest.approx([179.98, -16.80, -179.98, -16.78])


def test_warming_prepares_the_published_areas_within_the_budget(db: Conn, areas: dict[str, Area]) -> None:
    prepared_areas().clear()
    assert warm_prepared_areas(db) == len(areas)
    assert warm_prepared_areas(db) == 0  # already held
    assert len(prepared_areas()) == len(areas)
    cache = PreparedAreas(max_vertices=12)
    wkb = [(f"r{i}", shapely.to_wkb(shapely.box(i, 0, i + 1, 1))) for i in range(4)]  # 5 vertices each
    assert cache.warm(wkb) == 2 and cache.vertices == 10  # the most wanted first, none evicted
    cache.get("r2", dict(wkb).__getitem__)
    assert len(cache) == 2 and cache.vertices == 10  # r1, warmed last, gave way to r2


def test_a_page_reads_past_a_batch_of_band_candidates_the_exact_test_drops(db: Conn) -> None:
    now = datetime.now(UTC)
    publish(db, "covering", square(-105.30, 40.00, 0.01), published=now - timedelta(days=3))
    beside = 2 * (1 + 1 + BAND_SLACK)  # two batches of a one-request page
    for i in range(beside):  # newer, their west edge a few metres east of the point: in the band, not covering
        publish(db, f"beside-{i:02d}", square(-105.2949 + i * 1e-6, 40.00, 0.01),
                published=now - timedelta(hours=i + 1))
    probes = probe_cells(point_cell(40.005, -105.295))
    assert db.execute("SELECT count(*) FROM feed_cover WHERE cell = ANY(%s) AND band AND request_id LIKE 'beside-%%'",
                      (probes,)).fetchone() == (beside,)
    assert feed_ids(db, 40.005, -105.295, limit=1) == ["covering"]
    assert [item.request_id for item in requests_at_point(db, 40.005, -105.295, limit=1).items] == ["covering"]
