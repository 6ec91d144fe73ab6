"""Quiet hours: whether a resident's push waits for the morning, and until when.

A resident's non-urgent pushes are not delivered between ``start`` and ``end`` on the resident's own
wall clock (by default 22:00 to 07:00; each resident may move both or switch them off). This module is
the one home of that rule: pure functions of an injected ``now``, so the ledger applies it at the last
moment (when a row is claimed) and tests freeze the clock.

Wall-clock semantics, so daylight saving time needs no special case: a time is in the quiet period when
the local clock shows a time in ``[start, end)`` (a period crossing midnight when ``start > end``; empty
when ``start == end``), and the period ends at the first instant the local clock shows ``end`` or later
(an ``end`` inside a spring-forward gap ends the period at the jump; an ``end`` that occurs twice in a
fall-back night ends it at its first occurrence).

Held pushes do not all go out at ``end``: each resident gets a deterministic offset in a spread window
sized so a request's held pushes leave at no more than :data:`MORNING_SHARE` of the provider's rate. A
push whose quiet period would end after the request's response window closes is never sent (it expires
with :data:`QUIET_PAST_WINDOW`): a non-urgent request does not wake anyone, and the resident still has
the email and the feed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dispatcher.db.types import Conn

#: Quiet hours of a resident who never chose their own.
DEFAULT_START = time(22, 0)
DEFAULT_END = time(7, 0)
#: Held pushes of one request leave at no more than this share of the provider's rate, so the morning
#: leaves room for other requests (the fleet-wide rate limiter stays the hard guard).
MORNING_SHARE = 0.5
#: The longest a morning's release of one request is spread over.
MAX_SPREAD = timedelta(hours=1)
#: A held push is released at least this long before the response window closes.
WINDOW_MARGIN = timedelta(minutes=5)
#: Why a held row waits (the ledger's ``reason`` while it is held).
HELD = "quiet_hours"
#: Why a held row was never sent: the quiet period outlasts the response window.
QUIET_PAST_WINDOW = "quiet hours last past the response window"

_CLOCK = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])\Z")
_SECOND = timedelta(seconds=1)


@dataclass(frozen=True)
class QuietHours:
    """One resident's quiet hours on their wall clock."""

    enabled: bool = True
    start: time = DEFAULT_START
    end: time = DEFAULT_END


def parse_clock(text: str) -> time | None:
    """``"HH:MM"`` (24-hour, zero-padded) as a time of day; ``None`` when it is not one."""
    match = _CLOCK.match(text) if isinstance(text, str) else None
    return time(int(match.group(1)), int(match.group(2))) if match else None


@lru_cache(maxsize=1024)
def resident_zone(name: str) -> ZoneInfo:
    """The resident's zone; an unknown name (the index validates zones, so a stale tz database) is UTC."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _in_period(clock: time, hours: QuietHours) -> bool:
    if hours.start < hours.end:
        return hours.start <= clock < hours.end
    return clock >= hours.start or clock < hours.end  # crosses midnight (empty when start == end: never)


def _wall(instant: datetime, zone: ZoneInfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def _first_instant_showing(wall: datetime, zone: ZoneInfo) -> datetime:
    """The first instant (UTC) at which the local clock shows ``wall`` or later."""
    early = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if _wall(early, zone) == wall:
        return early  # exists (the first occurrence when it occurs twice)
    # In a spring-forward gap: the jump lies between the two readings of the offset; find it to the second.
    low, high = wall.replace(tzinfo=zone, fold=1).astimezone(UTC), early
    low, high = min(low, high), max(low, high)
    while high - low > _SECOND:
        middle = low + (high - low) / 2
        if _wall(middle, zone) >= wall:
            high = middle
        else:
            low = middle
    return high


def quiet_period_end(now: datetime, time_zone: str, hours: QuietHours) -> datetime | None:
    """If ``now`` (aware) falls in the resident's quiet period, the instant (UTC) it ends; else ``None``."""
    if not hours.enabled or hours.start == hours.end:
        return None
    zone = resident_zone(time_zone)
    local = _wall(now, zone)
    if not _in_period(local.time(), hours):
        return None
    end_day = local.date()
    if hours.start > hours.end and local.time() >= hours.start:
        end_day += timedelta(days=1)  # before midnight: the period ends tomorrow morning
    return _first_instant_showing(datetime.combine(end_day, hours.end), zone)


def spread_window(held: int, rate_per_minute: int) -> timedelta:
    """How long ``held`` pushes take at :data:`MORNING_SHARE` of the provider rate (at most :data:`MAX_SPREAD`)."""
    if held <= 0 or rate_per_minute <= 0:
        return timedelta(0)
    return min(MAX_SPREAD, timedelta(seconds=held / (rate_per_minute / 60 * MORNING_SHARE)))


def spread_fraction(resident_id: int) -> float:
    """A fixed point in ``[0, 1)`` for each resident (Fibonacci hashing: neighbours land far apart)."""
    return ((resident_id * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF) / 2**64


def release_time(end: datetime, resident_id: int, window: timedelta, respond_until: datetime) -> datetime | None:
    """When a push held until ``end`` goes out; ``None`` when the response window closes first."""
    if end >= respond_until - WINDOW_MARGIN:
        return None
    return min(end + window * spread_fraction(resident_id), respond_until - WINDOW_MARGIN)


@dataclass(frozen=True)
class ResidentClock:
    """What the rule needs about one resident: their zone and their quiet hours."""

    time_zone: str
    hours: QuietHours


_RESIDENT_CLOCKS = """
SELECT r.id, r.time_zone, coalesce(s.quiet_hours, TRUE), s.quiet_start, s.quiet_end
FROM residents AS r LEFT JOIN resident_settings AS s ON s.resident_id = r.id
WHERE r.id = ANY(%s::bigint[])
"""


def resident_clocks(conn: Conn, resident_ids: Sequence[int]) -> dict[int, ResidentClock]:
    """Zone and quiet hours of each resident still in the index (a deleted one is left out)."""
    return {
        int(resident_id): ResidentClock(str(zone), QuietHours(
            bool(enabled), DEFAULT_START if start is None else start, DEFAULT_END if end is None else end))
        for resident_id, zone, enabled, start, end in conn.execute(_RESIDENT_CLOCKS, (list(resident_ids),))
    }
