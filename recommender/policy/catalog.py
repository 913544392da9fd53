"""The per-article columns of a version: what the ranking policy filters on and what a list shows.

The build computes them from the metadata rows (and each update for the rows it adds) and
writes them as plain arrays (index.columns); the service memory-maps them, so its workers
share one page-cached copy and hold no Python object per article:

- `ids.npy` + `ids_offsets.npy`: the article ids (a string column), and `id_hashes.npy` +
  `id_rows.npy`: the id -> row index (index.columns.KeyIndex);
- `items.npy` + `items_offsets.npy`: per row, the JSON of its list item up to the score
  (`{"id":…,"title":…,"url":…,"published":…,"category":…,"lang":…,"score":`), so a served
  list is answered by concatenating bytes, as fast on the first request as on later ones;
- `lang_codes`, `category_codes`, `title_codes`, `url_codes` (int64 codes of the values, of the
  normalized title and URL: index.columns.key_code), `published` (float64 epoch seconds, NaN
  when unknown) and `evergreen` (bool), each `<name>.npy`.
"""
from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

import numpy as np
import scipy.sparse as sp
from pydantic_core import to_json

from index.artifacts import Version, VersionWriter
from index.columns import NO_CODE, KeyIndex, StringColumn, key_codes
from index.errors import CorruptArtifactError
from index.simhash import signatures
from index.sparse_kernels import SortedRows

ITEM_FIELDS = ("id", "title", "url", "published", "category", "lang")  # what a sidebar renders
SCORE_KEY = b',"score":'
STRINGS = ("ids", "items")
NUMBERS = ("lang_codes", "category_codes", "title_codes", "url_codes", "published", "evergreen")
ID_INDEX = ("id_hashes", "id_rows")
COLUMNS = tuple(f"{name}{suffix}" for name in STRINGS for suffix in ("", "_offsets")) + NUMBERS
FILES = tuple(f"{name}.npy" for name in COLUMNS + ID_INDEX)


def epoch(published: str | None) -> float:
    """ISO 8601 -> epoch seconds; NaN when unknown."""
    if not published:
        return math.nan
    return datetime.fromisoformat(published.replace("Z", "+00:00")).timestamp()


def epochs(published: Sequence[str | None]) -> np.ndarray:
    """`epoch` of many timestamps (float64): one numpy parse when all are in the stored form (UTC
    with a 'Z', articles.format_timestamp), about half the time of parsing them one by one.
    Same values: both divide whole microseconds by 10^6 with one rounding."""
    if all(p is None or p.endswith("Z") for p in published):
        try:
            moments = np.array([p[:-1] if p else "NaT" for p in published], dtype="datetime64[us]")
        except ValueError:  # not ISO 8601 as numpy reads it
            moments = None
        if moments is not None:
            micros, unknown = moments.astype(np.int64), np.isnat(moments)
            if not np.any(np.abs(micros[~unknown]) >= 2**53):  # else the float conversion would round first
                seconds = micros / 1e6
                seconds[unknown] = np.nan
                return seconds
    return np.array([epoch(p) for p in published], dtype=np.float64)


def normalize_title(title: str) -> str:
    folded = unicodedata.normalize("NFKD", title).casefold()
    return re.sub(r"\W+", " ", folded).strip()


def normalize_url(url: str | None) -> str | None:
    if not url:
        return None
    bare = re.sub(r"^[a-z]+://(www\.)?", "", url.strip().casefold())
    return bare.split("#")[0].split("?")[0].rstrip("/") or None


def item_fragment(row: dict[str, Any]) -> bytes:
    """The JSON of a list item of this metadata row, open for its score."""
    return to_json({name: row.get(name) for name in ITEM_FIELDS})[:-1] + SCORE_KEY


def language_counts(lang_codes: np.ndarray, alive: np.ndarray, items: StringColumn) -> dict[str, int]:
    """Live rows per language (rows without one left out), most first; names read from one item each."""
    codes, first, counts = np.unique(np.asarray(lang_codes)[np.asarray(alive, dtype=bool)], return_index=True, return_counts=True)
    live = np.flatnonzero(alive)
    found = {}
    for code, row, count in zip(codes.tolist(), live[first].tolist(), counts.tolist()):
        lang = item_metadata(items.raw(row))["lang"]
        if code != NO_CODE and lang:
            found[lang] = count
    return dict(sorted(found.items(), key=lambda kv: (-kv[1], kv[0])))


