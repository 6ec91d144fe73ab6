"""`dispatcher demo`: a synthetic town, one Community Request, a real worker, and a checked summary.

Everything is real except the providers, which are the local sandboxes reached over HTTP by the real
client libraries. The demo uses its own database (``dispatcher_demo``, made anew each run) so it never
touches the data of a configured server, then checks the sandboxes' records against an independent
oracle (shapely's ``covers`` on every resident): every in-area resident with Community Requests on got
exactly one push per live token and one email, and nobody else got anything.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import h3
import numpy as np
import psycopg
import shapely
from psycopg.conninfo import make_conninfo
from rich.console import Console
from rich.table import Table

from dispatcher.agencies.registry import AgencyRecord, upsert_agencies
from dispatcher.config import RESIDENT_CELL_RESOLUTION, Settings, get_settings, set_settings
from dispatcher.db.types import Conn
from dispatcher.lifecycle.states import FINAL_STATES, State

DEMO_DATABASE = "dispatcher_demo"
#: The synthetic town's centre (a made-up place; any would do).
TOWN_CENTER = (40.0150, -105.2705)
TOWN_ZONE = "America/Denver"


@dataclass(frozen=True)
class Town:
    """The seeded residents, kept in memory only to check the demo's result independently."""

    ids: np.ndarray
    lat: np.ndarray
    lng: np.ndarray
    community_on: np.ndarray
    push_on: np.ndarray
    email_on: np.ndarray
    has_email: np.ndarray
    tokens: dict[int, list[str]]


