"""Operator endpoints, disabled unless RELATED_ADMIN_TOKEN is set."""
from __future__ import annotations

import asyncio
import json
import logging
import tempfile
from functools import partial
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import ValidationError

from api.deps import AdminDep, HolderDep
from api.errors import ApiError, storage_refused
from api.schemas import ErrorResponse, PublishedArticle, RejectedRecord, ReloadResult, UpdateResult
from index.artifacts import storage_error
from index.errors import ArtifactError, BuildLockedError, NoIndexError, StorageError
from recommender.errors import RejectedRecords, RelatedError

log = logging.getLogger("related.api")

router = APIRouter(prefix="/v1/admin", tags=["admin"])
ADMIN_ERRORS: dict[int | str, dict] = {
    401: {"model": ErrorResponse, "description": "`unauthorized`: no bearer token"},
    403: {"model": ErrorResponse, "description": "`forbidden`: wrong token"},
    404: {"model": ErrorResponse, "description": "`not_found`: admin endpoints disabled"},
}
RECORD_SCHEMA = PublishedArticle.model_json_schema()
UPDATE_BODY = {
    "required": True,
    "content": {
        "application/x-ndjson": {
            # One record per line; described as the array of the lines' records, so that tools can generate it.
            # No examples here: a tool without a JSON Lines serializer would fail on them (see the description).
            # A line is the record schema *or any JSON value*: bad lines are answered in `rejected` while the
            # good ones are applied (200), so the body as a whole is valid whatever its lines hold.
            "schema": {"type": "array", "minItems": 1, "items": {"anyOf": [
                {key: value for key, value in RECORD_SCHEMA.items() if key != "examples"},
                {"description": "any other line: listed in `rejected` with its reason"},
            ]}},
        },
        "application/json": {"schema": RECORD_SCHEMA},
    },
}
JSON_MEDIA_TYPE = "application/json"


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
        "The body is one article as JSON, or JSON Lines in the format of `related update --source` (one record "
        "per line, `application/x-ndjson`, described below as the array of the lines' records); "
        "`{\"id\": …, \"deleted\": true}` deletes:\n\n"
        "    {\"id\": \"a-124\", \"title\": \"Harbour reopens\", \"lang\": \"en\", \"published\": \"2026-01-02T08:00:00Z\"}\n"
        "    {\"id\": \"a-99\", \"deleted\": true}\n\n"
        "Runs the same update in "
        "this process, where the index is already loaded, then swaps the new version in before answering: the "
        "next request of this process sees it, other workers at their next check of `current`.\n\n"
        "Records that cannot be applied are listed in `rejected` with their line and reason, and the others are "
        "applied; with `atomic=true` one rejected record refuses them all (422, nothing applied). JSON Lines whose "
        "every line is rejected change nothing (`unchanged`, each line in `rejected`); one JSON article that is "
        "rejected is refused (422 `invalid_update`, saying why). For large "
        "batches use the CLI from cron. Requires `Authorization: Bearer $RELATED_ADMIN_TOKEN`; 404 when no "
        "token is configured."
    ),
    openapi_extra={"requestBody": UPDATE_BODY},
    responses={
        **ADMIN_ERRORS,
        409: {"model": ErrorResponse, "description": "`update_in_progress`: a build or update holds the lock; retry"},
        413: {"model": ErrorResponse, "description": "`payload_too_large`: over `RELATED_MAX_BODY_BYTES`"},
        422: {"model": ErrorResponse, "description": "`invalid_update` (with `rejected`: line, id, reason of each "
                                                     "record refused) or `invalid_json`"},
        500: {"model": ErrorResponse, "description": "`update_failed`: the current version could not be extended"},
        503: {"model": ErrorResponse, "description": "`no_index`: nothing built yet"},
        507: {"model": ErrorResponse, "description": "`insufficient_storage` (disk full or over quota) or "
                                                     "`storage_not_writable` (read-only, permission denied): "
                                                     "nothing was applied, the served version is unchanged"},
    },
)
async def apply_articles(
    _: AdminDep, holder: HolderDep, request: Request,
    # Not in the OpenAPI: all-or-nothing makes one bad line refuse the post, which the lines' schema (any
    # line may be sent; bad ones are answered in `rejected`) cannot say. The description documents it.
    atomic: Annotated[bool, Query(include_in_schema=False)] = False,
) -> UpdateResult:
    from recommender.pipeline.update import update

    lines, rejected = checked_records(await request.body(), request.headers.get("content-type", ""))
    if rejected and (atomic or is_json(request.headers.get("content-type", ""))):
        raise invalid_update(rejected, atomic=atomic)
    if not any(lines):  # every line refused: nothing to apply, and each one answered, as for a partial post
        return nothing_applied(holder, rejected)
    # The update reads a file (line numbers in rejects, the source recorded in the manifest). Lines the
    # API refused stay in it as blank lines, so the update's line numbers are the body's.
    with tempfile.NamedTemporaryFile(prefix="related-update-", suffix=".jsonl") as source:
        try:
            source.write("\n".join(lines).encode("utf-8", "surrogatepass") + b"\n")
            source.flush()
        except OSError as err:  # the temporary directory is full or read-only
            raise storage_refused(storage_error(err, Path(tempfile.gettempdir()), "hold the request body")) from None
        try:
            report = await asyncio.get_running_loop().run_in_executor(
                request.app.state.updater,
                partial(update, Path(source.name), holder.data_dir, max_reject_share=0.0 if atomic else 1.0),
            )
        except BuildLockedError as err:
            raise ApiError(409, "update_in_progress", str(err), headers={"Retry-After": "5"}) from None
        except NoIndexError as err:
            raise ApiError(503, "no_index", str(err), headers={"Retry-After": "5"}) from None
        except RejectedRecords as err:
            raise invalid_update(sorted(rejected + [r.to_json() for r in err.rejects], key=line_of),
                                 atomic=atomic) from None
        except RelatedError as err:
            raise ApiError(422, "invalid_update", str(err).replace(source.name, "the request body")) from None
        except StorageError as err:
            raise storage_refused(err) from None
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
        rejected=[RejectedRecord(**r) for r in sorted(rejected + [r.to_json() for r in report.rejected], key=line_of)],
        rebuild_recommended=report.rebuild_reasons,
        seconds=round(report.seconds, 3),
    )


