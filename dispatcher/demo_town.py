"""The demo's synthetic town: residents with settings, cameras and devices, kept in memory as well so
the demo's result can be checked independently of the SQL that targeted it."""

from __future__ import annotations

from dataclasses import dataclass

import h3
import numpy as np

from dispatcher.config import RESIDENT_CELL_RESOLUTION
from dispatcher.db.types import Conn

#: The synthetic town's centre (a made-up place; any would do).
TOWN_CENTER = (40.0150, -105.2705)
TOWN_ZONE = "America/Denver"


@dataclass(frozen=True)
class Town:
    """The seeded residents and every setting that decides who a request of each kind reaches."""

    ids: np.ndarray
    lat: np.ndarray
    lng: np.ndarray
    community_on: np.ndarray
    push_on: np.ndarray
    email_on: np.ndarray
    has_email: np.ndarray
    tokens: dict[int, list[str]]
    has_camera: np.ndarray
    video_on: np.ndarray
    alerts_on: np.ndarray
    #: Opted out of all future requests (community and video; a safety alert still reaches them).
    opted_out: np.ndarray


def make_town(n: int, seed: int) -> Town:
    """Residents clustered like a small town: a dense centre, neighbourhoods, a sparse fringe."""
    rng = np.random.default_rng(seed)
    lat0, lng0 = TOWN_CENTER
    centres = [(0.0, 0.0, 0.010), (0.018, 0.025, 0.006), (-0.015, 0.020, 0.007),
               (0.010, -0.030, 0.008), (-0.020, -0.018, 0.006)]
    weights = np.array([0.35, 0.15, 0.15, 0.15, 0.1])
    n_clustered = int(n * 0.9)
    picks = rng.choice(len(centres), size=n_clustered, p=weights / weights.sum())
    lat = np.empty(n)
    lng = np.empty(n)
    for i, (dlat, dlng, spread) in enumerate(centres):
        mask = picks == i
        k = int(mask.sum())
        lat[:n_clustered][mask] = lat0 + dlat + rng.normal(0, spread, k)
        lng[:n_clustered][mask] = lng0 + dlng + rng.normal(0, spread * 1.3, k)
    lat[n_clustered:] = lat0 + rng.uniform(-0.05, 0.05, n - n_clustered)
    lng[n_clustered:] = lng0 + rng.uniform(-0.065, 0.065, n - n_clustered)
    ids = np.arange(1, n + 1, dtype=np.int64)
    tokens: dict[int, list[str]] = {}
    device_counts = rng.choice([0, 1, 2], size=n, p=[0.15, 0.65, 0.2])
    for rid, count in zip(ids.tolist(), device_counts.tolist(), strict=True):
        if count:
            tokens[rid] = [f"demo-token-{rid}-{k}:{rng.integers(1 << 62):x}" for k in range(count)]
    community_on, push_on, email_on, has_email = (rng.random(n) > cut for cut in (0.08, 0.06, 0.06, 0.10))
    kinds = np.random.default_rng(seed + 1)
    return Town(
        ids=ids, lat=lat, lng=lng, community_on=community_on, push_on=push_on, email_on=email_on,
        has_email=has_email, tokens=tokens,
        has_camera=kinds.random(n) < 0.4,
        video_on=kinds.random(n) > 0.10,
        alerts_on=kinds.random(n) > 0.05,
        opted_out=kinds.random(n) < 0.02,
    )


def _settings_rows(town: Town) -> list[tuple[int, bool, bool, bool, bool, bool]]:
    """One row for each resident with a setting off (no row: every default on)."""
    c, p, e, v, a = town.community_on, town.push_on, town.email_on, town.video_on, town.alerts_on
    any_off = ~(c & p & e & v & a)
    return [(int(town.ids[i]), bool(c[i]), bool(p[i]), bool(e[i]), bool(v[i]), bool(a[i]))
            for i in np.flatnonzero(any_off).tolist()]


def seed_town(conn: Conn, town: Town) -> None:
    """Load the town through COPY (residents, settings, opt-outs, device tokens)."""
    with conn.cursor() as cur:
        with cur.copy("COPY residents (id, lat, lng, cell, email, locale, time_zone, has_camera) FROM STDIN") as copy:
            for i, rid in enumerate(town.ids.tolist()):
                lat, lng = float(town.lat[i]), float(town.lng[i])
                cell = h3.str_to_int(h3.latlng_to_cell(lat, lng, RESIDENT_CELL_RESOLUTION))
                email = f"resident{rid}@example.test" if town.has_email[i] else None
                copy.write_row((rid, lat, lng, cell, email, "en-US", TOWN_ZONE, bool(town.has_camera[i])))
        with cur.copy("COPY resident_settings (resident_id, community_requests, push_enabled, email_enabled,"
                      " video_requests, safety_alerts) FROM STDIN") as copy:
            for row in _settings_rows(town):
                copy.write_row(row)
        with cur.copy("COPY request_opt_outs (resident_id) FROM STDIN") as copy:
            for rid in town.ids[town.opted_out].tolist():
                copy.write_row((rid,))
        with cur.copy("COPY device_tokens (token, resident_id) FROM STDIN") as copy:
            for rid, toks in town.tokens.items():
                for token in toks:
                    copy.write_row((token, rid))
    conn.commit()
