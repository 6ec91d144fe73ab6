"""One JSON shape for every error the API answers, whatever raised it.

``{"error": {"status": 422, "code": "invalid_parameter", "message": "...", "details": [...]}}``: the
main application handles one shape for a missing token, an unknown route, a bad parameter or a fault.
Messages name the parameter and the rule, never the value sent (a value may be a location).
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from dispatcher.errors import UnknownResident
from dispatcher.feed.errors import InvalidCursor, InvalidLocation, UnknownRequest

log = logging.getLogger(__name__)


class ErrorDetail(BaseModel):
    """One bad parameter: where it is (``query.lat``) and what is wrong with it."""

    field: str
    problem: str


class ErrorBody(BaseModel):
    """What went wrong."""

    status: int
    code: str
    message: str
    details: list[ErrorDetail] = []


class ErrorResponse(BaseModel):
    """Every error the API answers."""

    error: ErrorBody


#: Error responses documented on every route of the OpenAPI document.
ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorResponse, "description": "Missing or wrong bearer token."},
    422: {"model": ErrorResponse, "description": "A parameter is malformed or out of range."},
    500: {"model": ErrorResponse, "description": "The service failed; nothing was changed."},
    503: {"model": ErrorResponse, "description": "Busy (no database connection free in time); retry."},
}

_CODES = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
          422: "invalid_parameter", 500: "internal_error", 503: "unavailable"}


def error_response(status: int, message: str, *, details: list[ErrorDetail] | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """The JSON error for ``status``."""
    code = _CODES.get(status) or HTTPStatus(status).phrase.lower().replace(" ", "_")
    body = ErrorResponse(error=ErrorBody(status=status, code=code, message=message, details=details or []))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error of ``app`` in the one shape."""

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        message = error.detail if isinstance(error.detail, str) else HTTPStatus(error.status_code).phrase
        return error_response(error.status_code, message, headers=dict(error.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def invalid_parameter(request: Request, error: RequestValidationError) -> JSONResponse:
        details = [ErrorDetail(field=".".join(str(part) for part in item.get("loc", ())),
                               problem=str(item.get("msg", "invalid")))
                   for item in error.errors()]
        return error_response(422, "a parameter is malformed or out of range", details=details)

    @app.exception_handler(InvalidCursor)
    async def invalid_cursor(request: Request, error: InvalidCursor) -> JSONResponse:
        return error_response(422, "a parameter is malformed or out of range",
                              details=[ErrorDetail(field="query.cursor", problem=str(error))])

    @app.exception_handler(InvalidLocation)
    async def invalid_location(request: Request, error: InvalidLocation) -> JSONResponse:
        return error_response(422, "a parameter is malformed or out of range",
                              details=[ErrorDetail(field="query", problem=str(error))])

    @app.exception_handler(UnknownResident)
    async def unknown_resident(request: Request, error: UnknownResident) -> JSONResponse:
        return error_response(404, "no such resident")

    @app.exception_handler(UnknownRequest)
    async def unknown_request(request: Request, error: UnknownRequest) -> JSONResponse:
        return error_response(404, "no such published request")

    @app.exception_handler(PoolTimeout)
    async def busy(request: Request, error: PoolTimeout) -> JSONResponse:
        log.warning("API busy: no database connection free", extra={"error": type(error).__name__})
        return error_response(503, "the service is busy; try again", headers={"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception) -> JSONResponse:
        log.error("API request failed", extra={"error": type(error).__name__})
        return error_response(500, "the service failed; try again")