def nothing_applied(holder: HolderDep, rejected: list[dict[str, Any]]) -> UpdateResult:
    index = holder.index
    if index is None:
        raise ApiError(503, "no_index", "no index version loaded yet", headers={"Retry-After": "5"})
    return UpdateResult(
        status="unchanged", version=index.name, parent=index.name, serving=index.name, articles=index.size,
        added=0, replaced=0, deleted=0, unchanged=0, not_found=0, refreshed=0, refilled=0,
        rejected=[RejectedRecord(**r) for r in rejected], rebuild_recommended=[], seconds=0.0,
    )


def is_json(content_type: str) -> bool:
    """One article as JSON (anything else is read as JSON Lines)."""
    return content_type.split(";")[0].strip().lower() == JSON_MEDIA_TYPE


def line_of(reject: dict[str, Any]) -> int:
    return reject["line"]


def checked_records(body: bytes, content_type: str) -> tuple[list[str], list[dict[str, Any]]]:
    """The body's records as update lines (a refused or superseded one as a blank line, keeping line
    numbers), and the refused ones with their line and reason. JSON: one record; anything else: JSON Lines."""
    if is_json(content_type):
        try:
            texts = [json.dumps(json.loads(body), ensure_ascii=False)]
        except ValueError:
            raise ApiError(422, "invalid_json", "request body is not valid JSON", extra={"parameter": "body"}) from None
    else:
        texts = body.decode("utf-8", "replace").split("\n")
        while texts and not texts[-1].strip():
            texts.pop()
    if not any(text.strip() for text in texts):
        raise ApiError(422, "invalid_update", "the body holds no record: send one article as JSON, or JSON Lines",
                       extra={"rejected": []})
    lines, rejected, line_of_id = [], [], {}
    for number, text in enumerate(texts, 1):
        if not text.strip():
            lines.append("")
            continue
        try:
            record = PublishedArticle.model_validate_json(text)
        except ValidationError as err:
            lines.append("")
            rejected.append({"line": number, "id": record_id(text), "reason": describe(err)})
            continue
        if record.id in line_of_id:  # a repeated id: the last line wins, as in update files
            lines[line_of_id[record.id] - 1] = ""
        line_of_id[record.id] = number
        lines.append(json.dumps(record.record(), ensure_ascii=False))
    return lines, rejected


def record_id(text: str) -> str | None:
    try:
        value = json.loads(text).get("id")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def describe(err: ValidationError) -> str:
    """`title: Input should be a valid string; id: Field required` (pydantic's, one line)."""
    parts = []
    for problem in err.errors():
        where = ".".join(str(part) for part in problem["loc"])
        message = problem["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def invalid_update(rejected: list[dict[str, Any]], *, atomic: bool) -> ApiError:
    lines = "; ".join(f"line {r['line']}: {r['reason']}" for r in rejected[:20])
    refused = "one or more records were rejected (atomic=true)" if atomic else "no record could be applied"
    return ApiError(422, "invalid_update", f"{refused}, nothing applied: {lines}", extra={"rejected": rejected})
