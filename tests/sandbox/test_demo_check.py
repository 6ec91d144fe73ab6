"""The demo's summary check reads the whole record, so it holds beyond the sandbox's in-memory cap; it
checks one request of each kind and the Contact Me conversation."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from rich.console import Console

import dispatcher.sandbox.server as sandbox_server
from dispatcher.config import Settings, set_settings
from dispatcher.db.pool import close_pool
from dispatcher.demo import DEMO_DATABASE, run_demo

#: Far below the pushes and emails the demo town gets, as 100,000 is below a 300,000-resident town's.
MEMORY_CAP = 40


class CappedSandbox(sandbox_server.SandboxServer):
    """The demo's sandbox keeping only a few records in memory (the files keep everything)."""

    def __init__(self, records_dir: str | Path, *args: Any, **kwargs: Any) -> None:
        super().__init__(records_dir, *args, **{**kwargs, "memory_limit": MEMORY_CAP})


@pytest.fixture
def demo_run(settings: Settings, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The demo in this process, and afterwards this process's settings, environment and pool as before
    (the demo points them at its own database)."""
    for name in ("DATABASE_URL", "REDIS_URL"):
        monkeypatch.setenv(name, os.environ.get(name, ""))
    monkeypatch.setattr(sandbox_server, "SandboxServer", CappedSandbox)
    close_pool()
    try:
        yield
    finally:
        close_pool()
        set_settings(settings)
        assert settings.database_url
        with psycopg.connect(settings.database_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{DEMO_DATABASE}" WITH (FORCE)')


@pytest.mark.usefixtures("demo_run")
def test_demo_check_holds_beyond_the_in_memory_cap() -> None:
    out = io.StringIO()

    ok = run_demo(600, seed=7, console=Console(file=out, width=200))

    report = out.getvalue()
    recorded = int(report.split("pushes recorded: ")[1].split(" ")[0].replace(",", ""))
    assert recorded > MEMORY_CAP, report
    assert "✗" not in report, report
    assert ok, report
    # One request of each kind, each checked against the oracle, and the Contact Me conversation.
    for label in ("community request", "video request", "safety alert"):
        for check in ("completed", "every expected token got exactly one push", "no push to anyone else",
                      "every expected address got exactly one email", "no email to anyone else"):
            assert f"✓ {label}: {check}" in report, report
        expected = int(report.split(f"{label} demo-")[1].split("in its audience")[1].split(": ")[1].split()[0]
                       .replace(",", ""))
        assert expected > 0, report
    assert "✓ nothing was sent for anything but the demo's requests" in report, report
    assert "✓ Contact Me: each side received the other's messages" in report, report
    assert "✓ Contact Me: no real number in anything either side received" in report, report
