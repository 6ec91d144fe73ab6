"""Quiet hours as a pure rule of a frozen clock: across zones, midnight and daylight saving time."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from dispatcher.config import Settings
from dispatcher.errors import ConfigurationError
from dispatcher.preferences.quiet_hours import (
    MAX_SPREAD,
    MORNING_SHARE,
    WINDOW_MARGIN,
    QuietHours,
    parse_clock,
    quiet_period_end,
    release_time,
    spread_fraction,
    spread_window,
)

DEFAULT = QuietHours()


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


#: (case, zone, now in UTC, the end of the quiet period in UTC or None when not quiet)
DEFAULT_CASES = [
    ("New York, before midnight", "America/New_York", utc(2026, 6, 11, 3, 0), utc(2026, 6, 11, 11, 0)),
    ("New York, after midnight", "America/New_York", utc(2026, 6, 11, 8, 0), utc(2026, 6, 11, 11, 0)),
    ("New York, 22:00 sharp is quiet", "America/New_York", utc(2026, 6, 11, 2, 0), utc(2026, 6, 11, 11, 0)),
    ("New York, 21:59 is not", "America/New_York", utc(2026, 6, 11, 1, 59), None),
    ("New York, 07:00 sharp is not", "America/New_York", utc(2026, 6, 11, 11, 0), None),
    ("New York, 06:59 is", "America/New_York", utc(2026, 6, 11, 10, 59), utc(2026, 6, 11, 11, 0)),
    ("New York, noon", "America/New_York", utc(2026, 6, 11, 16, 0), None),
    # Spring forward (2026-03-08 02:00 EST -> 03:00 EDT): a night an hour shorter.
    ("New York, night of spring forward", "America/New_York", utc(2026, 3, 8, 4, 0), utc(2026, 3, 8, 11, 0)),
    ("New York, inside the skipped hour's night", "America/New_York", utc(2026, 3, 8, 7, 30),
     utc(2026, 3, 8, 11, 0)),
    # Fall back (2026-11-01 02:00 EDT -> 01:00 EST): a night an hour longer, 01:30 happens twice.
    ("New York, night of fall back", "America/New_York", utc(2026, 11, 1, 3, 0), utc(2026, 11, 1, 12, 0)),
    ("New York, first 01:30", "America/New_York", utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 12, 0)),
    ("New York, second 01:30", "America/New_York", utc(2026, 11, 1, 6, 30), utc(2026, 11, 1, 12, 0)),
    ("New York, 07:00 EST after fall back", "America/New_York", utc(2026, 11, 1, 12, 0), None),
    # London: BST starts 2026-03-29 01:00 UTC, ends 2026-10-25 01:00 UTC.
    ("London, night BST starts", "Europe/London", utc(2026, 3, 28, 22, 30), utc(2026, 3, 29, 6, 0)),
    ("London, night BST ends", "Europe/London", utc(2026, 10, 24, 22, 0), utc(2026, 10, 25, 7, 0)),
    ("London, 22:00 BST is 21:00 UTC", "Europe/London", utc(2026, 7, 1, 21, 0), utc(2026, 7, 2, 6, 0)),
    ("London, 21:30 GMT is not", "Europe/London", utc(2026, 12, 1, 21, 30), None),
    # Southern hemisphere: Auckland's DST ends 2026-04-05 03:00 NZDT -> 02:00 NZST.
    ("Auckland, night DST ends", "Pacific/Auckland", utc(2026, 4, 4, 10, 0), utc(2026, 4, 4, 19, 0)),
    ("Kolkata, half-hour offset", "Asia/Kolkata", utc(2026, 1, 15, 17, 0), utc(2026, 1, 16, 1, 30)),
    ("Kolkata, 16:29 UTC is 21:59", "Asia/Kolkata", utc(2026, 1, 15, 16, 29), None),
    ("UTC itself", "UTC", utc(2026, 1, 15, 23, 59), utc(2026, 1, 16, 7, 0)),
    ("unknown zone is read as UTC", "Mars/Olympus_Mons", utc(2026, 1, 15, 23, 0), utc(2026, 1, 16, 7, 0)),
]


@pytest.mark.parametrize(("case", "zone", "now", "end"), DEFAULT_CASES, ids=[c[0] for c in DEFAULT_CASES])
def test_default_quiet_hours_on_the_residents_clock(case: str, zone: str, now: datetime,
                                                    end: datetime | None) -> None:
    assert quiet_period_end(now, zone, DEFAULT) == end


def test_the_nights_around_daylight_saving_time_are_an_hour_shorter_and_longer() -> None:
    new_york = ZoneInfo("America/New_York")
    spring = datetime(2026, 3, 7, 22, 0, tzinfo=new_york)
    fall = datetime(2026, 10, 31, 22, 0, tzinfo=new_york)
    spring_end = quiet_period_end(spring, "America/New_York", DEFAULT)
    fall_end = quiet_period_end(fall, "America/New_York", DEFAULT)
    assert spring_end is not None and fall_end is not None
    assert spring_end - spring == timedelta(hours=8)
    assert fall_end - fall == timedelta(hours=10)
    assert spring_end.astimezone(new_york).time() == fall_end.astimezone(new_york).time() == time(7, 0)


def _first_instant_check(end: datetime, zone: str, wall: time) -> None:
    local = ZoneInfo(zone)
    assert end.astimezone(local).time() >= wall
    assert (end - timedelta(seconds=1)).astimezone(local).time() < wall


def test_an_end_inside_the_spring_forward_gap_ends_at_the_jump() -> None:
    hours = QuietHours(start=time(22, 0), end=time(2, 30))  # 02:30 does not exist on 2026-03-08 in New York
    end = quiet_period_end(utc(2026, 3, 8, 6, 0), "America/New_York", hours)  # 01:00 EST
    assert end == utc(2026, 3, 8, 7, 0)  # 02:00 EST = 03:00 EDT, the first instant showing 02:30 or later
    _first_instant_check(end, "America/New_York", time(2, 30))


def test_an_end_that_happens_twice_ends_at_its_first_occurrence() -> None:
    hours = QuietHours(start=time(23, 0), end=time(1, 30))  # 01:30 happens twice on 2026-11-01 in New York
    assert quiet_period_end(utc(2026, 11, 1, 4, 30), "America/New_York", hours) == utc(2026, 11, 1, 5, 30)


def test_a_start_inside_the_skipped_hour_still_starts_the_period() -> None:
    hours = QuietHours(start=time(2, 15), end=time(6, 0))  # no 02:15 on 2026-03-08: quiet from the jump on
    assert quiet_period_end(utc(2026, 3, 8, 6, 59), "America/New_York", hours) is None  # 01:59 EST
    assert quiet_period_end(utc(2026, 3, 8, 7, 0), "America/New_York", hours) == utc(2026, 3, 8, 10, 0)


#: (case, hours, local wall time in UTC, quiet?)
OWN_CASES = [
    ("switched off", QuietHours(enabled=False), time(23, 0), False),
    ("start equal to end is never", QuietHours(start=time(6, 0), end=time(6, 0)), time(6, 0), False),
    ("a daytime period", QuietHours(start=time(13, 0), end=time(15, 0)), time(14, 0), True),
    ("a daytime period, after it", QuietHours(start=time(13, 0), end=time(15, 0)), time(15, 0), False),
    ("a daytime period, before it", QuietHours(start=time(13, 0), end=time(15, 0)), time(12, 59), False),
    ("a late start", QuietHours(start=time(23, 30), end=time(6, 0)), time(23, 0), False),
    ("an early end", QuietHours(start=time(21, 0), end=time(5, 0)), time(5, 30), False),
    ("from midnight", QuietHours(start=time(0, 0), end=time(8, 0)), time(0, 0), True),
    ("until midnight", QuietHours(start=time(20, 0), end=time(0, 0)), time(23, 59), True),
    ("until midnight, at midnight", QuietHours(start=time(20, 0), end=time(0, 0)), time(0, 0), False),
]


@pytest.mark.parametrize(("case", "hours", "wall", "quiet"), OWN_CASES, ids=[c[0] for c in OWN_CASES])
def test_residents_own_quiet_hours(case: str, hours: QuietHours, wall: time, quiet: bool) -> None:
    now = datetime.combine(datetime(2026, 5, 5).date(), wall, tzinfo=UTC)
    end = quiet_period_end(now, "UTC", hours)
    assert (end is not None) is quiet
    if end is not None:
        assert end.time() == hours.end and timedelta(0) < end - now <= timedelta(hours=24)


def test_the_end_is_always_ahead_and_within_a_day_across_zones_all_year() -> None:
    zones = ["America/New_York", "Europe/London", "Australia/Lord_Howe", "Pacific/Chatham", "America/Santiago",
             "Asia/Tehran", "Africa/Casablanca"]
    hours = QuietHours(start=time(0, 30), end=time(1, 0))  # around midnight, where some zones jump
    start = utc(2026, 1, 1)
    for zone in zones:
        for step in range(0, 365 * 24 * 2):
            now = start + timedelta(minutes=30 * step + 7 * (step % 3))
            end = quiet_period_end(now, zone, hours)
            if end is not None:
                assert now < end <= now + timedelta(hours=2), (zone, now)


def test_spread_fraction_is_deterministic_and_spreads_neighbours() -> None:
    fractions = [spread_fraction(resident) for resident in range(1, 10_001)]
    assert fractions == [spread_fraction(resident) for resident in range(1, 10_001)]
    assert all(0.0 <= f < 1.0 for f in fractions)
    deciles = [sum(1 for f in fractions if k / 10 <= f < (k + 1) / 10) for k in range(10)]
    assert min(deciles) > 900 and max(deciles) < 1100, deciles


def test_spread_window_follows_the_number_held_and_the_provider_rate() -> None:
    assert spread_window(0, 600_000) == timedelta(0)
    assert spread_window(100, 0) == timedelta(0)
    per_second = 600_000 / 60 * MORNING_SHARE
    assert spread_window(1_000_000, 600_000) == timedelta(seconds=1_000_000 / per_second)
    assert spread_window(10**12, 600_000) == MAX_SPREAD


def test_held_pushes_never_leave_faster_than_the_morning_share_of_the_rate() -> None:
    held, rate = 50_000, 600_000
    window = spread_window(held, rate)
    end = utc(2026, 6, 11, 11, 0)
    releases = sorted(release_time(end, r, window, end + timedelta(days=30)) or end for r in range(1, held + 1))
    per_second: dict[int, int] = {}
    for at in releases:
        per_second[int((at - end).total_seconds())] = per_second.get(int((at - end).total_seconds()), 0) + 1
    assert releases[0] >= end and releases[-1] <= end + window
    assert max(per_second.values()) <= rate / 60 * MORNING_SHARE * 1.1


def test_release_time_and_the_response_window() -> None:
    end = utc(2026, 6, 11, 11, 0)
    window = timedelta(minutes=10)
    far = end + timedelta(days=3)
    assert release_time(end, 7, window, far) == end + window * spread_fraction(7)
    assert release_time(end, 7, window, end) is None  # the window closes when the night ends
    assert release_time(end, 7, window, end + WINDOW_MARGIN) is None
    close = end + WINDOW_MARGIN + timedelta(minutes=1)
    assert all(end <= (release_time(end, r, window, close) or far) <= close - WINDOW_MARGIN for r in range(200))


@pytest.mark.parametrize(("text", "parsed"), [
    ("22:00", time(22, 0)), ("07:00", time(7, 0)), ("00:00", time(0, 0)), ("23:59", time(23, 59)),
    ("24:00", None), ("7:00", None), ("07:60", None), ("07:00:00", None), ("0700", None), ("", None),
    (" 07:00", None), ("07:00\n", None), ("07:00\x00", None), ("١٢:٠٠", None), ("0١:00", None), ("22:00" * 1000, None),
])
def test_parse_clock(text: str, parsed: time | None) -> None:
    assert parse_clock(text) == parsed


@pytest.mark.parametrize(("name", "raw", "field", "value"), [
    ("QUIET_HOURS", "off", "quiet_hours", False), ("QUIET_HOURS", "true", "quiet_hours", True),
    ("QUIET_HOURS_EMAIL", "yes", "quiet_hours_email", True), ("QUIET_HOURS_EMAIL", "0", "quiet_hours_email", False),
])
def test_quiet_hours_switches_from_the_environment(monkeypatch: pytest.MonkeyPatch, name: str, raw: str,
                                                   field: str, value: bool) -> None:
    monkeypatch.setenv(name, raw)
    assert getattr(Settings.from_env(), field) is value


@pytest.mark.parametrize("raw", ["maybe", "22:00", "2", "enabled"])
def test_a_hostile_quiet_hours_switch_in_the_environment_names_the_variable(monkeypatch: pytest.MonkeyPatch,
                                                                             raw: str) -> None:
    monkeypatch.setenv("QUIET_HOURS_EMAIL", raw)
    with pytest.raises(ConfigurationError, match="QUIET_HOURS_EMAIL must be true or false"):
        Settings.from_env()


def test_defaults_hold_pushes_and_not_email() -> None:
    assert Settings().quiet_hours is True and Settings().quiet_hours_email is False