def _demo_database_url(settings: Settings) -> str:
    assert settings.database_url
    with psycopg.connect(settings.database_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{DEMO_DATABASE}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{DEMO_DATABASE}"')
    return make_conninfo(settings.database_url, dbname=DEMO_DATABASE)


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
    return Town(
        ids=ids, lat=lat, lng=lng,
        community_on=rng.random(n) > 0.08,
        push_on=rng.random(n) > 0.06,
        email_on=rng.random(n) > 0.06,
        has_email=rng.random(n) > 0.10,
        tokens=tokens,
    )


def seed_town(conn: Conn, town: Town, seed: int) -> None:
    """Load the town through COPY (residents, settings, device tokens)."""
    rng = np.random.default_rng(seed + 1)
    cameras = rng.random(len(town.ids)) < 0.4
    with conn.cursor() as cur:
        with cur.copy("COPY residents (id, lat, lng, cell, email, locale, time_zone, has_camera) FROM STDIN") as copy:
            for i, rid in enumerate(town.ids.tolist()):
                lat, lng = float(town.lat[i]), float(town.lng[i])
                cell = h3.str_to_int(h3.latlng_to_cell(lat, lng, RESIDENT_CELL_RESOLUTION))
                email = f"resident{rid}@example.test" if town.has_email[i] else None
                copy.write_row((rid, lat, lng, cell, email, "en-US", TOWN_ZONE, bool(cameras[i])))
        with cur.copy("COPY resident_settings (resident_id, community_requests, push_enabled, email_enabled)"
                      " FROM STDIN") as copy:
            for i, rid in enumerate(town.ids.tolist()):
                if not (town.community_on[i] and town.push_on[i] and town.email_on[i]):
                    copy.write_row((rid, bool(town.community_on[i]), bool(town.push_on[i]), bool(town.email_on[i])))
        with cur.copy("COPY device_tokens (token, resident_id) FROM STDIN") as copy:
            for rid, toks in town.tokens.items():
                for token in toks:
                    copy.write_row((token, rid))
    conn.commit()


def demo_area() -> dict[str, Any]:
    """A concave area over the east of the town, with a park (a hole) that is left out."""
    lat0, lng0 = TOWN_CENTER
    shell = [(-0.004, -0.020), (0.030, -0.012), (0.040, 0.020), (0.028, 0.045), (0.010, 0.030),
             (-0.006, 0.048), (-0.030, 0.030), (-0.022, 0.004), (-0.004, -0.020)]
    hole = [(0.004, 0.010), (0.010, 0.010), (0.010, 0.018), (0.004, 0.018), (0.004, 0.010)]
    ring = [[round(lng0 + dx, 6), round(lat0 + dy, 6)] for dy, dx in shell]
    park = [[round(lng0 + dx, 6), round(lat0 + dy, 6)] for dy, dx in hole]
    return {"type": "Feature", "properties": {"name": "East side"},
            "geometry": {"type": "Polygon", "coordinates": [ring, park]}}


def demo_agency() -> AgencyRecord:
    """The demo's police department, whose jurisdiction is the whole town."""
    lat0, lng0 = TOWN_CENTER
    box = [[lng0 - 0.1, lat0 - 0.08], [lng0 + 0.1, lat0 - 0.08], [lng0 + 0.1, lat0 + 0.08],
           [lng0 - 0.1, lat0 + 0.08], [lng0 - 0.1, lat0 - 0.08]]
    ring = [[round(x, 6), round(y, 6)] for x, y in box]
    return AgencyRecord("bpd", "Boulder Valley Police Department", "police",
                        {"type": "Polygon", "coordinates": [ring]})


def demo_request(now: datetime) -> dict[str, Any]:
    """A sample approved Community Request over :func:`demo_area`."""
    return {
        "id": f"demo-{now.strftime('%Y%m%d%H%M%S')}",
        "agency": {"id": "bpd", "name": "Boulder Valley Police Department"},
        "incident_type": "burglary",
        "details": "Residential burglary reported on the east side. We are asking for doorbell and "
                   "driveway camera footage showing people or vehicles between 9 pm and 2 am.",
        "footage_window": {"start": (now - timedelta(hours=30)).isoformat(),
                           "end": (now - timedelta(hours=25)).isoformat()},
        "investigator": {"name": "Det. Alex Rivera", "phone": "+1 303 555 0147", "email": "arivera@bvpd.example"},
        "area": demo_area(),
        "investigation_code": "BVPD-2026-004211",
        "approved_at": (now - timedelta(minutes=10)).isoformat(),
        "published_at": (now - timedelta(minutes=5)).isoformat(),
    }


def expected_recipients(town: Town, area: dict[str, Any]) -> tuple[set[int], dict[str, int], set[str]]:
    """The oracle: residents covered by the area (shapely), and the tokens and emails they should get."""
    geometry = shapely.geometry.shape(area["geometry"])
    inside = shapely.covers(geometry, shapely.points(town.lng, town.lat))
    in_area = set(town.ids[inside].tolist())
    tokens: dict[str, int] = {}
    emails: set[str] = set()
    for i in np.flatnonzero(inside & town.community_on).tolist():
        rid = int(town.ids[i])
        if town.push_on[i]:
            for token in town.tokens.get(rid, []):
                tokens[token] = rid
        if town.email_on[i] and town.has_email[i]:
            emails.add(f"resident{rid}@example.test")
    return in_area, tokens, emails


def _wait_for(conn: Conn, request_id: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    state = "unknown"
    while time.monotonic() < deadline:
        row = conn.execute("SELECT state FROM community_requests WHERE id = %s", (request_id,)).fetchone()
        state = str(row[0]) if row else "not yet accepted"
        if state in FINAL_STATES:
            return state
        time.sleep(0.2)
    return state


def run_demo(residents: int, seed: int, console: Console) -> bool:
    """Run the whole demo; return whether the recorded notifications matched the oracle exactly."""
    from dispatcher.bootstrap import bootstrap
    from dispatcher.sandbox.server import SandboxServer

    base = bootstrap(run_migrations=False, settings=get_settings())
    # Quiet hours off: the demo shows every push going out, whatever the hour in the town's zone.
    settings = base.with_(database_url=_demo_database_url(base), quiet_hours=False)
    records_dir = settings.home / "demo" / "records"
    console.rule("[bold]dispatcher demo")
    console.print(f"data directory: {settings.home}")
    with SandboxServer(records_dir) as sandbox:
        settings = sandbox.configure(settings)
        settings = bootstrap(run_migrations=True, settings=settings)  # the demo's own database
        console.print(f"sandbox providers (FCM v1 + SendGrid v3) at {sandbox.base_url}")

        town = make_town(residents, seed)
        with psycopg.connect(settings.database_url or "") as conn:
            started = time.perf_counter()
            seed_town(conn, town, seed)
            upsert_agencies(conn, [demo_agency()])
            console.print(f"seeded a town of {residents:,} residents in {time.perf_counter() - started:.1f} s")

        import dramatiq

        from dispatcher.actors import distribute_request  # noqa: F401  (declares the actors)
        from dispatcher.publishing import publish
        from dispatcher.queues import ALL_QUEUES

        broker = dramatiq.get_broker()
        for queue in ALL_QUEUES:
            broker.declare_queue(queue)
        if not base.redis_url or base.redis_url.startswith("unix://"):
            broker.flush_all()  # leftovers of an earlier demo on the embedded Redis

        now = datetime.now(UTC)
        payload = demo_request(now)
        request_id = publish(payload)
        console.print(f"published Community Request {request_id} over the east side of town")

        worker = dramatiq.Worker(broker, worker_threads=8, worker_timeout=100)
        worker.start()
        started = time.perf_counter()
        try:
            with psycopg.connect(settings.database_url or "", autocommit=True) as conn:
                state = _wait_for(conn, request_id, timeout=300)
                elapsed = time.perf_counter() - started
                rows = conn.execute(
                    "SELECT channel, status, coalesce(reason, ''), count(*) FROM deliveries"
                    " WHERE request_id = %s GROUP BY 1, 2, 3 ORDER BY 1, 2, 3", (request_id,)).fetchall()
        finally:
            worker.stop()
        # The whole record, from the JSON Lines files: the in-memory records are capped.
        got_tokens = Counter(str(r.get("token")) for r in sandbox.all_records("fcm"))
        got_emails = Counter(str(r.get("email")) for r in sandbox.all_records("sendgrid"))
        fcm_file = sandbox.app.recorder.path("fcm")
        mail_file = sandbox.app.recorder.path("sendgrid")

    in_area, want_tokens, want_emails = expected_recipients(town, payload["area"])
    in_mask = np.isin(town.ids, list(in_area))
    opted_out = int((in_mask & ~town.community_on).sum())
    checks = {
        "every expected token got exactly one push": all(got_tokens.get(t) == 1 for t in want_tokens),
        "no push to anyone else": set(got_tokens) <= set(want_tokens),
        "every expected address got exactly one email": all(got_emails.get(e) == 1 for e in want_emails),
        "no email to anyone else": set(got_emails) <= want_emails,
    }

    table = Table(title=f"Request {request_id}: {state} in {elapsed:.1f} s (internal figures, never sent to agencies)")
    table.add_column("channel")
    table.add_column("outcome")
    table.add_column("reason")
    table.add_column("residents", justify="right")
    for channel, status, reason, count in rows:
        table.add_row(str(channel), str(status), str(reason), f"{count:,}")
    console.print(table)
    console.print(f"residents in the area: {len(in_area):,} of {residents:,}")
    console.print(f"  of whom switched Community Requests off: {opted_out:,}")
    console.print(f"pushes recorded: {sum(got_tokens.values()):,} to {len(got_tokens):,} tokens "
                  f"(expected {len(want_tokens):,})")
    console.print(f"emails recorded: {sum(got_emails.values()):,} (expected {len(want_emails):,})")
    for name, ok in checks.items():
        console.print(f"  {'[green]✓' if ok else '[red]✗'}[/] {name}")
    console.print(f"recorded pushes: {fcm_file}\nrecorded emails: {mail_file}")
    set_settings(base)
    return state == State.COMPLETED and all(checks.values())



