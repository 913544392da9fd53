"""Prometheus metrics, per app in one process and summed over workers with `--workers N`.

In one process each app has its own CollectorRegistry (tests and apps never share state).
prometheus_client decides at import whether values live in memory or, when
PROMETHEUS_MULTIPROC_DIR is set (`related serve --workers 2` sets it, see `worker_metrics_dir`),
in one file per worker process; `Metrics` follows that decision, and then /metrics reads all
workers' files, so whichever worker answers a scrape shows the same totals:

* counters and histograms: the sum over workers, dead ones included (totals never drop);
* `related_index_ready`: the minimum over live workers (1 when every worker serves an index);
* `related_index_articles`: that of the worker that loaded last (absent until one has loaded);
* `related_index_loaded_timestamp_seconds`: the latest load of any live worker;
* `related_index_info{version}`: the versions some live worker serves, each once.

`MetricsMiddleware` is a pure ASGI middleware: it labels each request with its route
template (`/v1/articles/{article_id}/related`, never the raw path, so label cardinality
stays bounded), method and status.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import psutil
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, multiprocess, values
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNMATCHED = "<unmatched>"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
INDEX_INFO = "related_index_info"


@contextlib.contextmanager
def worker_metrics_dir(workers: int) -> Iterator[None]:
    """Give the workers `related serve` starts a PROMETHEUS_MULTIPROC_DIR: the operator's, else a private one.

    One worker needs none. The private directory is new and empty at start and removed at exit, so
    no counts carry over from an earlier run; an operator's own directory is used as it is.
    """
    operator_dir = os.environ.get(MULTIPROC_ENV)
    if operator_dir:
        Path(operator_dir).mkdir(parents=True, exist_ok=True)
    if workers == 1 or operator_dir:
        yield
        return
    directory = tempfile.mkdtemp(prefix="related-metrics-")
    os.environ[MULTIPROC_ENV] = directory
    try:
        yield
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(directory, ignore_errors=True)


def multiprocess_dir() -> Path | None:
    """The workers' metric files, when prometheus_client keeps values there; None when in memory.

    prometheus_client chose at import, so a PROMETHEUS_MULTIPROC_DIR set later (by a test, say)
    changes nothing here either.
    """
    if values.ValueClass is values.MutexValue:
        return None
    return Path(os.environ[MULTIPROC_ENV])


def forget_dead_workers(directory: Path) -> None:
    """Drop the live-gauge files of workers killed without a shutdown (uvicorn starts new ones)."""
    for path in directory.glob("gauge_live*_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        if not psutil.pid_exists(pid):
            multiprocess.mark_process_dead(pid, str(directory))


class WorkersCollector(Collector):
    """All workers' files merged; versions no live worker serves (value 0: files cannot forget a label) left out."""

    def __init__(self, directory: Path) -> None:
        self.files = multiprocess.MultiProcessCollector(None, str(directory))

    def collect(self) -> Iterable[Metric]:
        for metric in self.files.collect():
            if metric.name == INDEX_INFO:
                metric.samples = [sample for sample in metric.samples if sample.value]
            yield metric


class Metrics:
    def __init__(self) -> None:
        disable_created_metrics()  # no *_created series: they only add noise to dashboards
        own = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "related_http_requests", "HTTP requests by route template, method and status.",
            ["route", "method", "status"], registry=own,
        )
        self.latency = Histogram(
            "related_http_request_duration_seconds", "Request latency by route template and status.",
            ["route", "method", "status"], buckets=LATENCY_BUCKETS, registry=own,
        )
        self.index_info = Gauge(
            INDEX_INFO, "The index version being served (value 1).", ["version"], registry=own,
            multiprocess_mode="livemax",
        )
        self.index_articles = Gauge(
            "related_index_articles", "Live articles in the served index.", registry=own,
            multiprocess_mode="livemostrecent",
        )
        self.index_ready = Gauge(
            "related_index_ready", "1 when an index is loaded.", registry=own, multiprocess_mode="livemin"
        )
        self.index_loaded_at = Gauge(
            "related_index_loaded_timestamp_seconds", "When the served version was loaded.", registry=own,
            multiprocess_mode="livemax",
        )
        self.reload_failures = Counter(
            "related_index_reload_failures", "Versions refused on reload (corrupt or unloadable), counted per worker.",
            registry=own,
        )
        self.directory = multiprocess_dir()
        self.registry = own  # what /metrics shows
        if self.directory is not None:
            self.registry = CollectorRegistry()
            self.registry.register(WorkersCollector(self.directory))
        self._version: str | None = None
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        """A worker's lifetime: forget workers that died unannounced, and announce this one's end."""
        if self.directory is None:
            yield
            return
        forget_dead_workers(self.directory)
        try:
            yield
        finally:
            multiprocess.mark_process_dead(os.getpid(), str(self.directory))

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            labels = (route, method, str(status))
            children = self._children[key] = (self.requests.labels(*labels), self.latency.labels(*labels))
        children[0].inc()
        children[1].observe(seconds)

    def index_swapped(self, index: Any) -> None:
        previous, self._version = self._version, index.name
        if previous is not None and previous != index.name:
            if self.directory is None:
                self.index_info.remove(previous)
            else:
                self.index_info.labels(previous).set(0)  # WorkersCollector leaves it out
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
