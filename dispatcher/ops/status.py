"""`dispatcher status`: queues, workers, active requests and provider limits in one snapshot.

Per request and channel it shows the rows by outcome, and how many pending rows are held by residents'
quiet hours and until when the last of them waits (``held``: count and ``until``).

:func:`collect_status` returns plain JSON-able data (what ``--json`` prints and the tests check);
:func:`render_status` draws it as tables for people.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import redis
from rich.console import Console, Group
from rich.table import Table

from dispatcher.db.types import Conn
from dispatcher.ledger import Status
from dispatcher.ops.limits import rate_limit_use
from dispatcher.ops.progress import active_requests, requests_by_state
from dispatcher.ops.queues import queue_stats, worker_stats
from dispatcher.redis_client import shared_redis

_OUTCOME_COLUMNS = (Status.PENDING, Status.SENT, Status.FAILED, Status.SKIPPED, Status.SUPPRESSED)


def collect_status(*, conn: Conn | None = None, client: redis.Redis | None = None) -> dict[str, Any]:
    """A snapshot of the fleet: ``queues``, ``workers``, ``requests_by_state``, ``requests``, ``rate_limits``."""
    from dispatcher.db import connect

    client = client or shared_redis()
    snapshot: dict[str, Any] = {
        "generated_at": datetime.now(UTC).isoformat(),
        "queues": [q.as_dict() for q in queue_stats(client)],
        "workers": worker_stats(client).as_dict(),
        "rate_limits": [u.as_dict() for u in rate_limit_use(client)],
    }
    if conn is None:
        with connect(autocommit=True) as own:
            snapshot |= _requests(own)
    else:
        snapshot |= _requests(conn)
    return snapshot


def _requests(conn: Conn) -> dict[str, Any]:
    return {
        "requests_by_state": requests_by_state(conn),
        "requests": [r.as_dict() for r in active_requests(conn)],
    }


def _when(iso: str | None, now: datetime) -> str:
    if iso is None:
        return "-"
    seconds = (datetime.fromisoformat(iso) - now).total_seconds()
    sign = "in " if seconds >= 0 else ""
    suffix = "" if seconds >= 0 else " ago"
    seconds = abs(seconds)
    if seconds < 120:
        text = f"{seconds:.0f}s"
    else:
        text = f"{seconds / 60:.0f}m" if seconds < 7200 else f"{seconds / 3600:.1f}h"
    return f"{sign}{text}{suffix}"


def _held_cells(held: dict[str, Any] | None, now: datetime) -> tuple[str, str]:
    """Rows held by quiet hours (part of pending) and when the last of them may go."""
    if not held or not held["count"]:
        return "0", "-"
    return f"{held['count']:,}", _when(held["until"], now)


def _queues_table(snapshot: dict[str, Any]) -> Table:
    workers = snapshot["workers"]
    caption = f"workers alive: {workers['alive']}"
    if workers["stale"]:
        caption += f" (stale: {workers['stale']})"
    if workers["last_heartbeat_age_s"] is not None:
        caption += f", last heartbeat {workers['last_heartbeat_age_s']}s ago"
    table = Table(title="Queues", caption=caption, title_justify="left", caption_justify="left")
    for column in ("queue", "ready", "delayed", "in flight", "dead"):
        table.add_column(column, justify="left" if column == "queue" else "right")
    for q in snapshot["queues"]:
        dead = f"[bold red]{q['dead']}[/]" if q["dead"] else "0"
        table.add_row(q["queue"], str(q["ready"]), str(q["delayed"]), str(q["in_flight"]), dead)
    return table


def _requests_table(snapshot: dict[str, Any], now: datetime) -> Table:
    states = ", ".join(f"{s} {n}" for s, n in snapshot["requests_by_state"].items() if n)
    table = Table(title="Active requests", caption=f"all requests: {states or 'none'}", title_justify="left",
                  caption_justify="left")
    for column in ("request", "state", "channel", *(s.value for s in _OUTCOME_COLUMNS), "held", "held until",
                   "rate/s", "likely finish"):
        table.add_column(column, justify="left" if column in ("request", "state", "channel") else "right")
    for r in snapshot["requests"]:
        state = f"[bold red]{r['state']} (overdue)[/]" if r["overdue"] else r["state"]
        channels = r["recipients"] or {"-": {}}
        for i, (channel, counts) in enumerate(channels.items()):
            table.add_row(
                r["id"] if i == 0 else "", state if i == 0 else "", channel,
                *(f"{counts.get(s.value, 0):,}" for s in _OUTCOME_COLUMNS),
                *_held_cells(r["held"].get(channel), now),
                f"{r['rate_per_s'].get(channel, 0):,.1f}",
                _when(r["eta"], now) if i == 0 else "",
            )
    return table


def _limits_table(snapshot: dict[str, Any]) -> Table:
    table = Table(title="Provider rate limits", title_justify="left")
    for column in ("channel", "limit/s", "used last second", "use", "paused"):
        table.add_column(column, justify="left" if column == "channel" else "right")
    for u in snapshot["rate_limits"]:
        paused = f"[yellow]{u['paused_for_s']}s[/]" if u["paused_for_s"] else "-"
        table.add_row(u["channel"], f"{u['limit_per_s']:,}", f"{u['used_last_second']:,}",
                      f"{u['utilisation']:.0%}", paused)
    return table


def status_renderable(snapshot: dict[str, Any]) -> Group:
    """The snapshot as rich tables (also what ``--watch`` refreshes)."""
    now = datetime.fromisoformat(snapshot["generated_at"])
    return Group(_queues_table(snapshot), _requests_table(snapshot, now), _limits_table(snapshot))


def render_status(snapshot: dict[str, Any], console: Console) -> None:
    """Print the snapshot as tables."""
    console.print(status_renderable(snapshot))


def watch_status(console: Console, *, interval: float = 2.0, as_json: bool = False,
                 iterations: int | None = None) -> None:
    """Refresh the snapshot every ``interval`` seconds until interrupted (or ``iterations`` times).

    Tables redraw in place; with ``as_json`` each snapshot is one JSON line, for scripts to follow.
    """
    import json
    import time

    from rich.live import Live

    count = 0
    try:
        if as_json:
            while iterations is None or count < iterations:
                print(json.dumps(collect_status(), default=str), flush=True)
                count += 1
                if iterations is None or count < iterations:
                    time.sleep(interval)
            return
        with Live(status_renderable(collect_status()), console=console, auto_refresh=False) as live:
            count = 1
            while iterations is None or count < iterations:
                time.sleep(interval)
                live.update(status_renderable(collect_status()), refresh=True)
                count += 1
    except KeyboardInterrupt:
        pass
