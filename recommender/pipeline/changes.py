"""Where the records of an update come from: an update file, a whole database, or the rows of a
database changed since the watermark of the current version (`related sync`).

Each names itself for the new version's manifest (`source`), and says what the new version's
`sync` record is: a file update carries the parent's on (its database rows are still applied);
a database read records its identity and the largest `updated_at` applied. That record is
written into the version, so the watermark advances exactly when the version is published: a
sync that dies before publishing leaves the old watermark current and its rows are read again.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Protocol

from index.artifacts import Manifest
from recommender.config import PipelineConfig
from recommender.errors import RelatedError
from recommender.pipeline.articles import Ingested
from recommender.pipeline.sources import read_source
from recommender.pipeline.sql_source import DatabaseSource, Read, Watermark, check_identity, is_database_url, unpack_digests

log = logging.getLogger("related.sync")


class Changes(Protocol):
    """The records of one update."""

    repeats_deletions: bool  # deletions include rows already deleted (a sync lists every deleted row)

    def read(self, parent: Manifest) -> Ingested:
        """Validated records and deletions; called under the build lock, with the current version's manifest."""
        ...

    def describe(self) -> dict[str, Any]:
        """The new version's `source` record (without the record count)."""
        ...

    def sync_state(self) -> dict[str, Any] | None:
        """The new version's `sync` record (after `read`)."""
        ...

    def digest(self) -> str:
        """sha256 of what was read (after `read`): part of the new version's content hash."""
        ...


class FileChanges:
    """An update file (corpus format; `{"id": ..., "deleted": true}` deletes)."""

    repeats_deletions = False

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise RelatedError(f"update file not found: {self.path}")
        self._parent_sync: dict[str, Any] | None = None

    def read(self, parent: Manifest) -> Ingested:
        self._parent_sync = parent.data.get("sync")
        return read_source(self.path, allow_delete=True)

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path.resolve())}

    def sync_state(self) -> dict[str, Any] | None:
        return self._parent_sync

    def digest(self) -> str:
        with open(self.path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()


class DatabaseChanges:
    """Rows of a database: all of them (`update --source URL`), or with `since_watermark` the rows
    changed since the current version's watermark plus the deleted ones (`sync`).

    `query` None: the query the current version was built with (its config's `source.query`)."""

    def __init__(self, url: str, query: str | None = None, *, since_watermark: bool = False) -> None:
        if not is_database_url(url):
            raise RelatedError(
                f"not a database URL: {url} (expected sqlite:///file.db, postgresql+psycopg://user@host/db, ...)"
            )
        self.url, self.query, self.since_watermark = url, query, since_watermark
        self.repeats_deletions = since_watermark
        self.source: DatabaseSource | None = None
        self._read: Read | None = None

    def read(self, parent: Manifest) -> Ingested:
        config = PipelineConfig.from_manifest(parent.data.get("config") or {}, origin=f"manifest of {parent.name}").source
        query = config.query if self.query is None else self.query
        self.source = DatabaseSource(self.url, query, fetch_rows=config.fetch_rows)
        since, applied = None, set()
        if self.since_watermark:
            stored = parent.data.get("sync")
            check_identity(stored, self.source, parent.name)
            if not stored.get("has_updated_at"):
                raise RelatedError(
                    f"version {parent.name} was built from {self.source.location} without an updated_at column: "
                    "`related sync` needs one (add it, or map it with --query) and a new `related build`"
                )
            if stored.get("watermark") is not None:
                since = Watermark.from_json(stored["watermark"]).value
                applied = unpack_digests(stored.get("at_watermark"))
        self._read = self.source.read(allow_delete=True, since=since, changed_only=self.since_watermark, applied=applied)
        if self._read.watermark is None and since is not None:  # no row left at or after it: keep it
            self._read.watermark = since
        log.info("%s: %d rows read, %d at the watermark already applied", self.source.location,
                 self._read.ingested.records, self._read.skipped)
        return self._read.ingested

    def describe(self) -> dict[str, Any]:
        assert self.source is not None, "read first"
        return {"url": self.source.location, "sync": self.since_watermark}

    def sync_state(self) -> dict[str, Any] | None:
        assert self.source is not None and self._read is not None, "read first"
        return self.source.sync_state(self._read)

    def digest(self) -> str:
        assert self._read is not None, "read first"
        return self._read.digest


def changes_of(source: Path | str, query: str | None = None) -> Changes:
    """A database URL or an update file."""
    if is_database_url(source):
        return DatabaseChanges(str(source), query)
    return FileChanges(Path(source))
