"""Request and response models. Routes declare them so the OpenAPI schema (/docs) is exact."""
from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any, Literal

from dataclasses import replace

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from recommender.policy.ranking import ANY_LANGUAGE, RelatedQuery
from recommender.vectors.text import INVISIBLE_CLASS, remove_invisible

MAX_LIMIT = 100
LIST_OPTIONS = frozenset({"exclude", "category", "exclude_category"})
# What `lang` accepts before normalizing, as the OpenAPI says it: `any` or a 2-3 letter code in any case,
# surrounding blanks ignored, blank meaning "not given". Written out letter by letter: an IGNORECASE regex
# would also take the Kelvin sign for a k, which JSON Schema tools do not. The served OpenAPI narrows it
# to the index's languages (api/openapi.py), as GET and drafts answer 422 for others.
# The characters of str.isspace() (what strip() and split() remove), spelled out: `\s` in the schema's
# patterns means other things to other regex engines (Rust's, in schemathesis, leaves out \x1c-\x1f).
SPACE = r"\x09-\x0d\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028-\u2029\u202f\u205f\u3000"
LANG_PATTERN = rf"^[{SPACE}]*([Aa][Nn][Yy]|[A-Za-z]{{2,3}})?[{SPACE}]*$"
LANG_RE = re.compile(LANG_PATTERN)
BLANK = {"type": "string", "pattern": rf"^[{SPACE}]*$"}  # a blank option is as good as none (HTML forms send them)
ISO_DATE_START = re.compile(r"\d{4}-\d\d-\d\d")  # pydantic also reads numbers as Unix times; the schema says ISO
EXAMPLE_VERSION = "20240501T100000123456Z-3f2a9c1b"


# -- shared option parsing ----------------------------------------------------------------
def split_values(value: Any) -> Any:
    """'a,b' or ['a,b', 'c'] -> ['a', 'b', 'c'] (empty parts dropped); None -> []."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if isinstance(value, (list, tuple, set, frozenset)):
        out: list[Any] = []
        for part in value:
            if isinstance(part, str):
                out.extend(p.strip() for p in part.split(",") if p.strip())
            else:
                out.append(part)
        return out
    return value


def blank_is_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


def normalize_lang(value: Any) -> Any:
    if isinstance(value, str):
        if not LANG_RE.match(value):
            raise ValueError("must be `any` or a 2-3 letter language code such as `en`")
        value = value.strip().lower() or None
    return value


def list_or_csv(schema: dict[str, Any]) -> None:
    """JSON Schema of a draft's list option: an array of strings, one comma-separated string, or null (none)."""
    schema.pop("type", None)
    schema.pop("items", None)
    schema["anyOf"] = [{"type": "array", "items": {"type": "string"}}, {"type": "string"}, {"type": "null"}]


def language_pattern(codes: tuple[str, ...]) -> str:
    """LANG_PATTERN narrowed to these codes (the languages an index holds), as api/openapi.py serves it."""
    either = "|".join("".join(f"[{c.upper()}{c}]" for c in code) for code in ("any", *codes))
    return rf"^[{SPACE}]*(?:{either})?[{SPACE}]*$"


def as_utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)  # naive dates and times are UTC
    return value


