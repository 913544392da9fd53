"""Database sources: rows validated like file records, other schemas through --query, the shipped
WordPress query on a wp_posts-shaped schema, and builds from SQLite through the CLI."""
from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from recommender.cli import main
from recommender.errors import SourceError
from recommender.pipeline.sources import read_corpus, read_source
from recommender.pipeline.sql_source import DatabaseSource, Watermark, is_database_url, resolve_query, shipped_queries
from recommender.related import RelatedIndex
from tests.cms_db import create_articles
from tests.news_corpus import article, corpus, write_config, write_jsonl


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def test_database_urls_are_told_from_files() -> None:
    for url in ("sqlite:///cms.db", "sqlite:////abs/cms.db", "postgresql+psycopg://u@h/db", "mysql+pymysql://u:p@h/wp",
                "mariadb://h/db"):
        assert is_database_url(url), url
    for other in ("corpus.jsonl", "data/sqlite.csv", "s3://bucket/corpus.jsonl", "file:///tmp/a.jsonl", "sqlite"):
        assert not is_database_url(other), other


def test_query_is_sql_a_shipped_name_or_a_file(tmp_path: Path) -> None:
    assert resolve_query(None) is None and resolve_query("  ") is None
    assert resolve_query("SELECT id, headline AS title FROM stories;") == "SELECT id, headline AS title FROM stories"
    assert "wp_posts" in resolve_query("wordpress") and "wordpress" in shipped_queries()
    (tmp_path / "mine.sql").write_text("-- our schema\nselect id, headline as title from stories\n")
    assert resolve_query(str(tmp_path / "mine.sql")) == "select id, headline as title from stories"
    with pytest.raises(SourceError, match="must be a SELECT"):
        resolve_query("DROP TABLE articles")


@given(st.one_of(
    st.datetimes(timezones=st.just(timezone.utc)), st.datetimes(), st.integers(), st.text(max_size=30),
    st.floats(allow_nan=False),
))
def test_watermark_survives_the_manifest(value: object) -> None:
    assert Watermark.from_json(Watermark(value).to_json()).value == value


def test_rows_are_validated_like_file_records(tmp_path: Path) -> None:
    good = corpus(size=2, stories=("flood", "cup"))
    bad = [
        {"id": "no-text", "title": None, "body": "  "},
        {"id": "bad-date", "title": "A title", "body": "text", "published": "yesterday-ish"},
    ]
    url = sqlite_url(tmp_path / "cms.db")
    create_articles(url, good + bad)
    con = sqlite3.connect(tmp_path / "cms.db")
    con.execute("update articles set deleted = 1 where id = 'cup-1'")  # trashed: no article, no reject
    con.commit()
    read = DatabaseSource(url, fetch_rows=2).read(allow_delete=False)
    from_file = read_source(write_jsonl(tmp_path / "same.jsonl", [r for r in good if r["id"] != "cup-1"] + bad))
    assert read.ingested.articles == from_file.articles
    assert [(r.id, r.reason) for r in read.ingested.rejects] == [(r.id, r.reason) for r in from_file.rejects]
    assert {r.id: r.reason for r in read.ingested.rejects} == {
        "no-text": "missing title and body", "bad-date": "unparseable date: 'yesterday-ish'",
    }
    assert read.ingested.records == 5 and read.has_updated_at
    # An update reads the trashed row as a deletion.
    update = DatabaseSource(url).read(allow_delete=True).ingested
    assert [d.id for d in update.deletions] == ["cup-1"]


def test_rows_are_streamed_in_batches(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "cms.db")
    create_articles(url, corpus(size=5, stories=("flood",)))
    batches: list[float] = []
    read = DatabaseSource(url, fetch_rows=2).read(allow_delete=False, progress=batches.append)
    assert len(read.ingested.articles) == 5 and batches == [2, 2, 1]


