"""Hostile command lines: every command ends with one clear line on stderr and exit code 2, never a
traceback, and text in brackets (``[longitude, latitude]``, a path with ``[/x]``) is printed as it is.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from shapely.geometry import mapping
from typer.testing import CliRunner

from dispatcher.cli import app
from dispatcher.config import Settings, set_settings
from dispatcher.targeting.shapes import thin_comb, thin_strip
from tests.factories import SQUARE, request_payload

Make = Callable[[Path], list[str]]


def _write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def _request_file(tmp: Path, name: str = "request.json", **overrides: Any) -> Path:
    return _write(tmp / name, json.dumps(request_payload(**overrides)))


_NESTED = "[" * 100_000 + "]" * 100_000
_SWAPPED = [[lat, lng] for lng, lat in SQUARE]
_THIN = mapping(thin_strip())
_COMB = mapping(thin_comb(10))
_CRS_AREA = json.dumps({"type": "Polygon", "coordinates": [SQUARE], "crs": {"type": "name"}})

#: (name, arguments given a temporary directory, what the error line must contain)
HOSTILE_COMMANDS: list[tuple[str, Make, str]] = [
    ("publish: swapped area, bracketed hint kept",
     lambda t: ["publish", str(_request_file(t, area={"type": "Polygon", "coordinates": [_SWAPPED]}))],
     "[longitude, latitude]"),
    ("publish: a key with markup", lambda t: ["publish", str(_write(t / "r.json", json.dumps(
        {**request_payload(), "[/x]": 1})))], "[/x]"),
    ("publish: a path with markup", lambda t: ["publish", str(t / "[/x]" / "[bold]missing.json")], "[/x]"),
    ("publish: missing file", lambda t: ["publish", str(t / "nope.json")], "nope.json"),
    ("publish: a directory", lambda t: ["publish", str(t)], "directory"),
    ("publish: deeply nested JSON", lambda t: ["publish", str(_write(t / "deep.json", _NESTED))], "nest"),
    ("publish: not UTF-8", lambda t: ["publish", str(_write(t / "latin1.json", '{"details": "caf\xe9"}'.encode(
        "latin-1")))], "UTF-8"),
    ("publish: not JSON", lambda t: ["publish", str(_write(t / "bad.json", "{not json"))], "JSON"),
    ("publish: a JSON list", lambda t: ["publish", str(_write(t / "list.json", "[1, 2]"))], "object"),
    ("publish: published in 9999", lambda t: ["publish", str(_write(t / "far.json", json.dumps(
        {**request_payload(), "published_at": "9999-12-31T23:59:00+00:00"})))], "published_at"),
    ("publish: a 0.1 m strip from pole to pole", lambda t: ["publish", str(_request_file(
        t, area=_THIN))], "boundary too long for its area"),
    ("target: a 0.1 m strip, explained", lambda t: ["target", str(_write(t / "thin.geojson", json.dumps(_THIN))),
                                                   "--explain"], "boundary too long for its area"),
    ("preview: a comb of 40 thin teeth", lambda t: ["preview", str(_write(t / "comb.geojson", json.dumps(
        _COMB))), "--no-density", "--geojson", str(t / "out.geojson")], "boundary too long for its area"),
    ("target: crs", lambda t: ["target", str(_write(t / "crs.geojson", _CRS_AREA))], "crs"),
    ("target: missing area file", lambda t: ["target", str(t / "[red]gone.geojson")], "[red]gone.geojson"),
    ("target: area not UTF-8", lambda t: ["target", str(_write(t / "a.geojson", b"\xff\xfe{"))], "UTF-8"),
    ("preview: deeply nested", lambda t: ["preview", str(_write(t / "deep.geojson", _NESTED)), "--no-density",
                                          "--geojson", str(t / "out.geojson")], "nest"),
    ("webhooks: no key", lambda t: ["webhooks"], "SENDGRID_WEBHOOK_PUBLIC_KEY"),
    ("residents import: missing file", lambda t: ["residents", "import", str(t / "[/x]residents.csv")],
     "residents.csv"),
    ("dead-letters: unknown id", lambda t: ["dead-letters", "--retry", "[/x]nothing"], "[/x]nothing"),
]


@pytest.fixture
def cli_settings(settings: Settings, redis_client: redis.Redis) -> Any:
    """The test settings without a webhook key, restored afterwards (commands may replace them)."""
    set_settings(settings.with_(sendgrid_webhook_public_key=None))
    yield settings
    set_settings(settings)


@pytest.mark.parametrize(("name", "make", "named"), HOSTILE_COMMANDS, ids=[row[0] for row in HOSTILE_COMMANDS])
def test_every_command_fails_with_one_clean_line_and_exit_code_2(
    name: str, make: Make, named: str, tmp_path: Path, cli_settings: Settings
) -> None:
    result = CliRunner().invoke(app, make(tmp_path))
    assert result.exit_code == 2, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert named.lower() in lines[0].lower(), lines[0]
    assert "Traceback" not in result.output


def test_a_valid_request_published_after_hostile_ones_still_goes_through(
    tmp_path: Path, cli_settings: Settings, redis_client: redis.Redis
) -> None:
    runner = CliRunner()
    for _, make, _ in HOSTILE_COMMANDS[:10]:
        assert runner.invoke(app, make(tmp_path)).exit_code == 2
    assert redis_client.llen("dispatcher:requests") == 0  # nothing hostile reached the queue
    result = runner.invoke(app, ["publish", str(_request_file(tmp_path, "good.json", request_id="good-1"))])
    assert result.exit_code == 0, result.output
    assert "enqueued request good-1" in result.stdout
    assert redis_client.llen("dispatcher:requests") == 1


def test_a_worker_with_an_unknown_log_level_fails_before_starting(cli_settings: Settings) -> None:
    result = CliRunner().invoke(app, ["worker"], env={"DISPATCHER_LOG_LEVEL": "[/x]chatty"})
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "DISPATCHER_LOG_LEVEL" in lines[0] and "[/X]CHATTY" in lines[0], result.stderr
