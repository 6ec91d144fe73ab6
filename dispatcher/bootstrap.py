"""Start-up shared by every command: settings, the embedded servers if needed, migrations on request.

Only ``dispatcher db migrate``, the worker at start (``migrate_on_worker_start``) and the demo change
the schema; read-only commands never do.

After :func:`bootstrap` the process settings and ``DATABASE_URL`` / ``REDIS_URL`` point at running
servers, so child processes (dramatiq workers) inherit them.
"""

from __future__ import annotations

import logging
import os

from dispatcher.config import Settings, get_settings, set_settings
from dispatcher.db import connect, migrate
from dispatcher.embedded import ensure_services

log = logging.getLogger(__name__)


def bootstrap(*, run_migrations: bool = False, settings: Settings | None = None) -> Settings:
    """Make the settings usable: start embedded servers for unset URLs, export them; migrate if asked."""
    current = settings or get_settings()
    embedded = not current.database_url or not current.redis_url
    ready = ensure_services(current)
    set_settings(ready)
    os.environ["DATABASE_URL"] = ready.database_url or ""
    os.environ["REDIS_URL"] = ready.redis_url or ""
    if embedded:
        log.info("using embedded servers", extra={"home": str(ready.home)})
    if run_migrations:
        with connect() as conn:
            migrate(conn)
    return ready
