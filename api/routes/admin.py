"""Operator endpoints, disabled unless RELATED_ADMIN_TOKEN is set."""
from __future__ import annotations

import asyncio
import logging
import tempfile
from pathlib import Path

from fastapi import APIRouter, Request

from api.deps import AdminDep, HolderDep
from api.errors import ApiError
from api.schemas import ErrorResponse, RejectedRecord, ReloadResult, UpdateResult
from index.errors import ArtifactError, BuildLockedError, NoIndexError
from recommender.errors import RelatedError

log = logging.getLogger("related.api")

router = APIRouter(prefix="/v1/admin", tags=["admin"])
ADMIN_ERRORS: dict[int | str, dict] = {
    401: {"model": ErrorResponse, "description": "`unauthorized`: no bearer token"},
    403: {"model": ErrorResponse, "description": "`forbidden`: wrong token"},
    404: {"model": ErrorResponse, "description": "`not_found`: admin endpoints disabled"},
}
UPDATE_BODY = {
    "required": True,
    "content": {"application/x-ndjson": {
        "schema": {"type": "string"},
        "example": '{"id": "a-124", "title": "Harbour reopens", "body": "...", "lang": "en", '
                   '"published": "2026-01-02T08:00:00Z"}\n{"id": "a-99", "deleted": true}\n',
    }},
}


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
        **ADMIN_ERRORS,
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


@router.post(
    "/articles",
    response_model=UpdateResult,
    summary="Add, replace or delete articles now (a CMS publish hook)",
    description=(
        "The body is JSON Lines in the format of `related update --source` (one article per line; "
        "`{\"id\": …, \"deleted\": true}` deletes). Runs the same update in this process, where the "
        "index is already loaded, then swaps the new version in before answering: the next request "
        "of this process sees it, other workers at their next check of `current`. Malformed lines are "
        "skipped and listed in `rejected`; the rest is applied. For large batches use the CLI from cron. "
        "Requires `Authorization: Bearer $RELATED_ADMIN_TOKEN`; 404 when no token is configured."
    ),
    openapi_extra={"requestBody": UPDATE_BODY},
    responses={
        **ADMIN_ERRORS,
        409: {"model": ErrorResponse, "description": "`update_in_progress`: a build or update holds the lock; retry"},
        422: {"model": ErrorResponse, "description": "`invalid_update`: no valid record, or too many rejects"},
        500: {"model": ErrorResponse, "description": "`update_failed`: the current version could not be extended"},
        503: {"model": ErrorResponse, "description": "`no_index`: nothing built yet"},
    },
)
async def apply_articles(_: AdminDep, holder: HolderDep, request: Request) -> UpdateResult:
    from recommender.pipeline.update import update

    body = await request.body()
    # The update reads a file (line numbers in rejects, the source recorded in the manifest).
    with tempfile.NamedTemporaryFile(prefix="related-update-", suffix=".jsonl") as source:
        source.write(body)
        source.flush()
        try:
            report = await asyncio.get_running_loop().run_in_executor(
                request.app.state.updater, update, Path(source.name), holder.data_dir
            )
        except BuildLockedError as err:
            raise ApiError(409, "update_in_progress", str(err), headers={"Retry-After": "5"}) from None
        except NoIndexError as err:
            raise ApiError(503, "no_index", str(err), headers={"Retry-After": "5"}) from None
        except RelatedError as err:
            raise ApiError(422, "invalid_update", str(err)) from None
        except ArtifactError as err:
            log.error("update refused: %s", err)
            raise ApiError(500, "update_failed", str(err)) from None
    log.info("related update (API): %s", report.summary())
    serving = (await holder.refresh()).version
    return UpdateResult(
        status=report.status,
        version=report.version.name if report.version else report.parent,
        parent=report.parent,
        serving=serving,
        articles=report.articles,
        added=report.added,
        replaced=report.replaced,
        deleted=report.deleted,
        unchanged=report.unchanged,
        not_found=report.not_found,
        refreshed=report.refreshed,
        refilled=report.refilled,
        rejected=[RejectedRecord(**r.to_json()) for r in report.rejected],
        rebuild_recommended=report.rebuild_reasons,
        seconds=round(report.seconds, 3),
    )
