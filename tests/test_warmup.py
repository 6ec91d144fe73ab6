"""Worker processes warm their channels at boot: the FCM access token is in hand before the first push."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest

from dispatcher import fanout
from dispatcher.channels.push import PushChannel
from dispatcher.config import Settings, get_settings, set_settings
from dispatcher.sandbox import SandboxServer
from dispatcher.warmup import WarmChannels, warm_up_channels


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    with SandboxServer(tmp_path_factory.mktemp("warm")) as server:
        yield server


@pytest.fixture
def process_settings(sandbox: SandboxServer) -> Iterator[Settings]:
    """The process settings pointed at the sandbox, the process's channels made afresh from them."""
    before = get_settings()
    settings = sandbox.configure(Settings())
    set_settings(settings)
    sandbox.clear()
    yield settings
    for channel in fanout.CHANNELS:
        fanout.sender(channel).close()
    set_settings(before)


def _tokens_issued(sandbox: SandboxServer) -> int:
    return int(sandbox.stats()["calls"].get("token.issued", 0))


def test_warming_a_push_channel_takes_its_access_token_once(sandbox: SandboxServer) -> None:
    sandbox.clear()
    channel = PushChannel(sandbox.configure(Settings()))
    try:
        channel.warm_up()
        channel.warm_up()  # still fresh: not exchanged again
        assert _tokens_issued(sandbox) == 1
        engine = channel._engine
        assert engine is not None and engine.token._fresh()
    finally:
        channel.close()


def test_a_cli_booted_worker_process_warms_its_channels_on_a_thread(process_settings: Settings,
                                                                     sandbox: SandboxServer) -> None:
    warm = WarmChannels()
    broker: Any = dramatiq.get_broker()
    warm.after_process_boot(broker)
    warm.after_worker_boot(broker, worker=None)  # type: ignore[arg-type]
    assert warm.thread is not None
    warm.thread.join(30)
    assert not warm.thread.is_alive() and _tokens_issued(sandbox) == 1
    push = fanout.sender(fanout.Channel.PUSH)
    assert isinstance(push, PushChannel) and push._engine is not None and push._engine.token._fresh()


def test_an_in_process_worker_is_left_cold(process_settings: Settings, sandbox: SandboxServer) -> None:
    """Tests and the demo run dramatiq.Worker in-process: no boot hook ran, nothing is fetched behind their back."""
    warm = WarmChannels()
    warm.after_worker_boot(dramatiq.get_broker(), worker=None)  # type: ignore[arg-type]
    assert warm.thread is None and _tokens_issued(sandbox) == 0


def test_a_warm_up_that_fails_only_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    before = get_settings()
    set_settings(Settings().with_(fcm_credentials=str(tmp_path / "missing.json"), sendgrid_api_key=""))
    try:
        with caplog.at_level(logging.WARNING, logger="dispatcher.warmup"):
            warm_up_channels()  # neither channel can be set up: two warnings, no exception
    finally:
        for channel in fanout.CHANNELS:
            fanout.sender(channel).close()
        set_settings(before)
    failures = [(r.__dict__["channel"], r.__dict__["error"]) for r in caplog.records]
    assert failures == [("push", "FileNotFoundError"), ("email", "ConfigurationError")]
    assert all(str(tmp_path) not in r.getMessage() for r in caplog.records)
