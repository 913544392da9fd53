"""A CMS's `articles` table, written through SQLAlchemy so the same helpers serve SQLite and PostgreSQL."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

FIRST_EDIT = datetime(2025, 6, 1, tzinfo=timezone.utc)
COLUMNS = ("id", "title", "body", "published", "lang", "category", "url")


def articles_table(metadata: sa.MetaData, *, updated_at: bool = True) -> sa.Table:
    columns = [sa.Column("id", sa.Text, primary_key=True)] + [sa.Column(name, sa.Text) for name in COLUMNS[1:]]
    if updated_at:
        columns += [sa.Column("updated_at", sa.DateTime(timezone=True)), sa.Column("deleted", sa.Boolean, default=False)]
    return sa.Table("articles", metadata, *columns)


def create_articles(url: str, records: list[dict], *, updated_at: bool = True, when: datetime = FIRST_EDIT) -> None:
    """(Re)create the table holding `records`, all edited at `when`."""
    engine = sa.create_engine(url)
    metadata = sa.MetaData()
    table = articles_table(metadata, updated_at=updated_at)
    with engine.begin() as conn:
        metadata.drop_all(conn)
        metadata.create_all(conn)
        stamp = {"updated_at": when, "deleted": False} if updated_at else {}
        conn.execute(table.insert(), [{name: r.get(name) for name in COLUMNS} | stamp for r in records])
    engine.dispose()


def save(url: str, record: dict, when: datetime, *, deleted: bool = False) -> None:
    """Insert or replace one article as a CMS does when an editor saves (or trashes) it."""
    engine = sa.create_engine(url)
    table = articles_table(sa.MetaData())
    row = {name: record.get(name) for name in COLUMNS} | {"updated_at": when, "deleted": deleted}
    with engine.begin() as conn:
        conn.execute(table.delete().where(table.c.id == record["id"]))
        conn.execute(table.insert(), [row])
    engine.dispose()


def later(minutes: float) -> datetime:
    return FIRST_EDIT + timedelta(minutes=minutes)
