"""Run the API with uvicorn (``dispatcher api``).

uvicorn's access log is off: a query string can hold a location. Requests are counted and timed by
route on ``/metrics`` instead. Before serving, requests stored before the feed existed (an upgrade)
are indexed; it is idempotent, and replicas starting together do not index a request twice.
"""

from __future__ import annotations

import logging

from dispatcher.api.app import create_app
from dispatcher.config import Settings
from dispatcher.db import connect
from dispatcher.feed.index import index_missing

log = logging.getLogger(__name__)


def run_api(host: str = "127.0.0.1", port: int = 8900, *, workers: int = 1, settings: Settings | None = None) -> None:
    """Serve until interrupted."""
    import uvicorn

    app = create_app(settings)  # refuses to start without a token before binding the port
    with connect() as conn:
        indexed = index_missing(conn)
        conn.commit()
    if indexed:
        log.info("indexed requests stored before the feed", extra={"requests": indexed})
    if workers > 1:
        uvicorn.run("dispatcher.api.serve:app_from_env", factory=True, host=host, port=port, workers=workers,
                    access_log=False, log_level="info")
        return
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="info")


def app_from_env() -> object:
    """The app built from the environment (each uvicorn worker process builds its own)."""
    return create_app()