class ListOptions(BaseModel):
    """Options shared by GET /v1/articles/{id}/related and POST /v1/related."""

    limit: int = Field(10, ge=1, le=MAX_LIMIT, description="Number of items (1-100).")
    exclude: list[str] = Field(
        default_factory=list, description="Article ids to leave out (comma-separated or repeated)."
    )
    category: list[str] = Field(
        default_factory=list, description="Only these categories (comma-separated or repeated)."
    )
    exclude_category: list[str] = Field(
        default_factory=list, description="Leave out these categories (comma-separated or repeated)."
    )
    lang: str | None = Field(
        None, pattern=LANG_PATTERN,
        description="Language of the items: `any`, or one of the index's languages (`languages` in GET /v1/index); "
        "another code answers 422 `invalid_parameter`, here and in drafts alike. Default: the query's language, or "
        "any language when that has fewer than `policy.min_language_articles` other articles "
        "(`fill_reason: language_fallback`).",
    )
    max_age_days: float | None = Field(
        None, gt=0, le=36_500, allow_inf_nan=False, description="Only items published within this many days.",
        json_schema_extra={"anyOf": [{"type": "number", "exclusiveMinimum": 0, "maximum": 36_500}, BLANK, {"type": "null"}]},
    )
    since: datetime | None = Field(
        None, description="Only items published at or after this ISO date or datetime (UTC when no offset).",
        json_schema_extra={"anyOf": [{"type": "string", "format": "date-time"}, {"type": "string", "format": "date"},
                                     BLANK, {"type": "null"}]},
    )
    explain: bool = Field(False, description="Add `why` (top shared terms) and `score_parts` to each item.")
    min_score: float | None = Field(
        None, ge=0, le=1, allow_inf_nan=False,
        description="Relevance floor: items scoring less are left out, so a list may be shorter than `limit` "
        "(`fill_reason: below_min_score`). Default: the index's `policy.min_score`.",
        json_schema_extra={"anyOf": [{"type": "number", "minimum": 0, "maximum": 1}, BLANK, {"type": "null"}]},
    )
    fill: Literal["none", "latest"] | None = Field(
        None,
        description="`latest`: free slots of a short list get the newest articles of the query's section and "
        "language, marked `\"filler\": true`. Default: the index's `policy.fill`.",
        json_schema_extra={"anyOf": [{"type": "string", "enum": ["none", "latest"]}, BLANK, {"type": "null"}]},
    )

    _split = field_validator("exclude", "category", "exclude_category", mode="before")(split_values)
    _lang = field_validator("lang", mode="before")(normalize_lang)
    _blank = field_validator("max_age_days", "min_score", "fill", mode="before")(blank_is_none)

    @field_validator("since", mode="before")
    @classmethod
    def _iso(cls, value: Any) -> Any:
        value = blank_is_none(value)
        if isinstance(value, str) and not ISO_DATE_START.match(value):
            raise ValueError("must be an ISO date or date-time such as 2024-05-01 or 2024-05-01T10:00:00Z")
        return value

    @field_validator("since")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        value = as_utc(value)
        if value is not None:
            try:
                value.timestamp()
            except (OverflowError, ValueError, OSError):
                raise ValueError("date is out of range") from None
        return value

    def to_query(self, relative_to: str = "now") -> RelatedQuery:
        return RelatedQuery(
            limit=self.limit,
            exclude=frozenset(self.exclude),
            categories=frozenset(self.category),
            exclude_categories=frozenset(self.exclude_category),
            lang=self.lang,
            max_age_days=self.max_age_days,
            since=self.since,
            relative_to=relative_to,
            explain=self.explain,
            min_score=self.min_score,
            fill=self.fill,
        )


class RelatedParams(ListOptions):
    """Query parameters of GET /v1/articles/{article_id}/related."""

    relative_to: Literal["now", "article"] = Field(
        "now", description="What `max_age_days` counts back from: now, or the query article's publication time."
    )

    def cache_key(self) -> list[Any]:
        """Everything that changes the answer, in a canonical order (for the ETag)."""
        return [
            self.limit, sorted(set(self.exclude)), sorted(set(self.category)), sorted(set(self.exclude_category)),
            self.lang, self.max_age_days, self.since.timestamp() if self.since else None,
            self.relative_to if self.max_age_days is not None else "now", self.explain, self.min_score, self.fill,
        ]