def test_other_schemas_are_mapped_by_a_query(tmp_path: Path) -> None:
    con = sqlite3.connect(tmp_path / "cms.db")
    con.execute("create table stories (story_id integer primary key, headline text, txt text, section text, ts integer)")
    con.executemany("insert into stories values (?,?,?,?,?)", [(7, "Harbour flood", "Pumps run all night", "local", 1714557600),
                                                                (8, None, None, "local", 1714557600)])
    con.commit()
    query = "SELECT story_id AS id, headline AS title, txt AS body, section AS category, ts AS published FROM stories"
    read = DatabaseSource(sqlite_url(tmp_path / "cms.db"), query).read(allow_delete=False).ingested
    assert [(a.id, a.title, a.category, a.published) for a in read.articles] == [
        ("7", "Harbour flood", "local", datetime(2024, 5, 1, 10, tzinfo=timezone.utc))
    ]
    assert [(r.line, r.id, r.reason) for r in read.rejects] == [(2, "8", "missing title and body")]


def test_unusable_sources_say_why(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="database file not found"):
        DatabaseSource(sqlite_url(tmp_path / "missing.db")).read(allow_delete=False)
    assert not (tmp_path / "missing.db").exists()  # SQLite would have created an empty one
    url = sqlite_url(tmp_path / "cms.db")
    sqlite3.connect(tmp_path / "cms.db").execute("create table other (x text)")
    with pytest.raises(SourceError, match="has no table 'articles'.*--query"):
        DatabaseSource(url).read(allow_delete=False)
    with pytest.raises(SourceError, match="needs columns named at least 'id' and 'title' or 'body'"):
        DatabaseSource(url, "select x from other").read(allow_delete=False)
    with pytest.raises(SourceError, match="cannot read .*no such table: missing"):
        DatabaseSource(url, "select id, title from missing").read(allow_delete=False)
    with pytest.raises(SourceError, match="no updated_at column"):
        DatabaseSource(url, "select x as id, x as title from other").read(allow_delete=True, changed_only=True)


WP_SCHEMA = """
create table wp_posts (ID integer primary key, post_author integer default 1, post_date text, post_date_gmt text,
  post_content text, post_title text, post_excerpt text default '', post_status text, post_password text default '',
  post_name text, post_modified text, post_modified_gmt text, post_parent integer default 0, guid text,
  post_type text, comment_count integer default 0);
create table wp_terms (term_id integer primary key, name text, slug text, term_group integer default 0);
create table wp_term_taxonomy (term_taxonomy_id integer primary key, term_id integer, taxonomy text,
  description text default '', parent integer default 0, count integer default 0);
create table wp_term_relationships (object_id integer, term_taxonomy_id integer, term_order integer default 0);
insert into wp_terms values (1, 'Politics', 'politics', 0), (2, 'Weather', 'weather', 0), (3, 'Deutsch', 'de', 0);
insert into wp_term_taxonomy values (10, 1, 'category', '', 0, 1), (20, 2, 'category', '', 0, 1),
  (30, 3, 'language', '', 0, 1);
"""


def wp_post(con: sqlite3.Connection, post_id: int, status: str, *, kind: str = "post", modified: str = "2025-06-01 08:00:00",
            password: str = "", terms: tuple[int, ...] = ()) -> None:
    a = article("flood" if post_id % 2 else "budget", post_id)
    con.execute(
        "insert into wp_posts (ID, post_date, post_date_gmt, post_content, post_title, post_status, post_password, "
        "post_name, post_modified, post_modified_gmt, guid, post_type) values (?,?,?,?,?,?,?,?,?,?,?,?)",
        (post_id, "2025-05-01 10:00:00", "2025-05-01 08:00:00", a["body"], a["title"], status, password, f"p{post_id}",
         modified, modified, f"https://news.example/?p={post_id}", kind),
    )
    con.executemany("insert into wp_term_relationships (object_id, term_taxonomy_id) values (?, ?)",
                    [(post_id, t) for t in terms])