def item_metadata(fragment: bytes) -> dict[str, Any]:
    """What a list shows of an article (ITEM_FIELDS), from its item fragment."""
    return json.loads(fragment[: -len(SCORE_KEY)] + b"}")


@dataclass(frozen=True)
class ArticleColumns:
    """The metadata columns of some rows, in memory or memory-mapped from a version."""

    ids: StringColumn
    items: StringColumn
    lang_codes: np.ndarray
    category_codes: np.ndarray
    title_codes: np.ndarray
    url_codes: np.ndarray
    published: np.ndarray
    evergreen: np.ndarray

    @classmethod
    def from_rows(cls, rows: Sequence[dict[str, Any]]) -> ArticleColumns:
        """From metadata rows (`Article.to_metadata()` with the language set)."""
        return cls(
            ids=StringColumn.from_strings([r["id"] for r in rows]),
            items=StringColumn.from_bytes([item_fragment(r) for r in rows]),
            lang_codes=key_codes(r.get("lang") for r in rows),
            category_codes=key_codes(r.get("category") for r in rows),
            title_codes=key_codes(normalize_title(r.get("title") or "") for r in rows),
            url_codes=key_codes(normalize_url(r.get("url")) for r in rows),
            published=epochs([r.get("published") for r in rows]),
            evergreen=np.array([bool(r.get("evergreen")) for r in rows], dtype=bool),
        )

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> ArticleColumns:
        """From the arrays of the COLUMNS files, by name."""
        strings = {name: StringColumn(arrays[name], arrays[f"{name}_offsets"]) for name in STRINGS}
        return cls(**strings, **{name: arrays[name] for name in NUMBERS})

    @classmethod
    def load(cls, version: Version) -> ArticleColumns:
        """Memory-mapped (their segments too, index.segments)."""
        if not version.has("items.npy"):
            raise CorruptArtifactError(
                f"version {version.name} has no metadata columns (items.npy): it predates them (artifact layout 7), "
                "rebuild it with `related build`"
            )
        return cls.from_arrays({name: version.array(f"{name}.npy") for name in COLUMNS})

    def __len__(self) -> int:
        return len(self.published)

    def take(self, rows: np.ndarray) -> ArticleColumns:
        """These rows, in memory."""
        rows = np.asarray(rows, dtype=np.int64)
        strings = {name: StringColumn.from_bytes(getattr(self, name).raw_rows(rows)) for name in STRINGS}
        return ArticleColumns(**strings, **{name: np.asarray(getattr(self, name))[rows] for name in NUMBERS})

    def then(self, other: ArticleColumns) -> ArticleColumns:
        """These rows followed by `other`'s, in memory."""
        strings = {
            name: StringColumn.from_bytes(
                getattr(self, name).raw_rows(range(len(self))) + getattr(other, name).raw_rows(range(len(other)))
            )
            for name in STRINGS
        }
        numbers = {name: np.concatenate([getattr(self, name), getattr(other, name)]) for name in NUMBERS}
        return ArticleColumns(**strings, **numbers)

    def save(
        self, writer: VersionWriter, folder: str = "", *, first_row: int = 0,
        blob_before: dict[str, int] | None = None, page_offsets: dict[str, int] | None = None,
    ) -> None:
        """Write these rows as a part of the version's columns, numbered from `first_row`.

        The first part (a build) has `blob_before` None; a part appended by an update gives the
        bytes of each string column before it and `page_offsets` (index.segments.append_offset)
        so that it maps in place after them.
        """
        prefix = f"{folder}/" if folder else ""
        offset_of = (page_offsets or {}).get
        for name in STRINGS:
            blob, offsets = getattr(self, name).part(0, None if blob_before is None else blob_before[name])
            writer.save_array(f"{prefix}{name}.npy", blob, page_offset=offset_of(f"{name}.npy"))
            writer.save_array(f"{prefix}{name}_offsets.npy", offsets, page_offset=offset_of(f"{name}_offsets.npy"))
        for name in NUMBERS:
            writer.save_array(f"{prefix}{name}.npy", getattr(self, name), page_offset=offset_of(f"{name}.npy"))
        hashes, rows = KeyIndex.sorted_hashes(list(self.ids), first_row)
        writer.save_array(f"{prefix}id_hashes.npy", hashes, page_offset=offset_of("id_hashes.npy"))
        writer.save_array(f"{prefix}id_rows.npy", rows, page_offset=offset_of("id_rows.npy"))


