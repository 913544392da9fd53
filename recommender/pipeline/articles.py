"""The article record: validation of one decoded source record into an Article, a Deletion or a reason.

Validation is per record and never raises anything but InvalidRecord, so one bad row in a CMS export
costs one reject instead of the whole build.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone

from recommender.vectors.text import clean_text, remove_invisible

MAX_ID_LENGTH = 256
_TEXT_FIELDS = ("lang", "category", "url")
_LANG_SUBTAG = re.compile(r"[a-z]{2,3}")
_NUMBER = re.compile(r"[+-]?\d+(\.\d*)?")
_TYPE_NAMES = {str: "string", bool: "boolean", int: "int", float: "float", list: "array", dict: "object"}


class InvalidRecord(Exception):
    """One record cannot become an article; str(e) is the short human-readable reject reason."""


@dataclass(frozen=True, slots=True)
class Article:
    """A validated article; title and body are cleaned plain text, published is UTC."""

    id: str
    title: str
    body: str
    published: datetime | None
    lang: str | None
    category: str | None
    url: str | None
    evergreen: bool = False

    def to_metadata(self) -> dict:
        """What the service returns about an article (no body: it is large and not needed to show a link)."""
        return {
            "id": self.id,
            "title": self.title,
            "url": self.url,
            "published": format_timestamp(self.published),
            "category": self.category,
            "lang": self.lang,
            "evergreen": self.evergreen,
        }


@dataclass(frozen=True, slots=True)
class Deletion:
    """An update-file record asking to remove the article with this id."""

    id: str


@dataclass(frozen=True, slots=True)
class Reject:
    """A record that was skipped, with the physical line where it starts so the user can find it."""

    line: int
    id: str | None
    reason: str

    def to_json(self) -> dict:
        return {"line": self.line, "id": self.id, "reason": self.reason}


@dataclass
class Ingested:
    """Everything read from one source: winners in source order, plus what was rejected and why.

    Invariant: records == len(articles) + len(deletions) + len(rejects).
    """

    articles: list[Article]
    deletions: list[Deletion]
    rejects: list[Reject]
    records: int


def format_timestamp(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a 'Z' suffix, the form the corpus format documents."""
    if value is None:
        return None
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def parse_article(record: object, *, allow_delete: bool = False) -> Article | Deletion:
    """Validate one decoded record; raises InvalidRecord with the reject reason on any problem."""
    if not isinstance(record, dict):
        raise InvalidRecord(f"record is not a JSON object (got {_type_name(record)})")
    article_id = record_id(record)
    deleted = record.get("deleted")
    if deleted is not None and not isinstance(deleted, bool):
        raise InvalidRecord(_wrong_type("deleted", "boolean", deleted))
    if deleted:
        if not allow_delete:
            raise InvalidRecord("deletion records are only allowed in update files")
        return Deletion(article_id)

    title = clean_text(_optional_str(record, "title") or "", keep_script_text=True)
    body = clean_text(_optional_str(record, "body") or "")
    if not title and not body:
        raise InvalidRecord("missing title and body")
    published = parse_published(record.get("published"))
    lang, category, url = (_optional_str(record, name) for name in _TEXT_FIELDS)
    category = clean_text(category) if category is not None else None
    url = remove_invisible(url).strip() if url is not None else None
    evergreen = record.get("evergreen")
    if evergreen is not None and not isinstance(evergreen, bool):
        raise InvalidRecord(_wrong_type("evergreen", "boolean", evergreen))
    return Article(
        id=article_id,
        title=title,
        body=body,
        published=published,
        lang=normalize_lang(lang),
        category=category or None,
        url=url or None,
        evergreen=bool(evergreen),
    )


def record_id(record: dict) -> str:
    """The record's id as a string; ints are accepted because some CMS exports emit numeric ids."""
    value = record.get("id")
    if value is None:
        raise InvalidRecord("missing id")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise InvalidRecord(_wrong_type("id", "string", value))
    if not value.strip():
        raise InvalidRecord("empty id")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidRecord(f"id too long: {len(value)} characters (max {MAX_ID_LENGTH})")
    if remove_invisible(value) != value:
        raise InvalidRecord("id contains control or invisible characters")
    return value


def usable_id(record: object) -> str | None:
    """The id to report in a reject, or None when the record has no valid id to report."""
    if not isinstance(record, dict):
        return None
    try:
        return record_id(record)
    except InvalidRecord:
        return None


def parse_published(value: object) -> datetime | None:
    """ISO 8601 string (naive means UTC, empty means unknown) or unix epoch seconds -> aware UTC datetime."""
    if value is None:
        return None
    try:
        if isinstance(value, str):
            text = value.strip()
            if not text:
                return None
            return _parse_iso(text)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return _from_epoch(value)
    except (ValueError, OverflowError, OSError):
        pass
    raise InvalidRecord(f"unparseable date: {_preview(value)}")


def normalize_lang(value: str | None) -> str | None:
    """Primary language subtag, lowercase ("de-AT" -> "de"); unusable values become None (detected later)."""
    if value is None:
        return None
    primary = re.split(r"[-_]", value.strip(), maxsplit=1)[0].lower()
    return primary if _LANG_SUBTAG.fullmatch(primary) else None


def _parse_iso(text: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        # CSV cells are always strings, so epoch seconds arrive as "1714557600".
        if _NUMBER.fullmatch(text):
            return _from_epoch(float(text))
        raise
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def _from_epoch(seconds: float) -> datetime:
    if not math.isfinite(seconds):
        raise ValueError("not a finite number")
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


def _optional_str(record: dict, name: str) -> str | None:
    value = record.get(name)
    if value is not None and not isinstance(value, str):
        raise InvalidRecord(_wrong_type(name, "string", value))
    return value


def _wrong_type(name: str, expected: str, value: object) -> str:
    return f"wrong type for field '{name}': expected {expected}, got {_type_name(value)}"


def _type_name(value: object) -> str:
    return "null" if value is None else _TYPE_NAMES.get(type(value), type(value).__name__)


def _preview(value: object, limit: int = 60) -> str:
    """repr() of a bad value, shortened so a megabyte of garbage does not end up in the rejects file."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
