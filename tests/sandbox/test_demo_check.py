"""The demo's summary check reads the whole record, so it holds beyond the sandbox's in-memory cap."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import redis
from rich.console import Console

import dispatcher.sandbox.server as sandbox_server
from dispatcher.config import Settings
from dispatcher.demo import run_demo

#: Far below the pushes and emails the demo town gets, as 100,000 is below a 300,000-resident town's.
MEMORY_CAP = 40


class CappedSandbox(sandbox_server.SandboxServer):
    """The demo's sandbox keeping only a few records in memory (the files keep everything)."""

    def __init__(self, records_dir: str | Path, *args: Any, **kwargs: Any) -> None:
        super().__init__(records_dir, *args, **{**kwargs, "memory_limit": MEMORY_CAP})


def test_demo_check_holds_beyond_the_in_memory_cap(settings: Settings, redis_client: redis.Redis,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox_server, "SandboxServer", CappedSandbox)
    out = io.StringIO()

    ok = run_demo(600, seed=7, console=Console(file=out, width=200))

    report = out.getvalue()
    recorded = int(report.split("pushes recorded: ")[1].split(" ")[0].replace(",", ""))
    assert recorded > MEMORY_CAP, report
    assert "✗" not in report, report
    assert ok, report
