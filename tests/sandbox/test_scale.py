"""Behaviour at scale: latency as a distribution, quotas and rate limits, connection-level faults."""

from __future__ import annotations

import ssl
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dispatcher.sandbox import FaultPlan, InvalidFaultPlan, SandboxServer
from dispatcher.sandbox.faults import FCM_DEFAULT_QUOTA_PER_MINUTE
from dispatcher.sandbox.quota import Quota
from tests.sandbox.conftest import post_fcm, post_mail
from tests.sandbox.test_fcm_rules import VALID as PUSH
from tests.sandbox.test_sendgrid_rules import VALID as MAIL
from tests.test_channels_push_tls import make_certificate


def test_latency_draws_follow_the_median_and_p99() -> None:
    plan = FaultPlan(latency_median_ms=60, latency_p99_ms=400)
    draws = sorted(plan.latency_seconds() * 1000 for _ in range(40_000))

    assert statistics.median(draws) == pytest.approx(60, rel=0.05)
    assert draws[int(len(draws) * 0.99)] == pytest.approx(400, rel=0.12)
    assert FaultPlan().latency_seconds() == 0.0


def test_latency_settings_are_checked() -> None:
    for bad in ({"latency_median_ms": 60}, {"latency_median_ms": 100, "latency_p99_ms": 50},
                {"quota": -1}, {"quota_window_seconds": 0}, {"reset_rate": 2}):
        with pytest.raises(InvalidFaultPlan):
            FaultPlan.from_dict(bad)


def test_calls_are_slowed_by_the_latency_distribution(sandbox: SandboxServer) -> None:
    sandbox.faults.update("fcm", latency_median_ms=40, latency_p99_ms=120)
    took = []
    for _ in range(15):
        started = time.perf_counter()
        assert post_fcm(sandbox, PUSH).status_code == 200
        took.append(time.perf_counter() - started)

    assert statistics.median(took) >= 0.025


def test_fcm_quota_answers_resource_exhausted_with_retry_after(sandbox: SandboxServer) -> None:
    sandbox.faults.update("fcm", quota=5, quota_window_seconds=60)
    answers = [post_fcm(sandbox, PUSH) for _ in range(7)]

    assert [a.status_code for a in answers] == [200] * 5 + [429] * 2
    error = answers[-1].json()["error"]
    assert error["status"] == "RESOURCE_EXHAUSTED"
    assert error["details"][0]["errorCode"] == "QUOTA_EXCEEDED"
    assert 1 <= int(answers[-1].headers["retry-after"]) <= 12  # one call's worth of a 5-a-minute refill
    assert len(sandbox.records("fcm")) == 5


def test_fcm_default_quota_is_600000_a_minute(sandbox: SandboxServer) -> None:
    assert sandbox.faults.fcm.quota is None
    assert FCM_DEFAULT_QUOTA_PER_MINUTE == 600_000
    assert all(post_fcm(sandbox, PUSH).status_code == 200 for _ in range(30))


def test_quota_refills_continuously() -> None:
    quota = Quota()
    assert [quota.take(2, 1.0, now=0.0) for _ in range(3)] == [0.0, 0.0, pytest.approx(0.5)]
    assert quota.take(2, 1.0, now=0.5) == 0.0
    assert quota.take(2, 1.0, now=0.5) == pytest.approx(0.5)


def test_sendgrid_rate_limit_answers_429_with_rate_limit_headers(sandbox: SandboxServer) -> None:
    sandbox.faults.update("sendgrid", quota=2, quota_window_seconds=60)
    answers = [post_mail(sandbox, MAIL) for _ in range(3)]

    assert [a.status_code for a in answers] == [202, 202, 429]
    limited = answers[-1]
    assert limited.headers["x-ratelimit-limit"] == "2"
    assert limited.headers["x-ratelimit-remaining"] == "0"
    assert int(limited.headers["x-ratelimit-reset"]) > time.time()
    assert set(limited.json()["errors"][0]) == {"message", "field", "help"}


@pytest.mark.parametrize("provider", ["fcm", "sendgrid"])
def test_connection_cut_mid_response_after_the_call_was_accepted(sandbox: SandboxServer, provider: str) -> None:
    sandbox.faults.update(provider, reset_rate=1.0)
    with pytest.raises(httpx.RemoteProtocolError):
        post_fcm(sandbox, PUSH) if provider == "fcm" else post_mail(sandbox, MAIL)

    # The provider took the message; only the answer was lost (the window the ledger has to live with).
    assert len(sandbox.records(provider)) == 1


def test_slow_headers_trip_a_read_timeout(sandbox: SandboxServer) -> None:
    sandbox.faults.update("fcm", slow_headers_rate=1.0, slow_headers_ms=600)
    token = sandbox.app.tokens.issue()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{sandbox.fcm_url}/v1/projects/p/messages:send", json=PUSH,
                   headers={"Authorization": f"Bearer {token}"}, timeout=httpx.Timeout(5.0, read=0.2))
    sandbox.faults.update("fcm", slow_headers_rate=0.0)
    assert post_fcm(sandbox, PUSH).status_code == 200


@pytest.fixture
def tls_sandbox(tmp_path: Path) -> Iterator[tuple[SandboxServer, ssl.SSLContext]]:
    certificate = make_certificate(tmp_path, "sandbox")
    with SandboxServer(tmp_path / "records", ssl_certfile=certificate.cert, ssl_keyfile=certificate.key) as server:
        yield server, ssl.create_default_context(cafile=str(certificate.cert))


def test_tls_handshakes_fail_on_demand(tls_sandbox: tuple[SandboxServer, ssl.SSLContext]) -> None:
    server, trust = tls_sandbox
    assert httpx.get(f"{server.base_url}/healthz", verify=trust).status_code == 200
    server.faults.update("fcm", tls_failure_rate=1.0)
    with pytest.raises(httpx.ConnectError, match="SSL"):  # the handshake is cut: alert or EOF
        httpx.get(f"{server.base_url}/healthz", verify=trust)
    server.faults.update("fcm", tls_failure_rate=0.0)
    assert httpx.get(f"{server.base_url}/healthz", verify=trust).status_code == 200
