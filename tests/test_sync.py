"""`related sync`: a CMS's database kept in step with the index, on SQLite and on a real PostgreSQL.

One build per database backend (module scope); each test starts from a copy of it and the table
as built, changes rows as a CMS does and syncs through the CLI or the library."""
from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from index.artifacts import build_lock, current_version, read_manifest
from recommender.cli import EXIT_LOCKED, main
from recommender.config import PipelineConfig
from recommender.errors import ArticleNotFoundError, RelatedError
from recommender.pipeline import update as update_module
from recommender.pipeline.build import build
from recommender.pipeline.changes import DatabaseChanges
from recommender.pipeline.sql_source import DatabaseSource, Watermark, check_identity
from recommender.pipeline.update import update
from recommender.policy.ranking import RelatedQuery
from recommender.related import RelatedIndex
from tests.cms_db import FIRST_EDIT, create_articles, later, save
from tests.news_corpus import CONFIG, article, corpus

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(scope="module", params=["sqlite"])
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """(database URL, a data dir built from it); the table as built is corpus() edited at FIRST_EDIT."""
    backend = request.param
    root = tmp_path_factory.mktemp(f"sync-{backend}")
    url = request.getfixturevalue("postgres_url") if backend == "postgres" else f"sqlite:///{root / 'cms.db'}"
    create_articles(url, corpus())
    build(url, root / "data", PipelineConfig.from_dict(CONFIG))
    return url, root / "data"


@pytest.fixture()
def site(built: tuple[str, Path], tmp_path: Path) -> tuple[str, Path]:
    """A fresh copy of the built data dir, the table reset to what it was built from."""
    url, data = built
    create_articles(url, corpus())
    shutil.copytree(data, tmp_path / "data", symlinks=True)
    return url, tmp_path / "data"


def sync(url: str, data: Path, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["sync", "--source", url, "--data-dir", str(data), *extra])
    return result.exit_code, result.output


def listed(data: Path, article_id: str) -> list[str]:
    index = RelatedIndex.open(data)
    return [item["id"] for item in index.for_article(article_id, RelatedQuery(limit=10, lang="any")).items]


def watermark(data: Path) -> object:
    return Watermark.from_json(read_manifest(current_version(data)).data["sync"]["watermark"]).value


@pytest.mark.parametrize("built", BACKENDS, indirect=True)
def test_sync_applies_inserts_edits_and_deletions(site: tuple[str, Path]) -> None:
    url, data = site
    before = current_version(data)
    save(url, article("flood", 99, seed=3), later(5))
    save(url, article("budget", 0) | {"title": "Budget vote postponed"}, later(6))
    save(url, article("cup", 1), later(7), deleted=True)
    code, out = sync(url, data)
    assert code == 0, out
    assert "related sync: status=updated" in out and "added=1 replaced=1 deleted=1" in out
    assert current_version(data) != before
    assert "flood-99" in listed(data, "flood-0")
    index = RelatedIndex.open(data)
    assert index.item_metadata(index.row_of["budget-0"])["title"] == "Budget vote postponed"
    with pytest.raises(ArticleNotFoundError):
        listed(data, "cup-1")
    assert "cup-1" not in listed(data, "cup-0")
    stamp = watermark(data)
    assert "2025-06-01" in str(stamp) and "00:07" in str(stamp)
    # Nothing changed since: no new version, exit 0, the same one-line status as update.
    code, out = sync(url, data)
    assert code == 0 and "related sync: status=unchanged" in out and current_version(data).name in out


def test_row_saved_with_the_watermark_timestamp_is_not_lost(site: tuple[str, Path]) -> None:
    url, data = site
    save(url, article("quake", 50, seed=1), later(10))
    assert sync(url, data)[0] == 0
    save(url, article("quake", 51, seed=1), later(10))  # same second as the watermark, after the sync read
    code, out = sync(url, data)
    assert code == 0 and "added=1" in out and "quake-51" in listed(data, "quake-0")


def test_rows_applied_at_the_watermark_are_skipped_unless_saved_again(site: tuple[str, Path]) -> None:
    """The table was built with one timestamp on every row: a sync skips those rows by their digest
    instead of analysing them again, but a row saved again with that same timestamp is applied."""
    url, data = site
    report = update(DatabaseChanges(url, since_watermark=True), data)
    assert report.status == "unchanged" and report.records == 0
    save(url, article("flood", 2) | {"title": "Levee holds after the night"}, FIRST_EDIT)
    report = update(DatabaseChanges(url, since_watermark=True), data)
    assert report.records == 1 and report.replaced == 1
    index = RelatedIndex.open(data)
    assert index.item_metadata(index.row_of["flood-2"])["title"] == "Levee holds after the night"


