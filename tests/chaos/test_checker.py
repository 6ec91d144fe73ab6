"""The chaos checker itself: it must see a miss, a duplicate, a wrong notification and a leak."""

from __future__ import annotations

from collections import Counter

from tests.chaos.checker import _channel_report, _scan


def test_channel_report_counts_misses_duplicates_and_wrong_notifications() -> None:
    report = _channel_report(expected={1, 2, 3}, notified=Counter({1: 1, 2: 3, 4: 1, 9: 1}), in_area={1, 2, 3, 4},
                             ledger_sent={1, 2, 3})
    assert (report.missed, report.duplicates) == (1, 2)
    assert (report.opted_out_notified, report.out_of_area_notified) == (1, 1)
    assert report.ledger_sent_without_record == 1


def test_scan_finds_only_real_residents_data() -> None:
    emails = {b"resident7.000123@example.test"}
    tokens = {b"chaos7:APA91b" + b"a" * 32}
    coordinates = {b"40.0123456", b"-105.2712345"}
    blob = (b'{"to": "resident7.000123@example.test", "t": "chaos7:APA91b' + b"a" * 32 +
            b'", "at": [-105.2712345, 40.0123456], "investigator": "jpark@pd.example", "area": [-105.28, 40.01]}')
    assert sorted(_scan(blob, emails, tokens, coordinates)) == ["coordinate", "coordinate", "email", "token"]
    assert _scan(b'{"request_id": "chaos-1", "resident_id": 7}', emails, tokens, coordinates) == []
