"""Resident import benchmark: a first load and an idempotent re-run of a generated file.

    python benchmarks/import_residents.py [--residents 1000000] [--full]

Generates ``--residents`` rows (``id,lat,lng``; with ``--full`` also email, locale, time zone, camera,
two push tokens and the three settings), creates a fresh database ``dispatcher_bench_import`` on the
server of ``DATABASE_URL`` (default ``postgresql://root@127.0.0.1:5432/postgres``), applies the
migrations and runs :func:`dispatcher.preferences.importing.import_residents` twice: into the empty
index, then the same file again (nothing changes). Prints rows per second and appends a line to
``benchmarks/results/import.md``.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from dispatcher.db import migrate
from dispatcher.preferences.importing import ImportReport, import_residents

RESULTS = Path(__file__).resolve().parent / "results" / "import.md"
DATABASE = "dispatcher_bench_import"


def generate(path: Path, residents: int, full: bool) -> None:
    """A synthetic city (around New York) with ``residents`` rows."""
    rnd = random.Random(7)
    with path.open("w") as out:
        if full:
            out.write("id,lat,lng,email,locale,time_zone,has_camera,push_tokens,community_requests,push,"
                      "email_enabled\n")
        else:
            out.write("id,lat,lng\n")
        for i in range(1, residents + 1):
            lat, lng = rnd.uniform(40.5, 40.9), rnd.uniform(-74.2, -73.7)
            if full:
                out.write(f"{i},{lat:.7f},{lng:.7f},r{i}@example.org,en-US,America/New_York,"
                          f"{'true' if i % 3 == 0 else 'false'},dev{i}:a{i:012d};dev{i}:b{i:012d},true,"
                          f"{'false' if i % 10 == 0 else 'true'},true\n")
            else:
                out.write(f"{i},{lat:.7f},{lng:.7f}\n")


def _line(label: str, report: ImportReport) -> str:
    return (f"| {label} | {report.rows_read:,} | {report.seconds:.1f} s | {report.copy_seconds:.1f} s | "
            f"{report.upsert_seconds:.1f} s | {report.rows_per_second:,.0f} | "
            f"{report.inserted:,} | {report.updated:,} | {report.unchanged:,} | {len(report.rejected)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--residents", type=int, default=1_000_000)
    parser.add_argument("--full", action="store_true", help="all optional columns, two tokens each")
    args = parser.parse_args()

    admin_url = os.environ.get("DATABASE_URL", "postgresql://root@127.0.0.1:5432/postgres")
    params = conninfo_to_dict(admin_url)
    params["dbname"] = DATABASE
    bench_url = make_conninfo(**{k: v for k, v in params.items() if v is not None})
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{DATABASE}"')
    try:
        with tempfile.TemporaryDirectory() as tmp, psycopg.connect(bench_url, autocommit=True) as conn:
            migrate(conn)
            path = Path(tmp) / "residents.csv"
            generate(path, args.residents, args.full)
            kind = "all columns" if args.full else "id,lat,lng"
            first = import_residents(conn, path)
            again = import_residents(conn, path)
            lines = [_line(f"first load, {kind}", first), _line(f"re-run, {kind}", again)]
            for line in lines:
                print(line)
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            with RESULTS.open("a") as out:
                if out.tell() == 0:
                    out.write("| run | rows | time | read+COPY | upsert | rows/s | inserted | updated | unchanged"
                              " | rejected |\n|---|---|---|---|---|---|---|---|---|---|\n")
                load = os.getloadavg()[0]
                out.write(f"<!-- {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, load {load:.1f} -->\n")
                out.write("\n".join(lines) + "\n")
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')


if __name__ == "__main__":
    main()
