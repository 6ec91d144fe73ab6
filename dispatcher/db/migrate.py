"""Plain SQL migrations, applied in file-name order and recorded in ``schema_migrations``.

A migration runs in one transaction with its record, so a failed one leaves nothing half-applied.
An advisory lock keeps two processes from migrating at once.
"""

from __future__ import annotations

from importlib import resources

from dispatcher.db.types import Conn

MIGRATIONS_PACKAGE = "dispatcher.db.migrations"
_LOCK_KEY = 0x64697370  # "disp"


def available_migrations() -> list[tuple[str, str]]:
    """(name, sql) for every migration shipped with the package, in order."""
    folder = resources.files(MIGRATIONS_PACKAGE)
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return [(f.name.removesuffix(".sql"), f.read_text(encoding="utf-8")) for f in files]


def migrate(conn: Conn) -> list[str]:
    """Apply every migration not yet recorded; return the names applied now."""
    conn.autocommit = True
    conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        done = {row[0] for row in conn.execute("SELECT name FROM schema_migrations")}
        applied: list[str] = []
        for name, sql in available_migrations():
            if name in done:
                continue
            with conn.transaction():
                conn.execute(sql.encode())
                conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (name,))
            applied.append(name)
        return applied
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
