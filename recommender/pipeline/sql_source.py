"""Articles read from a database through SQLAlchemy, validated exactly like file records.

A database source is a URL (`sqlite:///cms.db`, `postgresql+psycopg://user@host/db`,
`mysql+pymysql://user@host/wp`). By default it reads table `articles` with columns id, title,
body, published, lang, category, url, and optional evergreen, updated_at and deleted; any other
schema is mapped by a SELECT that aliases its columns to these names (`--query`, config key
`source.query`; `wordpress` names the shipped WordPress query).

Rows are streamed (server-side cursor where the driver has one, `yield_per` batches) and each
row is validated on its own: a bad row becomes a reject naming its position and its id.

`related sync` reads the rows whose `updated_at` is at or after the watermark stored in the
current version (>=, not >: a row written during the last sync with the same timestamp as the
watermark is read again), plus the ids of rows flagged `deleted`. The watermark is the largest
`updated_at` read, kept as the database returned it (a string, a number or a timestamp) and
compared by the database in its own type. With it the version keeps a 64-bit digest of every row
read at exactly that timestamp: a row at the watermark whose digest is among them is the row
already applied and is skipped before validation, so a table bulk-loaded with one timestamp
costs a read of its rows, not a re-analysis of every article, while a row saved again in the
same second (another digest) is applied.
"""
from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

from recommender.errors import RelatedError, SourceError
from recommender.pipeline.articles import Article, Deletion, Ingested
from recommender.pipeline.progress import Advance
from recommender.pipeline.sources import Collector, LastWins

# SQLAlchemy's own dialects: a URL with one of these schemes is a database, anything else a file or fsspec URL.
DIALECTS = ("sqlite", "postgresql", "mysql", "mariadb", "mssql", "oracle")
DEFAULT_TABLE = "articles"
COLUMNS = ("id", "title", "body", "published", "lang", "category", "url", "evergreen", "deleted", "updated_at")
FETCH_ROWS = 1000
_BOOLEAN_COLUMNS = ("evergreen", "deleted")


def is_database_url(source: str | Path) -> bool:
    """`dialect[+driver]://...` with a dialect SQLAlchemy ships: decided on the scheme alone, no import."""
    text = str(source)
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme.split("+", 1)[0].lower() in DIALECTS


def shipped_queries() -> dict[str, str]:
    """Name -> SQL of the queries shipped in recommender/queries/ (`--query wordpress`)."""
    folder = resources.files("recommender") / "queries"
    return {p.name.removesuffix(".sql"): p.read_text(encoding="utf-8") for p in folder.iterdir() if p.name.endswith(".sql")}


def resolve_query(query: str | None) -> str | None:
    """None/empty: the default table. A shipped name or a path to a .sql file: its text. Else SQL itself."""
    if query is None or not query.strip():
        return None
    text = query.strip()
    shipped = shipped_queries()
    if text in shipped:
        text = shipped[text]
    elif text.lower().endswith(".sql"):
        try:
            text = Path(text).read_text(encoding="utf-8")
        except OSError as err:
            raise SourceError(f"cannot read query file {query}: {err}") from None
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--")).strip().rstrip(";")
    if not text.lower().startswith(("select", "with")):
        raise SourceError(f"--query must be a SELECT (or a shipped name: {', '.join(sorted(shipped))}); got {query[:60]!r}")
    return text


@dataclass(frozen=True)
class Watermark:
    """The largest `updated_at` applied, as the database returned it, kept in a version's manifest."""

    value: Any

    def to_json(self) -> dict[str, Any]:
        value = self.value
        if isinstance(value, datetime):
            return {"type": "datetime", "value": value.isoformat()}
        if isinstance(value, date):
            return {"type": "date", "value": value.isoformat()}
        if isinstance(value, Decimal):
            return {"type": "decimal", "value": str(value)}
        return {"type": type(value).__name__, "value": value}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Watermark:
        kind, value = data["type"], data["value"]
        parse = {"datetime": datetime.fromisoformat, "date": date.fromisoformat, "decimal": Decimal}.get(kind)
        return cls(parse(value) if parse else value)


def later(a: Any, b: Any) -> Any:
    """The larger of two updated_at values (None: unknown)."""
    if a is None:
        return b
    if b is None:
        return a
    return b if _compare(b, a) > 0 else a


def _compare(a: Any, b: Any) -> int:
    try:
        return (a > b) - (a < b)
    except TypeError:
        raise SourceError(f"updated_at holds values of different types ({a!r}, {b!r}): it cannot order rows") from None


def pack_digests(digests: set[bytes]) -> str:
    """Row digests (8 bytes each) as one base64 string for the manifest."""
    return base64.b64encode(b"".join(sorted(digests))).decode("ascii")


def unpack_digests(text: str | None) -> set[bytes]:
    raw = base64.b64decode(text or "")
    return {raw[i:i + 8] for i in range(0, len(raw), 8)}


