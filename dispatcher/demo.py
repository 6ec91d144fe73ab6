"""`dispatcher demo`: a synthetic town, one request of each kind, a Contact Me conversation, a real worker,
and a checked summary.

Everything is real except the providers, which are the local sandboxes reached over HTTP by the real
client libraries. The demo uses its own database (``dispatcher_demo``, made anew each run) so it never
touches the data of a configured server, then checks the sandboxes' records against an independent
oracle (:mod:`dispatcher.demo_requests`: shapely's ``covers`` on every resident and the settings the demo
seeded): for each request, every in-area resident of its kind's audience got exactly one push per live
token and one email, and nobody else got anything. The conversation (:mod:`dispatcher.demo_relay`) is
checked for the relay's promise: neither person's real number appears in anything the other received.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import psycopg
from psycopg.conninfo import make_conninfo
from rich.console import Console
from rich.table import Table

from dispatcher.agencies.registry import AgencyRecord, upsert_agencies
from dispatcher.config import Settings, get_settings, set_settings
from dispatcher.db.types import Conn
from dispatcher.demo_requests import AUDIENCES, demo_requests, expected_recipients, kind_of
from dispatcher.demo_town import TOWN_CENTER, Town, make_town, seed_town
from dispatcher.lifecycle.states import FINAL_STATES, State
from dispatcher.relay.demo import ConversationProof

DEMO_DATABASE = "dispatcher_demo"
#: How long the demo waits for all its requests to be sent.
SEND_TIMEOUT = 300.0


def _demo_database_url(settings: Settings) -> str:
    assert settings.database_url
    with psycopg.connect(settings.database_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{DEMO_DATABASE}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{DEMO_DATABASE}"')
    return make_conninfo(settings.database_url, dbname=DEMO_DATABASE)


def demo_agency() -> AgencyRecord:
    """The demo's police department, whose jurisdiction is the whole town."""
    lat0, lng0 = TOWN_CENTER
    box = [[lng0 - 0.1, lat0 - 0.08], [lng0 + 0.1, lat0 - 0.08], [lng0 + 0.1, lat0 + 0.08],
           [lng0 - 0.1, lat0 + 0.08], [lng0 - 0.1, lat0 - 0.08]]
    ring = [[round(x, 6), round(y, 6)] for x, y in box]
    return AgencyRecord("bpd", "Boulder Valley Police Department", "police",
                        {"type": "Polygon", "coordinates": [ring]})


def _wait_for(conn: Conn, request_ids: list[str], timeout: float) -> dict[str, str]:
    """Each request's state once all are final (or the timeout passed)."""
    deadline = time.monotonic() + timeout
    states = dict.fromkeys(request_ids, "not yet accepted")
    while time.monotonic() < deadline:
        for request_id, state in conn.execute(
                "SELECT id, state FROM community_requests WHERE id = ANY(%s)", (request_ids,)).fetchall():
            states[str(request_id)] = str(state)
        if all(state in FINAL_STATES for state in states.values()):
            break
        time.sleep(0.2)
    return states


@dataclass(frozen=True)
class Received:
    """What the sandboxes recorded, per request: tokens pushed to and addresses mailed, with counts."""

    tokens: dict[str, Counter[str]]
    emails: dict[str, Counter[str]]


def _received(sandbox: Any) -> Received:
    """The whole record, from the JSON Lines files (the in-memory records are capped)."""
    tokens: dict[str, Counter[str]] = {}
    emails: dict[str, Counter[str]] = {}
    for record in sandbox.all_records("fcm"):
        request_id = str(((record.get("message") or {}).get("data") or {}).get("request_id"))
        tokens.setdefault(request_id, Counter())[str(record.get("token"))] += 1
    for record in sandbox.all_records("sendgrid"):
        request_id = str((record.get("custom_args") or {}).get("request_id"))
        emails.setdefault(request_id, Counter())[str(record.get("email"))] += 1
    return Received(tokens, emails)


def _check_lines(console: Console, checks: dict[str, bool]) -> None:
    for name, ok in checks.items():
        console.print(f"  {'[green]✓' if ok else '[red]✗'}[/] {name}")


def _request_checks(console: Console, town: Town, payload: dict[str, Any], state: str,
                    received: Received) -> dict[str, bool]:
    """One request's audience against the oracle, printed; returns its checks."""
    kind = kind_of(payload)
    request_id = str(payload["id"])
    want = expected_recipients(town, kind, payload["area"])
    got_tokens = received.tokens.get(request_id, Counter())
    got_emails = received.emails.get(request_id, Counter())
    label = kind.replace("_", " ")
    console.print(f"[bold]{label}[/] {request_id}: {state}")
    console.print(f"  residents in the area: {want.in_area:,}; in its audience ({AUDIENCES[kind]}): "
                  f"{want.audience:,}")
    console.print(f"  pushes recorded: {sum(got_tokens.values()):,} to {len(got_tokens):,} tokens "
                  f"(expected {len(want.tokens):,}); emails recorded: {sum(got_emails.values()):,} "
                  f"(expected {len(want.emails):,})")
    checks = {
        f"{label}: completed": state == State.COMPLETED,
        f"{label}: every expected token got exactly one push": all(got_tokens.get(t) == 1 for t in want.tokens),
        f"{label}: no push to anyone else": set(got_tokens) <= set(want.tokens),
        f"{label}: every expected address got exactly one email": all(got_emails.get(e) == 1 for e in want.emails),
        f"{label}: no email to anyone else": set(got_emails) <= want.emails,
    }
    _check_lines(console, checks)
    return checks


