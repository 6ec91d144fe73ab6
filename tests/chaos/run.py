"""Run the chaos suite by hand and print the report.

    DATABASE_URL=postgresql://root@127.0.0.1:5432/test \
        python -m tests.chaos.run --recipients 50000 --minutes 5

Uses the PostgreSQL server of ``DATABASE_URL`` for a private database (created and dropped), its own
redis-server, the sandbox providers in this process and real worker processes. Exits non-zero if the
checker finds anyone missed, anyone wrongly notified, more duplicates than rows in flight at the
disruptions, or personal data in Redis or the logs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipients", type=int, default=50_000)
    parser.add_argument("--minutes", type=float, default=5.0, help="how long the fan-out is stretched over")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--kills", type=int, default=0, help="SIGKILLs (default: one every 20 seconds)")
    parser.add_argument("--redis-restarts", type=int, default=0, help="default: one per 2 minutes, at least 1")
    parser.add_argument("--pg-drops", type=int, default=0, help="default: one per minute")
    parser.add_argument("--storms", type=int, default=0, help="default: one per minute")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:1/0")  # only for imports; the run uses its own Redis
    base_url = os.environ.get("DATABASE_URL")
    if not base_url:
        print("set DATABASE_URL to a PostgreSQL server where a database may be created", file=sys.stderr)
        return 2
    from tests.chaos.harness import ChaosConfig, run_chaos

    seconds = args.minutes * 60
    config = ChaosConfig(
        recipients=args.recipients, workers=args.workers, threads=args.threads,
        kills=args.kills or max(3, int(seconds / 20)),
        redis_restarts=args.redis_restarts or max(1, int(seconds / 120)),
        pg_drops=args.pg_drops or max(1, int(seconds / 60)),
        storms=args.storms or max(1, int(seconds / 60)),
        storm_seconds=10.0, target_seconds=seconds * 0.8, lease_seconds=10,
        push_batch=250, email_batch=500, timeout_seconds=seconds * 3, seed=args.seed, workdir=args.workdir,
    )
    _, report = run_chaos(config, base_url, progress=lambda text: print(text, flush=True))
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.render())
    return 0 if report.ok() else 1


if __name__ == "__main__":
    raise SystemExit(main())
