"""A source split into partitions that tasks on other machines read on their own.

A partition is a run of the source's lines, named by a local path or an fsspec URL (`s3://`,
`gs://`, `file://`, ...), so any worker that can open the source can read it. Uncompressed
JSONL is cut into byte ranges at line ends (each task reads only its block); gzipped or CSV
sources cannot be cut that way (gzip does not seek, a quoted CSV field may hold a line break),
so each of their tasks reads the file from the top and keeps the records that start in its run.
Line numbers are the file's, as a read of the whole file reports them: a first pass counts the
lines of every block (or of the whole stream).

Partitions report every valid record; the duplicate rule (last id wins) needs all of them and
is applied by the build's own process (`sources.LastWins`).
"""
from __future__ import annotations

import io
import math
import zlib
from dataclasses import dataclass
from itertools import islice
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

import fsspec
import numpy as np
from fsspec.utils import read_block

from recommender.pipeline.articles import Article, Reject
from recommender.errors import SourceError
from recommender.pipeline.sources import ALL_LINES, Collector, read_csv, read_jsonl, source_format

if TYPE_CHECKING:
    from distributed import Client

NEWLINE = b"\n"


@dataclass(frozen=True)
class Partition:
    """Records starting on lines [first_line, end_line) of the source (end_line None: to the end)."""

    url: str
    fmt: str  # "jsonl" or "csv"
    compression: str | None  # fsspec's name ("gzip"), None for plain files
    first_line: int
    end_line: int | None
    offset: int | None = None  # uncompressed JSONL: the block read_block cuts at this offset ...
    length: int = 0  # ... and length

    def starts(self) -> range:
        return range(self.first_line, ALL_LINES.stop if self.end_line is None else self.end_line)


@dataclass
class PartRead:
    """Every valid record of a partition with its line, and its rejects."""

    items: list[tuple[int, Article]]
    rejects: list[Reject]
    records: int

    def occurrences(self) -> tuple[np.ndarray, list[str], list[Reject], int]:
        """Lines and ids of the valid records, rejects and the record count: what the client needs."""
        lines = np.fromiter((line for line, _ in self.items), dtype=np.int64, count=len(self.items))
        return lines, [article.id for _, article in self.items], self.rejects, self.records


def plan_partitions(client: Client, url: str, partition_bytes: int) -> list[Partition]:
    """Partitions of about `partition_bytes` of (uncompressed) source each, in line order."""
    fmt, compressed = source_format(PurePosixPath(url))
    compression = "gzip" if compressed else None
    fs, path = fsspec.core.url_to_fs(url)
    if fmt == "jsonl" and compression is None:
        offsets = list(range(0, max(1, fs.size(path)), partition_bytes))
        counts = client.gather(client.map(block_lines, [url] * len(offsets), offsets, length=partition_bytes, pure=False))
        firsts = np.cumsum([1, *counts]).tolist()
        return [
            Partition(url, fmt, None, firsts[i], firsts[i + 1], offset, partition_bytes)
            for i, offset in enumerate(offsets)
        ]
    size, lines = client.submit(stream_lines, url, compression, pure=False).result()
    parts = max(1, min(lines, math.ceil(size / partition_bytes)))
    bounds = [1 + lines * i // parts for i in range(parts)] + [None]
    return [Partition(url, fmt, compression, bounds[i], bounds[i + 1]) for i in range(parts)]


def lines_in(data: bytes) -> int:
    """Lines as a binary file's iteration yields them: a last line needs no line break."""
    return data.count(NEWLINE) + (1 if data and not data.endswith(NEWLINE) else 0)


def block_lines(url: str, offset: int, length: int) -> int:
    with fsspec.open(url, "rb") as stream:
        return lines_in(read_block(stream, offset, length, delimiter=NEWLINE))


def stream_lines(url: str, compression: str | None) -> tuple[int, int]:
    """(bytes, lines) of the decompressed source."""
    size = lines = 0
    last = NEWLINE
    with fsspec.open(url, "rb", compression=compression) as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            size += len(chunk)
            lines += chunk.count(NEWLINE)
            last = chunk[-1:]
    return size, lines + (last != NEWLINE)


def read_partition(part: Partition) -> PartRead:
    """Validate the partition's records; line numbers are the file's."""
    items: list[tuple[int, Article]] = []
    collector = Collector(lambda line, _id, item: items.append((line, item)))
    try:
        with fsspec.open(part.url, "rb", compression=part.compression) as stream:
            if part.fmt == "csv":
                read_csv(stream, collector, part.url, part.starts())
            elif part.offset is not None:
                block = read_block(stream, part.offset, part.length, delimiter=NEWLINE)
                read_jsonl(io.BytesIO(block), collector, part.first_line)
            else:
                stop = None if part.end_line is None else part.end_line - 1
                read_jsonl(islice(stream, part.first_line - 1, stop), collector, part.first_line)
    except (OSError, EOFError, zlib.error) as e:
        raise SourceError(f"cannot read source file {part.url}: {e}") from e
    return PartRead(items, collector.rejects, collector.records)
