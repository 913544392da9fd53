"""Operator endpoints, disabled unless RELATED_ADMIN_TOKEN is set."""
from __future__ import annotations

from fastapi import APIRouter

from api.deps import AdminDep, HolderDep
from api.errors import ApiError
from api.schemas import ErrorResponse, ReloadResult

router = APIRouter(prefix="/v1/admin", tags=["admin"])


@router.post(
    "/reload",
    response_model=ReloadResult,
    summary="Load the version `current` points at now",
    description=(
        "Checks `DATA_DIR/current` immediately instead of waiting for the periodic check, and retries a "
        "version that was refused before. `reloaded` is false when the current version is already served. "
        "Requires `Authorization: Bearer $RELATED_ADMIN_TOKEN`; 404 when no token is configured."
    ),
    responses={
        401: {"model": ErrorResponse, "description": "`unauthorized`: no bearer token"},
        403: {"model": ErrorResponse, "description": "`forbidden`: wrong token"},
        404: {"model": ErrorResponse, "description": "`not_found`: admin endpoints disabled"},
        409: {"model": ErrorResponse, "description": "`reload_failed`: the version was refused; the old one serves"},
        503: {"model": ErrorResponse, "description": "`no_index`: nothing built yet"},
    },
)
async def reload(_: AdminDep, holder: HolderDep) -> ReloadResult:
    outcome = await holder.refresh(retry_failed=True)
    if outcome.error is not None:
        raise ApiError(409, "reload_failed", outcome.error, extra={"version": outcome.version})
    if outcome.version is None:
        raise ApiError(503, "no_index", "no index version to load: run `related build`", headers={"Retry-After": "5"})
    return ReloadResult(reloaded=outcome.reloaded, version=outcome.version)
