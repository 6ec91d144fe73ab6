"""Liveness and readiness, for the orchestrator; no token needed, nothing private answered.

``/healthz`` says the process serves; ``/readyz`` says it can answer the feed: PostgreSQL answers and
holds the feed's tables (migrations applied).
"""

from __future__ import annotations

import logging

import psycopg
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout

from dispatcher.api.errors import ErrorResponse, error_response
from dispatcher.db import get_pool

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])

#: Seconds readiness waits for a connection.
READY_TIMEOUT_SECONDS = 2.0


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"model": ErrorResponse, "description": "PostgreSQL is not usable."}})
def readyz() -> JSONResponse:
    """PostgreSQL answers and holds the feed's tables."""
    try:
        with get_pool().connection(timeout=READY_TIMEOUT_SECONDS) as conn:
            row = conn.execute("SELECT to_regclass('feed_cover') IS NOT NULL").fetchone()
    except (psycopg.Error, PoolTimeout) as error:
        log.warning("not ready", extra={"error": type(error).__name__})
        return error_response(503, "PostgreSQL is not reachable")
    if not (row and row[0]):
        return error_response(503, "the database is not migrated (run `dispatcher db migrate`)")
    return JSONResponse({"status": "ready"})
