"""A worker's push connections fit its open-file limit: the soft limit is raised, the rest kept in reserve."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest

PROBE = ("import resource; from dispatcher.channels.push.sockets import connection_budget; "
         "print(connection_budget(2048), resource.getrlimit(resource.RLIMIT_NOFILE)[0])")


def _budget_under(soft: int, hard: int) -> tuple[int, int]:
    """(the push channel's connections, the soft limit after) in a fresh process started with these limits."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                         preexec_fn=limit).stdout.split()
    return int(out[0]), int(out[1])


@pytest.mark.parametrize(("soft", "hard", "expected"), [
    (1024, 8192, (2048, 8192)),  # a common default: raised to the hard limit, all 2,048 connections fit
    (1024, 1024, (512, 1024)),   # nothing to raise: half the descriptors for FCM, the rest in reserve
    (600, 600, (88, 600)),       # a tight container still sends, on fewer connections
    (300, 300, (1, 300)),        # never zero: one connection at least
])
def test_push_connections_fit_the_open_file_limit(soft: int, hard: int, expected: tuple[int, int]) -> None:
    _, current_hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if current_hard != resource.RLIM_INFINITY and hard > current_hard:
        hard = soft = min(soft, current_hard)
        expected = (max(1, min(2048, hard - 512)), hard)
    assert _budget_under(soft, hard) == expected
