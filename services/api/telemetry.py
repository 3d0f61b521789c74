"""HTTP metrics and request spans of the gateway.

Labels stay bounded: the route is the template (`/v1/runs/{run_id}`), never
the path a client sent; unknown methods and unmatched paths share one value.
"""

import time

from fastapi import FastAPI
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HTTP_REQUESTS = Counter(
    "trainyard_http_requests_total", "HTTP requests answered by the API", ["method", "route", "code"]
)
HTTP_DURATION = Histogram(
    "trainyard_http_request_duration_seconds", "Time to answer an HTTP request", ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Scrapes and probes are not traffic: counting them would drown the request rate.
UNCOUNTED_PATHS = frozenset({"/metrics", "/metrics/", "/healthz"})


class HttpMetricsMiddleware:
    """Counts and times every request by method, route template and status code."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in UNCOUNTED_PATHS:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        code = 500  # an exception that escapes every handler becomes a 500

        async def remember_status(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, remember_status)
        finally:
            # The router sets scope["route"] on the shared scope once a route matched.
            route = str(getattr(scope.get("route"), "path", "") or "unmatched")
            method = scope["method"] if scope["method"] in KNOWN_METHODS else "other"
            HTTP_REQUESTS.labels(method=method, route=route, code=str(code)).inc()
            HTTP_DURATION.labels(method=method, route=route).observe(time.perf_counter() - started)


def install_http_telemetry(app: FastAPI) -> None:
    """Prometheus request metrics, and a server span per request (the root of a run's trace)."""
    app.add_middleware(HttpMetricsMiddleware)
    FastAPIInstrumentor.instrument_app(
        app, excluded_urls=r"//[^/]+/metrics/?$,//[^/]+/healthz$", exclude_spans=["receive", "send"]
    )
