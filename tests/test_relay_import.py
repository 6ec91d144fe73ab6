"""Importing the relay's modules (all but its actor module) builds no broker and connects nowhere."""

from __future__ import annotations

import sys

import pytest

from tests.test_no_work_at_import import _run


@pytest.mark.parametrize("module", ["dispatcher.relay.webhooks", "dispatcher.relay.sweep", "dispatcher.relay.demo",
                                    "dispatcher.relay.provider", "dispatcher.sandbox.twilio"])
def test_importing_a_relay_module_does_no_work(module: str) -> None:
    probe = (
        f"import sys, dramatiq, {module}\n"
        "loaded = sorted(m for m in ('dispatcher.broker', 'dispatcher.actors', 'dispatcher.relay.actors')"
        " if m in sys.modules)\n"
        "assert not loaded, loaded\n"
        "assert dramatiq.broker.global_broker is None, 'a global broker was installed'\n"
    )
    result = _run([sys.executable, "-c", probe])
    assert result.returncode == 0, result.stderr
