"""Prometheus metrics with one CollectorRegistry per app (tests and workers never share state).

`MetricsMiddleware` is a pure ASGI middleware: it labels each request with its route
template (`/v1/articles/{article_id}/related`, never the raw path, so label cardinality
stays bounded), method and status.
"""
from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNMATCHED = "<unmatched>"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        disable_created_metrics()  # no *_created series: they only add noise to dashboards
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "related_http_requests", "HTTP requests by route template, method and status.",
            ["route", "method", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "related_http_request_duration_seconds", "Request latency by route template and status.",
            ["route", "method", "status"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.index_info = Gauge(
            "related_index_info", "The index version being served (value 1).", ["version"], registry=self.registry
        )
        self.index_articles = Gauge("related_index_articles", "Live articles in the served index.", registry=self.registry)
        self.index_ready = Gauge("related_index_ready", "1 when an index is loaded.", registry=self.registry)
        self.index_loaded_at = Gauge(
            "related_index_loaded_timestamp_seconds", "When the served version was loaded.", registry=self.registry
        )
        self.reload_failures = Counter(
            "related_index_reload_failures", "Versions refused on reload (corrupt or unloadable).",
            registry=self.registry,
        )
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            labels = (route, method, str(status))
            children = self._children[key] = (self.requests.labels(*labels), self.latency.labels(*labels))
        children[0].inc()
        children[1].observe(seconds)

    def index_swapped(self, index: Any) -> None:
        self.index_info.clear()
        self.index_info.labels(index.name).set(1)
        self.index_articles.set(index.size)
        self.index_ready.set(1)
        self.index_loaded_at.set(time.time())


def route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.observe(route_template(scope), scope["method"], status, time.perf_counter() - started)