def id_index(version: Version, ids: StringColumn) -> KeyIndex:
    """The id -> row index of a version, memory-mapped, one sorted part per segment."""
    bounds = np.cumsum(version.part_lengths("id_hashes.npy")).tolist()
    return KeyIndex(ids, version.array("id_hashes.npy"), version.array("id_rows.npy"), bounds)


@dataclass
class Catalog:
    """Per-article arrays the policy filters on and lists show, aligned with the index rows."""

    ids: StringColumn
    row_of: KeyIndex  # id -> its last row (an update re-adds an edited article as a new row)
    items: StringColumn  # item fragments (item_fragment)
    lang_codes: np.ndarray  # int64 key codes; NO_CODE when unknown
    category_codes: np.ndarray
    title_codes: np.ndarray  # codes of the normalized titles and URLs: copies share them
    url_codes: np.ndarray
    published: np.ndarray  # float64 epoch seconds, NaN when unknown
    evergreen: np.ndarray  # bool
    alive: np.ndarray  # bool: False for deleted rows
    sparse: sp.csr_matrix  # TF-IDF rows, sorted column ids in each row
    dense: np.ndarray  # [n, dims] float32, L2-normalized LSA vectors
    simhash: np.ndarray | None = None  # [n, WORDS] uint64 signatures of the TF-IDF rows; computed when None
    rows: SortedRows = field(init=False)

    def __post_init__(self) -> None:
        self.rows = SortedRows(self.sparse)
        self.sparse = self.rows.matrix
        if self.simhash is None:
            self.simhash = signatures(self.sparse)

    @classmethod
    def of(
        cls, columns: ArticleColumns, *, sparse: sp.csr_matrix, dense: np.ndarray, alive: np.ndarray,
        simhash: np.ndarray | None = None, row_of: KeyIndex | None = None,
    ) -> Catalog:
        """From metadata columns and the vectors aligned with them (an in-memory id index unless given)."""
        values = {f.name: getattr(columns, f.name) for f in fields(ArticleColumns)}
        return cls(
            **values, row_of=row_of if row_of is not None else KeyIndex.of(columns.ids), alive=np.asarray(alive, dtype=bool),
            sparse=sparse, dense=dense, simhash=simhash,
        )

    @classmethod
    def from_rows(
        cls, rows: Sequence[dict[str, Any]], *, sparse: sp.csr_matrix, dense: np.ndarray, alive: np.ndarray,
        simhash: np.ndarray | None = None,
    ) -> Catalog:
        """From metadata rows and the vectors aligned with them."""
        return cls.of(ArticleColumns.from_rows(rows), sparse=sparse, dense=dense, alive=alive, simhash=simhash)

    @classmethod
    def load(cls, version: Version, *, sparse: sp.csr_matrix, dense: np.ndarray, alive: np.ndarray,
             simhash: np.ndarray) -> Catalog:
        """A version's catalog, memory-mapped."""
        columns = ArticleColumns.load(version)
        return cls.of(columns, sparse=sparse, dense=dense, alive=alive, simhash=simhash, row_of=id_index(version, columns.ids))

    def metadata(self, row: int) -> dict[str, Any]:
        """What a list shows of the article in `row`."""
        return item_metadata(self.items.raw(row))


def write_columns(writer: VersionWriter, rows: Sequence[dict[str, Any]]) -> None:
    """A build's metadata columns (FILES), from its metadata rows."""
    ArticleColumns.from_rows(rows).save(writer)