class DraftRequest(ListOptions):
    """An unsaved article: related items for what an editor is writing."""

    model_config = ConfigDict(
        json_schema_extra={
            # At least one of title and body has a non-space character (the validator below).
            "anyOf": [{"required": ["title"], "properties": {"title": {"pattern": f"[^{SPACE}]"}}},
                      {"required": ["body"], "properties": {"body": {"pattern": f"[^{SPACE}]"}}}],
            "examples": [
                {
                    "title": "Storm floods the harbour district",
                    "body": "Heavy rain overnight flooded streets near the harbour. The fire brigade ...",
                    "lang": "en",
                    "limit": 5,
                    "exclude": ["a-123"],
                    "category": ["local"],
                    "explain": True,
                }
            ]
        }
    )

    title: str = Field("", max_length=10_000, description="Draft headline.")
    body: str = Field("", description="Draft text (HTML allowed).")
    lang: str | None = Field(
        None, pattern=LANG_PATTERN,
        description="The draft's language: one of the index's languages (`languages` in GET /v1/index), another "
        "code answers 422 `invalid_parameter` as in GET; detected among them when absent or `any`. Items are in "
        "the draft's language, or any language when it has fewer than `policy.min_language_articles` articles "
        "(`fill_reason: language_fallback`); `any` lists items of every language.",
    )

    exclude: list[str] = Field(default_factory=list, json_schema_extra=list_or_csv,
                               description="Article ids to leave out (a list, or a comma-separated string).")
    category: list[str] = Field(default_factory=list, json_schema_extra=list_or_csv,
                                description="Only these categories (a list, or a comma-separated string).")
    exclude_category: list[str] = Field(default_factory=list, json_schema_extra=list_or_csv,
                                        description="Leave out these categories (a list, or a comma-separated string).")

    # JSON has types: a number or boolean of the body is one (a query string's are text, read leniently).
    @field_validator("limit", "max_age_days", "min_score", mode="before")
    @classmethod
    def _json_number(cls, value: Any) -> Any:
        if isinstance(value, bool) or (isinstance(value, str) and value.strip()):
            raise ValueError("must be a JSON number")
        return value

    @field_validator("explain", mode="before")
    @classmethod
    def _json_boolean(cls, value: Any) -> Any:
        if not isinstance(value, bool):
            raise ValueError("must be true or false")
        return value

    def to_query(self, relative_to: str = "now") -> RelatedQuery:
        """`lang` names the draft's language, not a filter: only `any` widens the items."""
        query = super().to_query(relative_to)
        return replace(query, lang=ANY_LANGUAGE if self.lang == ANY_LANGUAGE else None)

    @model_validator(mode="after")
    def _has_text(self) -> DraftRequest:
        if not (self.title.strip() or self.body.strip()):
            raise ValueError("at least one of `title` and `body` must be non-empty")
        return self


# -- responses --------------------------------------------------------------------------------
class RelatedItem(BaseModel):
    id: str
    title: str | None = None
    url: str | None = None
    published: str | None = Field(None, description="ISO 8601 UTC, as in the corpus.")
    category: str | None = None
    lang: str | None = None
    score: float = Field(description="Relevance after the ranking policy (higher is more related).")
    why: list[str] | None = Field(None, description="Top shared weighted terms (only with explain=true).")
    filler: bool | None = Field(
        None, description="`true` on fillers (`fill=latest`): newest articles of the section, not chosen by "
        "relevance (score 0); absent on every other item.",
    )
    score_parts: dict[str, float] | None = Field(
        None, description="Score components such as text and freshness (only with explain=true)."
    )


class RelatedResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "article_id": "a-42",
                    "index_version": EXAMPLE_VERSION,
                    "fill_reason": None,
                    "items": [
                        {
                            "id": "a-17",
                            "title": "Harbour flood: clean-up begins",
                            "url": "https://news.example/a-17",
                            "published": "2024-05-02T08:00:00Z",
                            "category": "local",
                            "lang": "en",
                            "score": 0.7312,
                        }
                    ],
                }
            ]
        }
    )

    article_id: str | None = Field(description="The query article; null for drafts.")
    index_version: str = Field(description="Index version that answered (part of the ETag).")
    fill_reason: Literal["below_min_score", "exhausted", "language_fallback", "wider_search"] | None = Field(
        None,
        description="Why the list is not the plain precomputed one, the first that applies: `below_min_score` "
        "(shorter than `limit`: the rest scored under the relevance floor), `exhausted` (shorter than `limit`: "
        "the filters leave no more), `language_fallback` (the query's language has too few articles: items of "
        "any language), `wider_search` (filters emptied the precomputed list and a wider search refilled it).",
    )
    items: list[RelatedItem]


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. article_not_found, invalid_parameter.")
    message: str = Field(description="Human-readable explanation.")
    parameter: str | None = Field(None, description="The offending parameter (422 only).")
    details: list[dict[str, Any]] | None = Field(None, description="Every validation problem (422 only).")
    rejected: list[dict[str, Any]] | None = Field(
        None, description="`invalid_update` only: each record refused, as {line, id, reason}."
    )


class ErrorResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"error": {"code": "article_not_found", "message": "article 'x' is not in index version …"}}]
        }
    )

    error: ErrorDetail


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"ready": False, "version": None, "status": "loading",
         "reason": f"index version {EXAMPLE_VERSION} is loading: retry in a few seconds"},
        {"ready": True, "version": EXAMPLE_VERSION},
    ]})

    ready: bool
    version: str | None = None
    status: Literal["loading", "no_index"] | None = Field(
        None, description="When not ready: `loading` while the first version loads; `no_index` when none is built "
        "or it was refused."
    )
    reason: str | None = Field(
        None, description="When not ready: why; when ready, why an older version than `current` is served, if it is."
    )


class IndexInfo(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "ready": True,
                    "version": EXAMPLE_VERSION,
                    "articles": 23000,
                    "dims": 256,
                    "built_at": "2024-05-01T10:00:00Z",
                    "index_type": "IndexFlatIP",
                    "counts": {"articles": 23000, "rejects": 3, "vocabulary": 181234},
                    "drift": {"articles_since_build": 0, "oov_token_share": 0.0},
                    "config": {"name": "default"},
                    "last_reload_at": "2024-05-01T10:00:05Z",
                    "last_reload_error": None,
                    "failed_version": None,
                    "last_check_at": "2024-05-01T10:30:00Z",
                }
            ]
        }
    )

    ready: bool
    status: Literal["loading", "no_index"] | None = Field(None, description="When not ready: as in /readyz.")
    reason: str | None = Field(None, description="When not ready: why.")
    version: str | None = None
    articles: int | None = None
    dims: int | None = None
    built_at: str | None = None
    index_type: str | None = None
    counts: dict[str, Any] | None = None
    languages: dict[str, int] | None = Field(None, description="Live articles per language: what `lang` may name.")
    default_lang: str | None = Field(None, description="Language of a draft whose language cannot be told.")
    drift: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    last_reload_at: str | None = Field(None, description="When the served version was loaded (UTC).")
    last_reload_error: str | None = Field(None, description="Why the newest version was refused, if it was.")
    failed_version: str | None = Field(None, description="The refused version dir, not retried automatically.")
    last_check_at: str | None = Field(None, description="Last check of the `current` link.")
    fallback: str | None = Field(
        None, description="Why an older version than `current` is served: `current` failed verification at start-up."
    )


class ReloadResult(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"reloaded": True, "version": EXAMPLE_VERSION}]})

    reloaded: bool = Field(description="True when a new version was loaded and swapped in.")
    version: str | None = Field(description="The version now being served.")


class RejectedRecord(BaseModel):
    line: int = Field(description="Line of the update body where the record starts.")
    id: str | None = Field(description="The record's id, when it had a usable one.")
    reason: str


