"""Reading source files (JSONL or CSV, optionally gzipped) into validated articles and rejects
(database URLs: sql_source.py; `read_corpus` takes either).

File-level problems raise SourceError; record-level problems become rejects with the physical line
number where the record starts, so one bad row never stops a build and is easy to find.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from recommender.pipeline.articles import Article, Deletion, Ingested, InvalidRecord, Reject, parse_article, usable_id
from recommender.errors import SourceError
from recommender.pipeline.progress import Advance

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
CSV_SUFFIXES = (".csv",)
CSV_COLUMNS = ("id", "title", "body", "published", "lang", "category", "url", "evergreen", "deleted")
_CSV_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
_CSV_BOOLEAN_COLUMNS = ("evergreen", "deleted")
# Article bodies with markup easily exceed the csv module's default 128 KiB field limit.
_CSV_FIELD_LIMIT = 64 * 1024 * 1024
ALL_LINES = range(1, sys.maxsize)


def read_source(path: Path, *, allow_delete: bool = False, progress: Advance | None = None) -> Ingested:
    """All records of a source file, validated; deletions only count when allow_delete (update files).

    `progress` is advanced by the bytes read (of a JSONL source; uncompressed bytes when gzipped)."""
    path = Path(path)
    if not path.exists():
        raise SourceError(f"source file not found: {path}")
    if path.is_dir():
        raise SourceError(f"source is a directory, not a file: {path}")
    fmt, compressed = source_format(path)
    duplicates = LastWins()
    collector = Collector(duplicates.admit, allow_delete)
    try:
        with _open(path, compressed) as stream:
            if fmt == "csv":
                read_csv(stream, collector, path)
            else:
                read_jsonl(stream if progress is None else counted_lines(stream, progress), collector)
    except (OSError, EOFError, zlib.error) as e:
        raise SourceError(f"cannot read source file {path}: {e}") from e
    items = [item for _, item in duplicates.winners.values()]
    return Ingested(
        articles=[item for item in items if isinstance(item, Article)],
        deletions=[item for item in items if isinstance(item, Deletion)],
        rejects=sorted(collector.rejects + duplicates.rejects, key=lambda r: r.line),
        records=collector.records,
    )


def read_corpus(source: Path | str, *, query: str | None = None) -> Ingested:
    """The articles of a corpus file or of a database URL (`query`: see sql_source.resolve_query)."""
    from recommender.pipeline.sql_source import DatabaseSource, is_database_url

    if is_database_url(source):
        return DatabaseSource(str(source), query).read(allow_delete=False).ingested
    return read_source(Path(source))


def counted_lines(lines: Iterable[bytes], progress: Advance, every: int = 1 << 20) -> Iterator[bytes]:
    """`lines`, advancing `progress` by their bytes about every `every` bytes."""
    pending = 0
    for line in lines:
        pending += len(line)
        if pending >= every:
            progress(pending)
            pending = 0
        yield line
    progress(pending)


def source_format(path: Path) -> tuple[str, bool]:
    """("jsonl" | "csv", gzipped?) from the file name, so the format never depends on sniffing content."""
    suffix = path.suffix.lower()
    compressed = suffix == ".gz"
    if compressed:
        suffix = Path(path.stem).suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return "jsonl", compressed
    if suffix in CSV_SUFFIXES:
        return "csv", compressed
    known = ", ".join(JSONL_SUFFIXES + CSV_SUFFIXES)
    raise SourceError(f"unknown source format for {path}: expected one of {known} (optionally with .gz)")


def write_rejects(rejects: Iterable[Reject], path: Path) -> None:
    """One JSON object per line; lone surrogates (from JSON escapes) are written as \\uXXXX escapes."""
    with Path(path).open("w", encoding="utf-8", errors="backslashreplace", newline="\n") as f:
        for reject in rejects:
            f.write(json.dumps(reject.to_json(), ensure_ascii=False) + "\n")


class LastWins:
    """The duplicate rule: the last valid record for an id wins, earlier ones become rejects.

    Fed in line order: by the reader of a whole file, or by a Dask build with the ids its
    partitions found."""

    def __init__(self) -> None:
        self.rejects: list[Reject] = []
        self.winners: dict[str, tuple[int, Article | Deletion | None]] = {}

    def admit(self, line: int, item_id: str, item: Article | Deletion | None) -> None:
        # pop + re-insert keeps the dict ordered by the winning occurrence's line.
        previous = self.winners.pop(item_id, None)
        if previous is not None:
            self.rejects.append(Reject(previous[0], item_id, f"duplicate id: superseded by line {line}"))
        self.winners[item_id] = (line, item)


class Collector:
    """Validates records: valid ones go to `keep(line, id, item)`, the others become rejects.

    An invalid later record does not displace an earlier valid one: it is simply rejected."""

    def __init__(self, keep: Callable[[int, str, Article | Deletion], None], allow_delete: bool = False) -> None:
        self.keep = keep
        self.allow_delete = allow_delete
        self.records = 0
        self.rejects: list[Reject] = []

    def add(self, line: int, record: object) -> None:
        self.records += 1
        try:
            item = parse_article(record, allow_delete=self.allow_delete)
        except InvalidRecord as e:
            self.rejects.append(Reject(line, usable_id(record), str(e)))
            return
        self.keep(line, item.id, item)

    def reject(self, line: int, record_id: str | None, reason: str) -> None:
        self.records += 1
        self.rejects.append(Reject(line, record_id, reason))


def _open(path: Path, compressed: bool) -> BinaryIO:
    return gzip.open(path, "rb") if compressed else path.open("rb")  # type: ignore[return-value]


def read_jsonl(lines: Iterable[bytes], out: Collector, first_line: int = 1) -> None:
    """Each line is decoded on its own so one line of bad bytes costs one reject, not the file.

    `first_line`: the number of the first of `lines` in the file (a partition starts mid-file)."""
    loads = json.loads
    for line, raw in enumerate(lines, start=first_line):
        if raw.isspace():
            continue
        try:
            text = raw.decode("utf-8-sig" if line == 1 else "utf-8")
        except UnicodeDecodeError as e:
            out.reject(line, None, f"invalid UTF-8 at byte {e.start + 1}")
            continue
        try:
            record = loads(text)
        except json.JSONDecodeError as e:
            out.reject(line, None, f"invalid JSON: {e.msg} at column {e.colno}")
            continue
        except (ValueError, RecursionError) as e:  # over-long integers, absurd nesting
            out.reject(line, None, f"invalid JSON: {str(e)[:80]}")
            continue
        out.add(line, record)


def read_csv(stream: BinaryIO, out: Collector, path: Path | str, starts: range = ALL_LINES) -> None:
    """Rows as records; bad bytes are kept as surrogates by the decoder and rejected per record.

    `starts`: only the records starting on these lines (a partition); the file is parsed from the
    top all the same, since a quoted field may hold line breaks."""
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")
    reader = csv.reader(text)
    previous_limit = csv.field_size_limit(_CSV_FIELD_LIMIT)
    try:
        rows = _numbered_rows(reader)
        columns, width = _csv_header(rows, path)
        for line, row in rows:
            if line >= starts.stop:
                break
            if line < starts.start:
                continue
            if isinstance(row, csv.Error):
                out.reject(line, None, f"invalid CSV: {row}")
                continue
            record = {name: (row[i] if i < len(row) and row[i].strip() else None) for name, i in columns.items()}
            reason = _csv_problem(row, width, record)
            if reason is not None:
                out.reject(line, usable_id(record), reason)
            else:
                out.add(line, record)
    finally:
        csv.field_size_limit(previous_limit)


def _numbered_rows(reader: Iterator[list[str]]) -> Iterator[tuple[int, list[str] | csv.Error]]:
    """Non-blank rows with the physical line each starts on (quoted fields may span lines)."""
    while True:
        start = reader.line_num + 1  # type: ignore[attr-defined]
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            yield start, e
            continue
        if any(cell.strip() for cell in row):
            yield start, row


def _csv_header(rows: Iterator[tuple[int, list[str] | csv.Error]], path: Path | str) -> tuple[dict[str, int], int]:
    """Known column -> index; the header is required because column order varies between exports."""
    first = next(rows, None)
    if first is None:
        raise SourceError(f"CSV file has no header row: {path}")
    line, header = first
    if isinstance(header, csv.Error):
        raise SourceError(f"CSV header on line {line} of {path} is unreadable: {header}")
    names = [cell.strip().lower() for cell in header]
    columns: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in CSV_COLUMNS and name not in columns:
            columns[name] = i
    if "id" not in columns or not ({"title", "body"} & columns.keys()):
        shown = ", ".join(repr(n[:40]) for n in names[:10])
        raise SourceError(
            f"CSV file {path} needs a header row naming at least 'id' and 'title' or 'body'; first row was: {shown}"
        )
    return columns, len(header)


def _csv_problem(row: list[str], width: int, record: dict[str, object]) -> str | None:
    """Row-level problems the JSON validator cannot see; converts boolean cells in place."""
    if len(row) != width:
        return f"wrong number of fields: expected {width} (as in the header), got {len(row)}"
    for cell in row:
        if not cell.isascii():
            try:
                cell.encode("utf-8")
            except UnicodeEncodeError as e:
                return f"invalid UTF-8 in field {row.index(cell) + 1} at character {e.start + 1}"
    for name in _CSV_BOOLEAN_COLUMNS:
        value = record.get(name)
        if isinstance(value, str):
            flag = _CSV_BOOLEANS.get(value.strip().lower())
            if flag is None:
                return f"invalid boolean in column '{name}': {value[:40]!r} (expected true/false/1/0/yes/no)"
            record[name] = flag
    return None
