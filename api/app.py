"""`create_app(settings)`: assembles settings, the index holder, middleware, error handlers and routers.

Nothing happens at import time; uvicorn calls the factory (`related serve` uses
`uvicorn.run("api.app:create_app", factory=True)`). The index is loaded by a background
task once the app starts, so the process answers /healthz (and /readyz 503) while it loads
and picks up a first version built after start without a restart.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from fastapi import FastAPI

from api.cache import ResponseCache
from api.docs import install_offline_docs
from api.errors import install_error_handlers
from api.head import HeadAsGetMiddleware
from api.holder import IndexHolder, load_version
from api.limits import BodySizeLimitMiddleware, RequestTimeoutMiddleware
from api.metrics import Metrics, MetricsMiddleware
from api.openapi import serve_language_aware_openapi
from api.render import ServedRenderer
from api.routes import admin, health, related, sidebar
from api.served_lists import ServedListsMiddleware
from api.settings import Settings
from index.threads import single_threaded_kernels

log = logging.getLogger("related.api")

DESCRIPTION = """
"More like this" lists for news articles, from a TF-IDF + FAISS index built by `related build`.

* `GET /v1/articles/{id}/related`: a stored article's list (cacheable: ETag + Cache-Control).
* `GET /v1/articles/{id}/related.html`: the same list as an HTML fragment; `/widget.js` puts it in a page.
* `POST /v1/related`: a list for an unsaved draft.
* `POST /v1/admin/articles`: publish, edit or delete articles now (admin token).
* Errors are always JSON: `{"error": {"code": "...", "message": "..."}}`.
"""
TAGS = [
    {"name": "related", "description": "Related-article lists."},
    {"name": "sidebar", "description": "The related list as HTML, and the script that embeds it in a page."},
    {"name": "operations", "description": "Health, readiness, index status and metrics."},
    {"name": "admin", "description": "Operator actions; need `Authorization: Bearer $RELATED_ADMIN_TOKEN`."},
]


def configure_logging() -> None:
    """Reload events are INFO; make them visible under uvicorn (which configures only its own loggers)."""
    logger = logging.getLogger("related.api")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    if not logging.getLogger().handlers and not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)


RANKING_THREADS = 2


def create_app(settings: Settings | None = None, *, holder: IndexHolder | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging()
    holder = holder or IndexHolder(
        settings.data_dir, loader=partial(load_version, prefault_bytes=settings.prefault_bytes)
    )
    metrics = Metrics()
    cache = ResponseCache(settings.response_cache_size)
    holder.on_swap(cache.clear)
    holder.on_swap(lambda index: setattr(app.state, "renderer", ServedRenderer(index)))
    holder.on_swap(metrics.index_swapped)
    holder.on_failure(lambda _message: metrics.reload_failures.inc())

    # Drafts (~10 ms: vectorizing plus a FAISS search) run off the event loop on a small pool of
    # their own; the default 40-thread pool made concurrent requests fight over the GIL.
    ranker = ThreadPoolExecutor(
        max_workers=RANKING_THREADS, thread_name_prefix="rank", initializer=single_threaded_kernels
    )

    # Updates posted to /v1/admin/articles run one at a time (they hold the build lock anyway).
    updater = ThreadPoolExecutor(max_workers=1, thread_name_prefix="update", initializer=single_threaded_kernels)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        single_threaded_kernels()  # GET requests rank on the event loop's thread
        with metrics.serving():
            async with holder.watching(settings.reload_check_seconds, load_first=settings.workers > 1):
                yield
        ranker.shutdown(wait=False)
        updater.shutdown(wait=True)  # an update in progress finishes its version

    app = FastAPI(
        title="related-articles",
        version="1",
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
        docs_url=None,  # install_offline_docs: Swagger UI from a package, not a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.holder = holder
    app.state.metrics = metrics
    app.state.cache = cache
    app.state.cache_control = f"public, max-age={settings.cache_max_age}"
    app.state.ranker = ranker
    app.state.updater = updater
    app.state.widget_script = sidebar.WidgetScript()

    install_error_handlers(app)
    for module in (related, sidebar, health, admin):
        app.include_router(module.router)
    install_offline_docs(app)
    serve_language_aware_openapi(app, holder)

    # add_middleware wraps: the last added runs first (outermost).
    app.add_middleware(RequestTimeoutMiddleware, seconds=settings.request_timeout_seconds)
    app.add_middleware(ServedListsMiddleware, state=app.state, route=related.ARTICLE_ROUTE)
    app.add_middleware(HeadAsGetMiddleware)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "If-None-Match", "Authorization"],
            expose_headers=["ETag"],
        )
    app.add_middleware(BodySizeLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
