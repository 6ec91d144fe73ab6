"""Fixtures shared by the sandbox tests: one sandbox server per module, reset before each test."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from dispatcher.sandbox import SandboxServer


@pytest.fixture(scope="module")
def sandbox_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    with SandboxServer(tmp_path_factory.mktemp("sandbox")) as server:
        yield server


@pytest.fixture
def sandbox(sandbox_server: SandboxServer) -> SandboxServer:
    """The module's sandbox with no faults and no records."""
    sandbox_server.faults.reset()
    sandbox_server.clear()
    return sandbox_server


def post_fcm(sandbox: SandboxServer, body: Any, project: str = "p") -> httpx.Response:
    """A raw ``messages:send`` call with a bearer token the sandbox issued."""
    headers = {"Authorization": f"Bearer {sandbox.app.tokens.issue()}"}
    return httpx.post(f"{sandbox.fcm_url}/v1/projects/{project}/messages:send", json=body, headers=headers)


def post_mail(sandbox: SandboxServer, body: Any) -> httpx.Response:
    """A raw ``/v3/mail/send`` call with the sandbox's API key."""
    return httpx.post(f"{sandbox.sendgrid_url}/v3/mail/send", json=body,
                      headers={"Authorization": f"Bearer {sandbox.api_key}"})


def wait_until_serving(process: subprocess.Popen[Any], port: int, timeout: float = 30.0) -> None:
    """Wait for a sandbox started as its own process to answer on ``port``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, "sandbox did not start"
        time.sleep(0.1)