class UpdateResult(BaseModel):
    """What `POST /v1/admin/articles` did: the same counts as `related update`'s summary line."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "status": "updated", "version": EXAMPLE_VERSION, "parent": "20260101T020000000000Z-0f1e2d3c",
        "serving": EXAMPLE_VERSION, "articles": 12001, "added": 1, "replaced": 0, "deleted": 0, "unchanged": 0,
        "not_found": 0, "refreshed": 7, "refilled": 0, "rejected": [], "rebuild_recommended": [], "seconds": 0.41,
    }]})

    status: Literal["updated", "unchanged"] = Field(description="`unchanged`: every record matched the index already.")
    version: str = Field(description="The version written (or the current one when unchanged).")
    parent: str = Field(description="The version the update was applied to.")
    serving: str | None = Field(description="The version this process serves after the update.")
    articles: int = Field(description="Live articles in `version`.")
    added: int
    replaced: int
    deleted: int
    unchanged: int
    not_found: int = Field(description="Deletions of ids the index does not hold.")
    refreshed: int = Field(description="Existing lists a new or edited article entered.")
    refilled: int = Field(description="Existing lists refilled after losing a replaced or deleted article.")
    rejected: list[RejectedRecord] = Field(description="Records skipped, with their lines; the rest were applied.")
    rebuild_recommended: list[str] = Field(description="Why a full `related build` is due (vocabulary drift), if it is.")
    seconds: float


def query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """OpenAPI query parameters for a model parsed by hand (see api.deps.parse_related_query)."""
    schema = model.model_json_schema()
    parameters = []
    for name, prop in schema["properties"].items():
        spec = {k: v for k, v in prop.items() if k not in ("title", "description")}
        parameters.append({
            "name": name, "in": "query", "required": False, "description": prop.get("description", ""),
            "schema": spec, **({"style": "form", "explode": True} if name in LIST_OPTIONS else {}),
        })
    return parameters


# -- posted articles (POST /v1/admin/articles) ---------------------------------------------------
# The corpus record, as strict as JSON Schema can say it, so that a record the schema allows is one the
# update accepts: an id of visible characters; unless `deleted`, a title or body with a visible character
# outside HTML tags and entities (what is left after HTML cleaning, roughly: text only inside <script> is
# not seen by the pattern); dates in RFC 3339 (years 1000-8999).
ID_PATTERN = rf"^[^{INVISIBLE_CLASS}]*[^{SPACE}{INVISIBLE_CLASS}][^{INVISIBLE_CLASS}]*$"
TEXT_PATTERN = rf"^(?:[^<&]|<[^>]*>|&[^;]*;?)*?[^{SPACE}<>&{INVISIBLE_CLASS}]"
# Years 1000-8999: at the ends of Python's datetime range an offset moves the UTC time out of it.
DATE_TIME_PATTERN = r"^[1-8]\d{3}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)$"
_ID = re.compile(ID_PATTERN)
_TEXT = re.compile(TEXT_PATTERN)
_DATE_TIME = re.compile(DATE_TIME_PATTERN)
NULLABLE_STRING = {"anyOf": [{"type": "string"}, {"type": "null"}]}


class PublishedArticle(BaseModel):
    """One record of `POST /v1/admin/articles`: an article to add or replace, or `{"id", "deleted": true}`."""

    model_config = ConfigDict(extra="allow", strict=True, json_schema_extra={
        "anyOf": [
            {"required": ["deleted"], "properties": {"deleted": {"const": True}}},
            {"required": ["title"], "properties": {"title": {"type": "string", "pattern": TEXT_PATTERN}}},
            {"required": ["body"], "properties": {"body": {"type": "string", "pattern": TEXT_PATTERN}}},
        ],
        "examples": [{"id": "a-124", "title": "Harbour reopens", "body": "<p>The harbour reopened on Monday.</p>",
                      "lang": "en", "published": "2026-01-02T08:00:00Z", "category": "local"}],
    })

    id: str = Field(min_length=1, max_length=256, json_schema_extra={"pattern": ID_PATTERN},
                    description="The CMS id: visible characters, up to 256.")
    deleted: bool | None = Field(None, description="`true`: remove the article with this id (no other field needed).")
    title: str | None = Field(None, description="Headline (HTML allowed). A title or a body with text is required.")
    body: str | None = Field(None, description="Text (HTML allowed).")
    published: str | None = Field(None, json_schema_extra={"anyOf": [
        {"type": "string", "format": "date-time", "pattern": DATE_TIME_PATTERN}, {"type": "null"}]},
        description="RFC 3339 date-time (`2026-01-02T08:00:00Z`).")
    lang: str | None = Field(None, description="Language code; detected when missing or unusable.")
    category: str | None = None
    url: str | None = None
    evergreen: bool | None = Field(None, description="`true`: exempt from freshness decay.")

    @field_validator("id")
    @classmethod
    def _visible_id(cls, value: str) -> str:
        if not _ID.match(value) or remove_invisible(value) != value:
            raise ValueError("id must be visible characters (no control or invisible ones), not only spaces")
        return value

    @field_validator("published")
    @classmethod
    def _date_time(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                if not _DATE_TIME.match(value):
                    raise ValueError(value)
                datetime.fromisoformat(value.upper())
            except ValueError:
                raise ValueError("published must be an RFC 3339 date-time such as 2026-01-02T08:00:00Z") from None
        return value

    @model_validator(mode="after")
    def _has_text(self) -> PublishedArticle:
        if not self.deleted and not any(text is not None and _TEXT.match(text) for text in (self.title, self.body)):
            raise ValueError("a title or body with visible text is required (unless `deleted` is true)")
        return self

    def record(self) -> dict[str, Any]:
        """The corpus record for the update (dates in the form the update parses)."""
        record = self.model_dump(exclude_none=True)
        if self.published is not None:
            record["published"] = self.published.upper()
        return record

