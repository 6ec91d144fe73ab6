"""Request counts and latency by route, for ``GET /metrics``.

Routes are labelled by their template (``/v1/residents/{resident_id}/requests``), never the path
sent, so a label never holds an id and the series stay few; an unknown path counts as ``unmatched``.
Each app has its own registry: the API runs in one process, beside no dramatiq worker.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Buckets for one API call, from an index probe to a slow page of large areas.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
#: Methods labelled as they are; any other (a client can send any token) counts as ``other``.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@dataclass(frozen=True)
class ApiMetrics:
    """The API's series, in their own registry."""

    registry: CollectorRegistry
    requests: Counter
    latency: Histogram


def api_metrics() -> ApiMetrics:
    """A fresh registry with the API's series."""
    registry = CollectorRegistry(auto_describe=True)
    requests = Counter("dispatcher_api_requests", "API requests answered, by route and status",
                       ["method", "route", "status"], registry=registry)
    latency = Histogram("dispatcher_api_request_seconds", "Time to answer an API request, by route",
                        ["method", "route"], buckets=LATENCY_BUCKETS, registry=registry)
    return ApiMetrics(registry, requests, latency)


class MetricsMiddleware:
    """Counts and times every HTTP request by method, route template and status."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            method = str(scope.get("method", ""))
            method = method if method in _METHODS else "other"
            route = _route_template(scope)
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - started)


def _route_template(scope: Scope) -> str:
    """The template of the route the router matched (it records the route in the scope)."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else "unmatched"