@dataclass
class Read:
    """What one read of a database source produced."""

    ingested: Ingested
    watermark: Any  # largest updated_at read (None: the source has none, or no row had one)
    at_watermark: set[bytes]  # digests of the rows read with updated_at == watermark
    digest: str  # sha256 of the rows read, canonical: same rows, same digest
    has_updated_at: bool
    skipped: int = 0  # rows at the previous watermark already applied (their digest was known)


class DatabaseSource:
    """A database URL plus the SELECT mapping its rows to article records."""

    def __init__(self, url: str, query: str | None = None, *, fetch_rows: int = FETCH_ROWS) -> None:
        self.url = url
        self.query = resolve_query(query)
        self.fetch_rows = fetch_rows
        self._engine = None

    # ------------------------------------------------------------------ identity

    @property
    def location(self) -> str:
        """The URL without its password (and a SQLite file made absolute): how manifests name it."""
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(self.url)
        except ArgumentError as err:
            raise SourceError(f"invalid database URL {self.url!r}: {err}") from None
        if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
            url = url.set(database=str(Path(url.database).resolve()))
        return url.render_as_string(hide_password=True)

    def identity(self) -> dict[str, Any]:
        """What `sync` compares with the current version's: same database, same query."""
        query = self.query or f"table {DEFAULT_TABLE}"
        return {"url": self.location, "query_sha256": hashlib.sha256(query.encode()).hexdigest()}

    def sync_state(self, read: Read) -> dict[str, Any]:
        """A version's `sync` record: which database and query, the largest updated_at applied and
        the digests of the rows applied at exactly that updated_at."""
        return {
            "identity": self.identity(),
            "has_updated_at": read.has_updated_at,
            "watermark": None if read.watermark is None else Watermark(read.watermark).to_json(),
            "at_watermark": pack_digests(read.at_watermark),
        }

    # ------------------------------------------------------------------ reading

    @property
    def engine(self):  # noqa: ANN201 - sqlalchemy.Engine, imported lazily
        if self._engine is None:
            import sqlalchemy as sa
            from sqlalchemy.exc import ArgumentError, NoSuchModuleError

            url = self.location  # validates the URL; SQLite paths made absolute
            database = sa.engine.make_url(url).database
            if url.startswith("sqlite") and database and database != ":memory:" and not Path(database).is_file():
                raise SourceError(f"database file not found: {database}")  # SQLite would create an empty one
            try:
                self._engine = sa.create_engine(self.url)
            except NoSuchModuleError as err:
                raise SourceError(f"unknown database in {self.location}: {err}") from None
            except ImportError as err:
                hint = " (pip install 'related-articles[mysql]')" if "mysql" in self.url.split(":", 1)[0] else ""
                raise SourceError(f"no driver for {self.location}: {err}{hint}") from None
            except ArgumentError as err:
                raise SourceError(f"invalid database URL {self.location}: {err}") from None
        return self._engine

    def read(
        self, *, allow_delete: bool, since: Any = None, changed_only: bool = False, applied: set[bytes] = frozenset(),
        progress: Advance | None = None,
    ) -> Read:
        """Every row, or with `changed_only` those with updated_at >= `since` (all that have one when
        `since` is None) plus the ids of the rows flagged deleted; rows at `since` whose digest is
        in `applied` are skipped.

        A build (allow_delete False) skips rows flagged deleted: they are not articles, not rejects.
        """
        from sqlalchemy.exc import SQLAlchemyError

        try:
            with self.engine.connect() as conn:
                return self._read(conn, allow_delete, since, changed_only, applied, progress)
        except SQLAlchemyError as err:
            first = str(err.orig if getattr(err, "orig", None) is not None else err).strip().splitlines()[0]
            raise SourceError(f"cannot read {self.location}: {first}") from None

    def _read(
        self, conn: Any, allow_delete: bool, since: Any, changed_only: bool, applied: set[bytes], progress: Advance | None,
    ) -> Read:
        import sqlalchemy as sa

        src = self._selectable(conn)
        names = [c.name for c in src.c]
        has_updated_at = "updated_at" in names
        if changed_only and not has_updated_at:
            raise SourceError(f"{self._what()} has no updated_at column: `related sync` needs one to find changed rows")
        deleted = None
        if "deleted" in names:  # PostgreSQL compares a 0/1 integer with true only through a cast
            deleted = sa.cast(src.c.deleted, sa.Boolean) if conn.dialect.name == "postgresql" else src.c.deleted
        delete_flag = None if deleted is None else deleted == sa.true()
        select = sa.select(*src.c)
        if changed_only:
            select = select.where(src.c.updated_at >= since if since is not None else src.c.updated_at.is_not(None))
        elif not allow_delete and delete_flag is not None:
            select = select.where(sa.or_(deleted.is_(None), deleted == sa.false()))
        duplicates = LastWins()
        collector = Collector(duplicates.admit, allow_delete)
        digest = hashlib.sha256(json.dumps(self.identity()).encode())
        watermark, at_watermark, skipped, number = None, set(), 0, 0
        streamed = conn.execution_options(stream_results=True, yield_per=self.fetch_rows)
        result = streamed.execute(select)
        names = list(result.keys())
        stamp_at = names.index("updated_at") if has_updated_at else None
        for number, values in enumerate(result, start=1):
            row = _row_digest(values)
            digest.update(row)
            stamp = None if stamp_at is None else values[stamp_at]
            if stamp is not None:
                order = 1 if watermark is None else _compare(stamp, watermark)
                if order > 0:
                    watermark, at_watermark = stamp, {row}
                elif order == 0:
                    at_watermark.add(row)
            if progress is not None and number % self.fetch_rows == 0:
                progress(self.fetch_rows)
            if applied and row in applied and stamp is not None and _compare(stamp, since) == 0:
                skipped += 1
                continue
            collector.add(number, _record(names, values))
        if progress is not None:
            progress(number % self.fetch_rows)
        if changed_only and delete_flag is not None:  # deletions without a new updated_at too
            seen = set(duplicates.winners)
            ids = streamed.execute(sa.select(src.c.id).where(delete_flag)).scalars()
            for number, article_id in enumerate(ids, start=number + 1):
                key = str(article_id) if article_id is not None else None
                if key and key not in seen:
                    duplicates.admit(number, key, Deletion(key))
                    collector.records += 1
        items = [item for _, item in duplicates.winners.values()]
        ingested = Ingested(
            articles=[i for i in items if isinstance(i, Article)],
            deletions=[i for i in items if isinstance(i, Deletion)],
            rejects=sorted(collector.rejects + duplicates.rejects, key=lambda r: r.line),
            records=collector.records,
        )
        return Read(ingested, watermark, at_watermark, digest.hexdigest(), has_updated_at, skipped)

    def _selectable(self, conn: Any) -> Any:
        """The source as a subquery whose columns are the known article columns it has."""
        import sqlalchemy as sa

        if self.query is None:
            inspector = sa.inspect(conn)
            if not inspector.has_table(DEFAULT_TABLE):
                raise SourceError(
                    f"{self.location} has no table {DEFAULT_TABLE!r}: create it, or map your schema with --query"
                )
            present = {c["name"].lower(): c["name"] for c in inspector.get_columns(DEFAULT_TABLE)}
            table = sa.table(DEFAULT_TABLE, *(sa.column(present[n]) for n in COLUMNS if n in present))
            columns = [table.c[present[n]].label(n) for n in COLUMNS if n in present]
            src = sa.select(*columns).subquery("src")
        else:
            probe = sa.select(sa.text("*")).select_from(sa.text(f"({self.query}) AS src")).where(sa.false())
            keys = list(conn.execute(probe).keys())
            known = [k for k in keys if k.lower() in COLUMNS]
            src = sa.text(self.query).columns(*(sa.column(k) for k in keys)).subquery("src")
            src = sa.select(*(src.c[k].label(k.lower()) for k in known)).subquery("src2")
        names = {c.name for c in src.c}
        if "id" not in names or not ({"title", "body"} & names):
            raise SourceError(
                f"{self._what()} needs columns named at least 'id' and 'title' or 'body' "
                f"(has: {', '.join(sorted(names)) or 'none of the known ones'})"
            )
        return src

    def _what(self) -> str:
        return f"table {DEFAULT_TABLE!r} of {self.location}" if self.query is None else f"the query on {self.location}"