def test_shipped_wordpress_query_reads_wp_posts(tmp_path: Path) -> None:
    con = sqlite3.connect(tmp_path / "wp.db")
    con.executescript(WP_SCHEMA)
    wp_post(con, 1, "publish", terms=(10, 20))
    wp_post(con, 2, "publish", terms=(20, 30))
    wp_post(con, 3, "trash", modified="2025-06-02 09:00:00")
    wp_post(con, 4, "draft")
    wp_post(con, 5, "publish", password="secret")
    wp_post(con, 6, "publish", kind="page")
    wp_post(con, 7, "inherit", kind="revision")
    con.commit()
    source = DatabaseSource(sqlite_url(tmp_path / "wp.db"), "wordpress")
    built = source.read(allow_delete=False)
    articles = {a.id: a for a in built.ingested.articles}
    assert sorted(articles) == ["1", "2"] and not built.ingested.rejects
    assert articles["1"].category == "Politics" and articles["2"].category == "Weather"
    assert articles["1"].url == "https://news.example/?p=1" and articles["2"].lang == "de"
    assert articles["1"].published == datetime(2025, 5, 1, 8, tzinfo=timezone.utc)
    assert built.watermark == "2025-06-01 08:00:00"
    changed = source.read(allow_delete=True, since="2025-06-02 00:00:00", changed_only=True).ingested
    assert not changed.articles and sorted(d.id for d in changed.deletions) == ["3", "4", "5"]


def test_build_from_sqlite_serves_what_the_file_serves(tmp_path: Path) -> None:
    records = corpus()
    url = sqlite_url(tmp_path / "cms.db")
    create_articles(url, records)
    config = write_config(tmp_path / "small.toml")
    runner = CliRunner()
    from_db = runner.invoke(main, ["build", "--source", url, "--data-dir", str(tmp_path / "db"), "--config", str(config)])
    assert from_db.exit_code == 0, from_db.output
    from_file = runner.invoke(main, ["build", "--source", str(write_jsonl(tmp_path / "c.jsonl", records)),
                                     "--data-dir", str(tmp_path / "file"), "--config", str(config)])
    assert from_file.exit_code == 0, from_file.output
    db, file = RelatedIndex.open(tmp_path / "db"), RelatedIndex.open(tmp_path / "file")
    assert np.array_equal(db.version.array("neighbours.npy"), file.version.array("neighbours.npy"))
    assert db.version.manifest.data["source"]["path"] == f"sqlite:///{(tmp_path / 'cms.db').resolve()}"
    again = runner.invoke(main, ["build", "--source", url, "--data-dir", str(tmp_path / "db"), "--config", str(config)])
    assert again.exit_code == 0 and "status=unchanged" in again.output
    assert len(read_corpus(url).articles) == len(records)


def test_postgres_rows_with_integer_flags_and_timestamps(postgres_url: str) -> None:
    """Native types of a real PostgreSQL: timestamptz watermarks, 0/1 integer `deleted` flags."""
    import sqlalchemy as sa

    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(sa.text("drop table if exists cms_posts"))
        conn.execute(sa.text("create table cms_posts (id bigint primary key, title text, body text, "
                             "updated_at timestamptz, deleted integer)"))
        conn.execute(sa.text("insert into cms_posts values (1, 'Harbour flood', 'Pumps', '2025-06-01 10:00+02', 0), "
                             "(2, 'Old news', 'Gone', '2025-06-01 07:00+00', 1), (3, 'Later', 'Text', '2025-06-01 09:00+00', 0)"))
    engine.dispose()
    source = DatabaseSource(postgres_url, "SELECT * FROM cms_posts")
    built = source.read(allow_delete=False)
    assert [a.id for a in built.ingested.articles] == ["1", "3"]
    assert built.watermark == datetime(2025, 6, 1, 9, tzinfo=timezone.utc)
    stamp = Watermark.from_json(Watermark(built.watermark).to_json()).value
    changed = source.read(allow_delete=True, since=stamp, changed_only=True, applied=built.at_watermark)
    assert changed.skipped == 1 and not changed.ingested.articles
    assert [d.id for d in changed.ingested.deletions] == ["2"]
