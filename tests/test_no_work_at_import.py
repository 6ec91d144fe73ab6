"""Importing the engine's modules does no work: no broker built, no connection, no migration.

Each check runs in a fresh interpreter with ``REDIS_URL`` at a closed port and ``DATABASE_URL`` at a
closed one, so any connection attempt at import would fail, and the broker modules must stay unloaded.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CLOSED = {"REDIS_URL": "redis://127.0.0.1:1/0", "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **CLOSED}
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("module", [
    "dispatcher",
    "dispatcher.contract",
    "dispatcher.targeting",
    "dispatcher.targeting.match",
    "dispatcher.lifecycle",
    "dispatcher.queues",
    "dispatcher.ops.status",
    "dispatcher.ops.queues",
    "dispatcher.cli",
])
def test_importing_a_module_builds_no_broker(module: str) -> None:
    probe = (
        f"import sys, dramatiq, {module}\n"
        "loaded = sorted(m for m in ('dispatcher.broker', 'dispatcher.actors') if m in sys.modules)\n"
        "assert not loaded, loaded\n"
        "assert dramatiq.broker.global_broker is None, 'a global broker was installed'\n"
    )
    result = _run([sys.executable, "-c", probe])
    assert result.returncode == 0, result.stderr


def test_status_help_needs_no_server() -> None:
    result = _run([str(Path(sys.executable).parent / "dispatcher"), "status", "--help"])
    assert result.returncode == 0, result.stderr
    assert "Queues, workers" in result.stdout


def test_the_actors_build_the_broker_on_import_without_connecting() -> None:
    probe = (
        "import dramatiq, dispatcher.actors as actors\n"
        "assert dramatiq.get_broker() is actors.broker\n"
        "names = [type(m).__name__ for m in actors.broker.middleware]\n"
        "assert names.index('DeadLetterReasons') < names.index('Retries'), names\n"
        "assert names[0] == 'RequestContext' and 'ReconcilerMiddleware' in names, names\n"
        # prometheus_client chooses its multiprocess mode when imported: a worker imports it after boot.
        "import sys, dispatcher.worker_entry\n"
        "assert 'prometheus_client' not in sys.modules\n"
    )
    result = _run([sys.executable, "-c", probe])
    assert result.returncode == 0, result.stderr


def test_pure_tests_start_no_server(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env["DISPATCHER_TEST_HOME"] = str(home)
    pure = ["tests/test_targeting_area.py", "tests/test_contract.py"]
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *pure], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-2000:]
    assert not home.exists(), "an embedded server was started for tests that need none"
