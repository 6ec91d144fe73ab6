"""The chaos suite, small enough for CI: 5,000 residents, two worker processes, SIGKILLs, a Redis
restart that loses every queued message, dropped PostgreSQL connections and a 429/5xx storm.

The long version runs by hand: ``python -m tests.chaos.run --recipients 50000 --minutes 5``.
"""

from __future__ import annotations

from pathlib import Path

from dispatcher.config import Settings
from tests.chaos.harness import ChaosConfig, run_chaos


def test_every_resident_is_notified_once_through_kills_restarts_drops_and_storms(
    settings: Settings, tmp_path: Path
) -> None:
    assert settings.database_url
    config = ChaosConfig(recipients=5_000, workers=2, threads=4, kills=3, redis_restarts=1, pg_drops=1, storms=1,
                         target_seconds=25.0, seed=11, workdir=tmp_path)
    run, report = run_chaos(config, settings.database_url, progress=print)
    print(report.render())
    assert run.finished, f"the request did not complete: {run.final_states}"
    assert report.kills == 3 and report.redis_restarts == 1 and report.pg_drops == 1 and report.storms == 1
    assert report.channels["push"].expected > 3_000 and report.channels["email"].expected > 3_000
    assert report.missed == 0
    assert report.wrongly_notified == 0
    assert report.duplicates <= report.in_flight_at_disruptions
    assert report.privacy_findings == []
    assert all(c.ledger_sent_without_record == 0 for c in report.channels.values())
