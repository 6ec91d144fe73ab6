"""How many connections a worker process may hold to FCM: its open-file limit, raised to the hard one.

Calls in flight are sockets. Many hosts start processes with a soft limit of 1,024 open files, which a
push channel at FCM's quota and 100 ms of latency (about 1,300 calls in flight) would exhaust, and then
every new connection, database and Redis ones included, fails. So the soft limit is raised to the hard
one once per process (as servers commonly do), and the push channel keeps to what is left after a
reserve for everything else.
"""

from __future__ import annotations

import resource
from functools import cache

#: Descriptors kept for the rest of the process: database and Redis pools, files, the email channel.
RESERVED = 512


@cache
def open_file_limit() -> int:
    """The process's soft limit on open files, raised to the hard limit first (once per process)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # a container may refuse: keep the soft limit
            pass
    return soft


def connection_budget(wanted: int) -> int:
    """``wanted`` connections, or as many as the open-file limit leaves after :data:`RESERVED` (at least 1)."""
    return max(1, min(wanted, open_file_limit() - RESERVED))