def _row_digest(values: tuple) -> bytes:
    """64-bit digest of a row's values in column order (the order of COLUMNS, or of the query)."""
    text = "\x1f".join("\x00" if v is None else str(v) for v in values)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:8]


def _record(names: list[str], values: tuple) -> dict[str, Any]:
    """A row as a record in the file format: timestamps to ISO strings, 0/1 flags to booleans."""
    record = {}
    for name, value in zip(names, values):
        if name == "updated_at":
            continue
        if value is None or isinstance(value, str):
            pass
        elif isinstance(value, Decimal):
            value = int(value) if value == value.to_integral_value() else float(value)
        elif isinstance(value, (bytes, bytearray, memoryview)):
            try:
                value = bytes(value).decode("utf-8")
            except UnicodeDecodeError:
                pass  # left as bytes: validation rejects the row with the field's name
        elif name in _BOOLEAN_COLUMNS and isinstance(value, int) and not isinstance(value, bool):
            value = bool(value)
        elif isinstance(value, (datetime, date)):
            value = value.isoformat()
        record[name] = value
    return record


def check_identity(stored: Mapping[str, Any] | None, source: DatabaseSource, version: str) -> None:
    """RelatedError unless the version was built (or last synced) from this database and query."""
    if not stored or "identity" not in stored:
        raise RelatedError(
            f"current version {version} was not built from a database: run `related build --source {source.location}` first"
        )
    mine = source.identity()
    theirs = stored["identity"]
    if theirs.get("url") != mine["url"]:
        raise RelatedError(
            f"current version {version} was built from {theirs.get('url')}, not {mine['url']}: "
            f"run `related build --source {source.location}` to switch sources"
        )
    if theirs.get("query_sha256") != mine["query_sha256"]:
        raise RelatedError(
            f"current version {version} was built from {mine['url']} with another query: give the same --query "
            "(or source.query), or run `related build` with the new one"
        )
