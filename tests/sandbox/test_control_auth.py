"""The control API needs a token when the sandbox listens beyond loopback; the bound address is reported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from dispatcher.sandbox import SandboxClient, SandboxControlError, SandboxServer
from dispatcher.sandbox.server import is_loopback
from tests.sandbox.conftest import wait_until_serving


def test_loopback_addresses() -> None:
    assert all(is_loopback(host) for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"))
    assert not any(is_loopback(host) for host in ("0.0.0.0", "::", "", "10.0.0.1", "example.org"))


def test_a_sandbox_bound_everywhere_guards_its_control_api(tmp_path: Path) -> None:
    with SandboxServer(tmp_path, host="0.0.0.0") as sandbox:
        assert sandbox.control_token
        local = f"http://127.0.0.1:{sandbox.port}"
        for path in ("info", "faults", "records", "stats"):
            answer = httpx.get(f"{local}/_sandbox/{path}")
            assert answer.status_code == 401 and "api_key" not in answer.text
        assert httpx.delete(f"{local}/_sandbox/faults").status_code == 401
        wrong = httpx.get(f"{local}/_sandbox/info", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        with SandboxClient(local, token="nope") as stranger, pytest.raises(SandboxControlError):
            stranger.info()
        with SandboxClient(local, token=sandbox.control_token) as control:
            info = control.info()
        assert info["api_key"] == sandbox.api_key
        assert info["bound_address"] == f"0.0.0.0:{sandbox.port}"
        # The provider APIs keep their own credentials and need no control token.
        assert httpx.get(f"{local}/healthz").status_code == 200


def test_a_loopback_sandbox_needs_no_token(tmp_path: Path) -> None:
    with SandboxServer(tmp_path) as sandbox, SandboxClient(sandbox.base_url) as control:
        assert sandbox.control_token is None
        assert control.info()["bound_address"] == f"127.0.0.1:{sandbox.port}"


def test_standalone_sandbox_reports_its_real_address_and_prints_the_token_once(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "dispatcher.sandbox", "--host", "0.0.0.0", "--port", "0",
         "--records-dir", str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        token_line = process.stdout.readline()
        described = json.loads((tmp_path / "sandbox.json").read_text())
        port = int(described["bound_address"].rsplit(":", 1)[1])
        wait_until_serving(process, port)
        token = token_line.rsplit(" ", 1)[1].strip()
        unauthorized = httpx.get(f"http://127.0.0.1:{port}/_sandbox/info")
        with SandboxClient(f"http://127.0.0.1:{port}", token=token) as control:
            info = control.info()
    finally:
        process.terminate()
        process.wait(timeout=15)

    assert port > 0
    assert f"0.0.0.0:{port}" in banner and "every interface" in banner
    assert described["every_interface"] is True and described["control_token_required"] is True
    assert token not in (tmp_path / "sandbox.json").read_text()
    assert unauthorized.status_code == 401
    assert info["api_key"] == described["api_key"]