@pytest.mark.parametrize("built", BACKENDS, indirect=True)
def test_row_changed_while_a_sync_runs(site: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """The CMS saves a row after the sync read its rows and before it publishes, stamped with the
    same time as the newest row read: the next sync applies it."""
    url, data = site
    save(url, article("comet", 40, seed=2), later(20))
    read = DatabaseSource.read
    saved: list[str] = []

    def read_then_cms_saves(self: DatabaseSource, **kwargs: object):
        result = read(self, **kwargs)
        if not saved:
            save(url, article("comet", 41, seed=2), later(20))
            saved.append("comet-41")
        return result

    monkeypatch.setattr(DatabaseSource, "read", read_then_cms_saves)
    first = update(DatabaseChanges(url, since_watermark=True), data)
    assert first.added == 1 and saved == ["comet-41"]
    assert "comet-41" not in listed(data, "comet-0")
    monkeypatch.setattr(DatabaseSource, "read", read)
    second = update(DatabaseChanges(url, since_watermark=True), data)
    assert second.added == 1 and "comet-41" in listed(data, "comet-0")


def test_a_sync_that_dies_before_publishing_is_applied_by_the_next(
    site: tuple[str, Path], monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, data = site
    before, stamp = current_version(data), watermark(data)
    save(url, article("chips", 30, seed=4), later(30))

    def crash(run: object) -> None:
        raise RelatedError("disk full")

    monkeypatch.setattr(update_module, "STAGES", tuple(
        update_module.Stage("publish", crash) if s.name == "publish" else s for s in update_module.STAGES
    ))
    code, out = sync(url, data)
    assert code == 1 and "related sync: status=failed" in out and "disk full" in out
    assert current_version(data) == before and watermark(data) == stamp
    monkeypatch.undo()
    code, out = sync(url, data)
    assert code == 0 and "added=1" in out and "chips-30" in listed(data, "chips-0")
    assert watermark(data) != stamp


def test_sync_is_locked_like_update(site: tuple[str, Path]) -> None:
    url, data = site
    with build_lock(data):
        code, out = sync(url, data)
    assert code == EXIT_LOCKED and "related sync: status=locked" in out


def test_sync_says_when_the_version_is_not_from_that_source(site: tuple[str, Path], tmp_path: Path) -> None:
    url, data = site
    other = f"sqlite:///{tmp_path / 'other.db'}"
    create_articles(other, corpus(size=2))
    code, out = sync(other, data)
    assert code == 1 and "was built from sqlite:///" in out and "not sqlite:///" in out and "status=failed" in out
    code, out = sync(url, data, "--query", "SELECT id, title, body, updated_at FROM articles")
    assert code == 1 and "with another query" in out
    code, out = sync(str(tmp_path / "corpus.jsonl"), data)
    assert code == 1 and "not a database URL" in out
    with pytest.raises(RelatedError, match="was not built from a database"):
        check_identity(None, DatabaseSource(url), "v1")


def test_sync_says_when_the_table_has_no_updated_at(site: tuple[str, Path]) -> None:
    url, data = site
    con = sqlite3.connect(url.removeprefix("sqlite:///"))
    con.execute("alter table articles drop column updated_at")
    con.commit()
    code, out = sync(url, data)
    assert code == 1 and "has no updated_at column" in out and "related sync: status=failed" in out


@pytest.mark.parametrize("built", ["postgres"], indirect=True)
def test_no_row_is_lost_while_the_cms_keeps_saving(site: tuple[str, Path]) -> None:
    """A writer saves articles with second-resolution timestamps (so several share one) while syncs
    run back to back; after a last sync every saved article is listed."""
    url, data = site
    saved: list[str] = []
    done = threading.Event()

    def cms() -> None:
        for i in range(12):
            record = article("comet", 60 + i, seed=6)
            save(url, record, datetime.now(timezone.utc).replace(microsecond=0))
            saved.append(record["id"])
            time.sleep(0.15)
        done.set()

    writer = threading.Thread(target=cms)
    writer.start()
    while not done.is_set():
        update(DatabaseChanges(url, since_watermark=True), data)
    writer.join()
    update(DatabaseChanges(url, since_watermark=True), data)
    index = RelatedIndex.open(data)
    assert len(saved) == 12 and all(article_id in index.row_of for article_id in saved)