def _conversation_checks(console: Console, proof: ConversationProof) -> dict[str, bool]:
    """The Contact Me conversation's proof, printed; returns its checks."""
    from dispatcher.relay.demo import DEMO_AUTHOR, DEMO_HELPER

    console.print("[bold]Contact Me[/] on post demo-lost-dog: the author received "
                  f"{len(proof.received.get(DEMO_AUTHOR, []))} items (senders, texts, caller ids), the helper "
                  f"{len(proof.received.get(DEMO_HELPER, []))}, all through proxy numbers")
    for leak in proof.leaks:
        console.print(f"  [red]{leak}[/]", markup=True, highlight=False)
    checks = {
        "Contact Me: each side received the other's messages": all(proof.received.values()),
        "Contact Me: no real number in anything either side received": not proof.leaks,
    }
    _check_lines(console, checks)
    return checks


def run_demo(residents: int, seed: int, console: Console) -> bool:
    """Run the whole demo; return whether every check held (the records matched the oracle exactly)."""
    from dispatcher.bootstrap import bootstrap
    from dispatcher.demo_relay import run_contact_me
    from dispatcher.sandbox.server import SandboxServer

    base = bootstrap(run_migrations=False, settings=get_settings())
    # Quiet hours off: the demo shows every push going out, whatever the hour in the town's zone.
    settings = base.with_(database_url=_demo_database_url(base), quiet_hours=False)
    records_dir = settings.home / "demo" / "records"
    console.rule("[bold]dispatcher demo")
    console.print(f"data directory: {settings.home}")
    with SandboxServer(records_dir) as sandbox:
        sandbox.clear()  # the records of an earlier demo: the summary checks this run's alone
        settings = sandbox.configure(settings)
        settings = bootstrap(run_migrations=True, settings=settings)  # the demo's own database
        console.print(f"sandbox providers (FCM v1 + SendGrid v3 + Twilio) at {sandbox.base_url}")

        town = make_town(residents, seed)
        with psycopg.connect(settings.database_url or "") as conn:
            started = time.perf_counter()
            seed_town(conn, town)
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

        # Before the worker starts, so the script sends every text itself (see run_contact_me).
        settings, proof = run_contact_me(settings, sandbox)
        console.print("ran a Contact Me conversation through the relay and the sandbox's phones")

        payloads = demo_requests(datetime.now(UTC))
        for payload in payloads:
            publish(payload)
        console.print("published a Community Request over the east side, a video request over a "
                      "neighbourhood and a safety alert over the west side")

        worker = dramatiq.Worker(broker, worker_threads=8, worker_timeout=100)
        worker.start()
        started = time.perf_counter()
        request_ids = [str(payload["id"]) for payload in payloads]
        try:
            with psycopg.connect(settings.database_url or "", autocommit=True) as conn:
                states = _wait_for(conn, request_ids, timeout=SEND_TIMEOUT)
                elapsed = time.perf_counter() - started
                rows = conn.execute(
                    "SELECT request_id, channel, status, coalesce(reason, ''), count(*) FROM deliveries"
                    " WHERE request_id = ANY(%s) GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4", (request_ids,)).fetchall()
        finally:
            worker.stop()
        received = _received(sandbox)
        fcm_file = sandbox.app.recorder.path("fcm")
        mail_file = sandbox.app.recorder.path("sendgrid")

    kinds = {str(payload["id"]): kind_of(payload).replace("_", " ") for payload in payloads}
    table = Table(title=f"{len(payloads)} requests sent in {elapsed:.1f} s (internal figures, never sent to agencies)")
    for column in ("request", "channel", "outcome", "reason"):
        table.add_column(column)
    table.add_column("residents", justify="right")
    for request_id, channel, status, reason, count in rows:
        table.add_row(kinds.get(str(request_id), str(request_id)), str(channel), str(status), str(reason),
                      f"{count:,}")
    console.print(table)
    console.print(f"a town of {residents:,} residents; {int(np.sum(town.opted_out)):,} opted out of all future "
                  "requests")
    checks: dict[str, bool] = {}
    for payload in payloads:
        checks.update(_request_checks(console, town, payload, states[str(payload["id"])], received))
    others = (set(received.tokens) | set(received.emails)) - set(request_ids)
    unrelated = {"nothing was sent for anything but the demo's requests": not others}
    _check_lines(console, unrelated)
    checks.update(unrelated)
    checks.update(_conversation_checks(console, proof))
    console.print(f"recorded pushes: {fcm_file}\nrecorded emails: {mail_file}")
    set_settings(base)
    return all(checks.values())
