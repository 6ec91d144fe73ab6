"""The engine's fleet-wide rate limiter against the quota the sandbox enforces, with real processes.

Two worker processes push at full speed through the real push channel, sharing the limiter through the
real Redis, against an FCM sandbox whose quota is scaled down (30 calls per 3 s window: 600 a minute,
FCM's 600,000 a minute scaled by 1/1000). With the limiter at the quota they get no quota error; the
same fleet with the limiter at twice the quota does (so the test can fail).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import redis

from dispatcher.config import Settings
from dispatcher.sandbox import SandboxServer

ROOT = Path(__file__).resolve().parents[2]
QUOTA = 30
WINDOW_SECONDS = 3.0
QUOTA_PER_MINUTE = int(QUOTA * 60 / WINDOW_SECONDS)
PUSH_SECONDS = 6.0
BATCH = 5


def run_fleet(sandbox: SandboxServer, settings: Settings, rate_per_minute: int) -> list[dict[str, int]]:
    """Two pusher processes started together; their summaries."""
    env = {**os.environ, "REDIS_URL": settings.redis_url or "", "DATABASE_URL": settings.database_url or "",
           "FCM_ENDPOINT": sandbox.fcm_url, "FCM_CREDENTIALS": str(sandbox.service_account_path),
           "PUSH_RATE_PER_MINUTE": str(rate_per_minute)}
    start = time.time() + 4.0  # both processes import and authenticate first
    processes = [subprocess.Popen([sys.executable, "-m", "tests.sandbox.fleet_pusher", str(start),
                                   str(PUSH_SECONDS), str(BATCH)], cwd=ROOT, env=env, stdout=subprocess.PIPE)
                 for _ in range(2)]
    outputs = [process.communicate(timeout=120)[0] for process in processes]
    assert all(process.returncode == 0 for process in processes)
    return [json.loads(output) for output in outputs]


def test_two_workers_at_full_speed_stay_within_the_enforced_quota(
    sandbox: SandboxServer, settings: Settings, redis_client: redis.Redis
) -> None:
    sandbox.faults.update("fcm", quota=QUOTA, quota_window_seconds=WINDOW_SECONDS)

    within = run_fleet(sandbox, settings, QUOTA_PER_MINUTE)
    refused_within = sandbox.stats()["calls"].get("fcm.quota_exceeded", 0)
    accepted_within = sum(part["accepted"] for part in within)

    redis_client.flushdb()
    sandbox.clear()  # the bucket refills while the processes start
    over = run_fleet(sandbox, settings, QUOTA_PER_MINUTE * 2)
    refused_over = sandbox.stats()["calls"].get("fcm.quota_exceeded", 0)

    assert refused_within == 0
    assert all(part["quota_exceeded"] == 0 for part in within)
    assert all(part["accepted"] > 0 for part in within)  # both workers sent
    # At full speed: close to what the quota allows over the run (its rate plus the first burst).
    assert accepted_within >= 0.8 * QUOTA_PER_MINUTE / 60 * PUSH_SECONDS
    assert refused_over > 0
    assert sum(part["quota_exceeded"] for part in over) > 0  # and the engine saw it as a quota answer
