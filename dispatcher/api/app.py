"""The ASGI app of ``dispatcher api``: routers, authentication, errors, metrics.

Versioned routes (``/v1/...``) require the bearer token; health, readiness and metrics do not (they
answer nothing about residents or requests). To add endpoints, write a router under
:mod:`dispatcher.api.routes` and add it to :data:`V1_ROUTERS`: it inherits the token check, the error
shape and the metrics.
"""

from __future__ import annotations

import json
from importlib import metadata

from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from dispatcher.agencies import api as agencies_api
from dispatcher.api.auth import bearer_token_check, check_token_setting
from dispatcher.api.errors import ERROR_RESPONSES, install_error_handlers
from dispatcher.api.metrics import MetricsMiddleware, api_metrics
from dispatcher.api.routes import feed, health
from dispatcher.config import Settings, get_settings
from dispatcher.relay.webhooks import relay_routes


def _under_v1(router: APIRouter) -> APIRouter:
    """``router`` served under ``/v1`` (routers written without a prefix, such as the agencies' one)."""
    versioned = APIRouter(prefix="/v1")
    versioned.include_router(router)
    return versioned


#: Routers behind the bearer token.
V1_ROUTERS: tuple[APIRouter, ...] = (feed.router, _under_v1(agencies_api.router))

TITLE = "dispatcher API"
DESCRIPTION = ("What residents may see of published requests (the requests whose area covers a resident or "
               "a point), residents' responses, agencies' shares under pseudonyms and the map of active "
               "agencies. For the main application only (bearer token).")


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API app; raises :class:`~dispatcher.errors.ConfigurationError` without a token outside
    insecure development mode."""
    settings = settings or get_settings()
    check_token_setting(settings.api_token, insecure_dev=settings.api_insecure_dev)
    app = FastAPI(title=TITLE, description=DESCRIPTION, version=_version(), docs_url=None, redoc_url=None)
    install_error_handlers(app)
    metrics = api_metrics()
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    require_token = bearer_token_check(settings.api_token)
    for router in V1_ROUTERS:
        app.include_router(router, dependencies=[Depends(require_token)], responses=ERROR_RESPONSES)
    app.include_router(health.router)
    # Contact Me: Twilio's webhooks carry Twilio's signature and the app-facing relay routes the relay's own
    # token (RELAY_API_TOKEN), so they sit beside the token-checked routers, not behind them.
    app.router.routes.extend(relay_routes())

    @app.get("/metrics", tags=["health"], response_class=Response)
    def prometheus_metrics() -> Response:
        """Request counts and latency by route (Prometheus text format)."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def openapi_document(settings: Settings | None = None) -> dict[str, object]:
    """The OpenAPI document of the app (what ``docs/openapi.json`` holds)."""
    base = settings or get_settings()
    app = create_app(base.with_(api_token=None, api_insecure_dev=True))
    document: dict[str, object] = app.openapi()
    return document


def openapi_text(settings: Settings | None = None) -> str:
    """The OpenAPI document as the JSON text kept in ``docs/openapi.json``."""
    return json.dumps(openapi_document(settings), indent=2, sort_keys=True) + "\n"


def _version() -> str:
    try:
        return metadata.version("dispatcher")
    except metadata.PackageNotFoundError:
        return "0"
