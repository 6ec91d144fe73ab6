"""Run the API with uvicorn (``dispatcher api``).

uvicorn's access log is off: a query string can hold a location. Requests are counted and timed by
route on ``/metrics`` instead. Before serving, requests stored before the feed existed (an upgrade)
are indexed; it is idempotent, and replicas starting together do not index a request twice. Each
serving process then prepares the published areas (:func:`~dispatcher.feed.lookup.warm_prepared_areas`),
so that no lookup reads an area from PostgreSQL (10,000 requests: about 1.5 s and 60 MB).
"""

from __future__ import annotations

import logging

from dispatcher.api.app import create_app
from dispatcher.config import Settings
from dispatcher.db import connect
from dispatcher.feed.index import index_missing
from dispatcher.feed.lookup import warm_prepared_areas

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
    if workers > 1:  # each worker process warms its own areas (app_from_env)
        uvicorn.run("dispatcher.api.serve:app_from_env", factory=True, host=host, port=port, workers=workers,
                    access_log=False, log_level="info")
        return
    _warm()
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="info")


def app_from_env() -> object:
    """The app built from the environment (each uvicorn worker process builds its own)."""
    app = create_app()
    _warm()
    return app


def _warm() -> None:
    with connect() as conn:
        prepared = warm_prepared_areas(conn)
    log.info("prepared the published areas", extra={"requests": prepared})
