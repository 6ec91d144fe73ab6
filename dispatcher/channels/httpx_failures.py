"""httpx's failures that leave no doubt: the request never reached the provider, so it may go again.

Both channels that speak HTTP through httpx (email; the push reference transport) sort a failed call by
this: a call that never connected is retried, any other transport failure after the request was
written is ambiguous and never sent twice (see :data:`dispatcher.ledger.UNCONFIRMED_REASON`).
"""

from __future__ import annotations

import httpx

#: No connection was made, so nothing of the request was written.
NEVER_CONNECTED: tuple[type[httpx.TransportError], ...] = (
    httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol, httpx.ProxyError)
