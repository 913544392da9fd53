"""Liveness, readiness, index introspection and Prometheus metrics."""
from __future__ import annotations

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import JSONResponse, Response

from api.deps import HolderDep, MetricsDep
from api.errors import RETRY_AFTER_SECONDS
from api.schemas import Health, IndexInfo, Readiness

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health, summary="Liveness", description="200 while the process serves HTTP.")
async def healthz() -> Health:
    return Health()


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Readiness",
    description=(
        "200 once an index version is loaded; 503 (`ready: false`) before, with `status` `loading` while the first "
        "version loads and `no_index` when nothing is built (or the version was refused), and the `reason`."
    ),
    responses={503: {"model": Readiness, "description": "No index loaded yet: loading, or none built."}},
)
async def readyz(holder: HolderDep) -> Response:
    index = holder.index
    if index is None:
        status, reason = holder.unavailable()
        return JSONResponse(
            {"ready": False, "version": None, "status": status, "reason": reason},
            status_code=503, headers={"Retry-After": RETRY_AFTER_SECONDS},
        )
    return JSONResponse({"ready": True, "version": index.name})


@router.get(
    "/v1/index",
    response_model=IndexInfo,
    summary="The served index version",
    description=(
        "Version, article count, dims, build time and build config of the served version, plus the reload "
        "status: when it was loaded and why the newest version was refused, if it was."
    ),
)
async def index_info(holder: HolderDep) -> IndexInfo:
    index = holder.index
    if index is None:
        status, reason = holder.unavailable()
        return IndexInfo(ready=False, status=status, reason=reason, **holder.status())
    return IndexInfo(ready=True, **index.info(), **holder.status())


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    description="Request counts and latency histograms per route template and status; served index version.",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format."}},
)
async def metrics(metrics: MetricsDep) -> Response:
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
