"""Per-request progress for ops: state, recipients by channel and outcome, send rate, likely finish.

Rows held by residents' quiet hours are ``pending`` in the counts and also counted as ``held``, with the
time the last of them may go (``held_until``); the likely and the expected finish wait for that time.

Counts come from the delivery ledger and stay with ops: they never go back to the agency (see
:mod:`dispatcher.lifecycle.events` for the only thing that does).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from dispatcher.channels.ratelimit import per_second
from dispatcher.db.types import Conn
from dispatcher.ledger import Channel, Status
from dispatcher.lifecycle.states import ACTIVE_STATES, State

#: Send rates are measured over this window, in seconds.
RATE_WINDOW_S = 60
#: A request is expected to finish within this slack plus twice the time its recipients take at the
#: configured provider rates; past that it is overdue and an alert fires.
EXPECTED_FINISH_SLACK_S = 600
EXPECTED_FINISH_FACTOR = 2.0

_ACTIVE = """
SELECT id, state, urgent, accepted_at, targeted_at, now()
FROM community_requests WHERE state = ANY(%s) ORDER BY accepted_at
"""

_COUNTS = """
SELECT d.request_id, d.channel, d.status, count(*),
       count(*) FILTER (WHERE d.status <> 'pending' AND d.updated_at > c.targeted_at
                          AND d.updated_at >= now() - make_interval(secs => %s))
FROM deliveries d JOIN community_requests c ON c.id = d.request_id
WHERE d.request_id = ANY(%s)
GROUP BY 1, 2, 3
"""

_HELD = """
SELECT request_id, channel, count(*), max(not_before)
FROM deliveries
WHERE request_id = ANY(%s) AND status = 'pending' AND not_before > now()
GROUP BY 1, 2
"""

_BY_STATE = "SELECT state, count(*) FROM community_requests GROUP BY 1"


@dataclass
class ChannelProgress:
    """One channel of one request: rows by outcome and the rate they are being closed at."""

    outcomes: dict[str, int] = field(default_factory=lambda: {s.value: 0 for s in Status})
    #: Rows closed (sent, failed, skipped or suppressed at send time) per second over the last minute.
    rate_per_s: float = 0.0
    #: Pending rows waiting for the end of their resident's quiet hours, and when the last may go.
    held: int = 0
    held_until: datetime | None = None

    @property
    def pending(self) -> int:
        return self.outcomes.get(Status.PENDING.value, 0)

    @property
    def to_send(self) -> int:
        """Rows that needed a send attempt (everything but residents skipped by their settings)."""
        return sum(self.outcomes.values()) - self.outcomes.get(Status.SKIPPED.value, 0)


@dataclass
class RequestProgress:
    """Where one active request stands."""

    id: str
    state: str
    urgent: bool
    accepted_at: datetime
    targeted_at: datetime | None
    channels: dict[str, ChannelProgress]
    #: When the request will likely finish at the current rates (``None``: no rate yet, or done).
    eta: datetime | None
    #: When it should have finished at the latest; past this it is overdue.
    expected_finish: datetime
    overdue: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "urgent": self.urgent,
            "accepted_at": self.accepted_at.isoformat(),
            "targeted_at": self.targeted_at.isoformat() if self.targeted_at else None,
            "recipients": {name: dict(c.outcomes) for name, c in self.channels.items()},
            "rate_per_s": {name: round(c.rate_per_s, 2) for name, c in self.channels.items()},
            "held": {name: {"count": c.held, "until": c.held_until.isoformat() if c.held_until else None}
                     for name, c in self.channels.items()},
            "eta": self.eta.isoformat() if self.eta else None,
            "expected_finish": self.expected_finish.isoformat(),
            "overdue": self.overdue,
        }


def requests_by_state(conn: Conn) -> dict[str, int]:
    """How many requests are in each state (every state listed, zeros included)."""
    counts = {state.value: 0 for state in State}
    for state, n in conn.execute(_BY_STATE):
        counts[str(state)] = int(n)
    return counts


def expected_finish(accepted_at: datetime, targeted_at: datetime | None,
                    channels: dict[str, ChannelProgress]) -> datetime:
    """The latest a request should finish: slack plus twice its sending time at the configured rates,
    and no earlier than slack after its last held row may go (quiet hours are not a delay)."""
    if targeted_at is None:
        return accepted_at + timedelta(seconds=EXPECTED_FINISH_SLACK_S)
    seconds = max((c.to_send / per_second(Channel(name)) for name, c in channels.items()), default=0.0)
    deadline = targeted_at + timedelta(seconds=EXPECTED_FINISH_SLACK_S + EXPECTED_FINISH_FACTOR * seconds)
    holds = [c.held_until for c in channels.values() if c.held_until is not None]
    return max([deadline, *(until + timedelta(seconds=EXPECTED_FINISH_SLACK_S) for until in holds)])


def likely_finish(now: datetime, channels: dict[str, ChannelProgress]) -> datetime | None:
    """When the slowest channel will have no pending rows left at its current rate (held rows: when
    their hold ends)."""
    if not channels:
        return None
    waits = []
    for c in channels.values():
        ready = c.pending - c.held
        if c.held_until is not None:
            waits.append((c.held_until - now).total_seconds())
        if ready <= 0:
            continue
        if c.rate_per_s <= 0:
            return None
        waits.append(ready / c.rate_per_s)
    return now + timedelta(seconds=max(waits, default=0.0))


def active_requests(conn: Conn, *, rate_window_s: int = RATE_WINDOW_S) -> list[RequestProgress]:
    """Progress of every request that is accepted, targeting or sending, oldest first."""
    rows = conn.execute(_ACTIVE, ([state.value for state in ACTIVE_STATES],)).fetchall()
    if not rows:
        return []
    now = rows[0][5]
    assert isinstance(now, datetime)
    channels: dict[str, dict[str, ChannelProgress]] = {str(r[0]): {} for r in rows}
    for request_id, channel, status, n, recent in conn.execute(_COUNTS, (rate_window_s, list(channels))):
        progress = channels[str(request_id)].setdefault(str(channel), ChannelProgress())
        progress.outcomes[str(status)] = int(n)
        progress.rate_per_s += int(recent) / rate_window_s
    for request_id, channel, n, until in conn.execute(_HELD, (list(channels),)):
        progress = channels[str(request_id)].setdefault(str(channel), ChannelProgress())
        progress.held, progress.held_until = int(n), until
    result = []
    for request_id, state, urgent, accepted_at, targeted_at, _ in rows:
        assert isinstance(accepted_at, datetime) and (targeted_at is None or isinstance(targeted_at, datetime))
        by_channel = dict(sorted(channels[str(request_id)].items()))
        deadline = expected_finish(accepted_at, targeted_at, by_channel)
        result.append(RequestProgress(
            id=str(request_id), state=str(state), urgent=bool(urgent), accepted_at=accepted_at,
            targeted_at=targeted_at, channels=by_channel,
            eta=likely_finish(now, by_channel) if state == State.SENDING else None,
            expected_finish=deadline, overdue=now > deadline,
        ))
    return result
