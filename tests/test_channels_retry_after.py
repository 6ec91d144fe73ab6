"""Retry-After as providers send it: delta-seconds or an HTTP-date, clamped, never an exception."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dispatcher.channels.retry_after import RETRY_AFTER_MAX_SECONDS, retry_after_seconds

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("value", "seconds"), [
    ("120", 120.0),
    (" 7 ", 7.0),
    ("1.5", 1.5),
    ("0", 0.0),
    ("-5", 0.0),
    ("Sun, 01 Mar 2026 12:01:30 GMT", 90.0),  # IMF-fixdate
    ("Sunday, 01-Mar-26 12:00:10 GMT", 10.0),  # obsolete RFC 850 form
    ("Sun Mar  1 12:00:20 2026", 20.0),  # obsolete asctime form
    ("Sun, 01 Mar 2026 11:00:00 GMT", 0.0),  # in the past
    ("Sun, 01 Mar 2099 12:00:00 GMT", RETRY_AFTER_MAX_SECONDS),
    ("1" * 400, RETRY_AFTER_MAX_SECONDS),
    (None, None),
    ("", None),
    ("soon", None),
    ("nan", None),
    ("inf", None),
    ("Sun, 99 Foo 2026 99:99:99 GMT", None),
    ("\x00", None),
])
def test_retry_after_is_read_in_both_forms_and_clamped(value: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(value, now=NOW) == seconds
