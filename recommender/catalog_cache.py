"""Catalog columns carried from one index load to the next.

The API reloads a whole version after every `related update`, but an update only appends
rows: the rows it already knew are the very same parsed objects (index.segments shares them
across loads). Their title and URL keys, dates and languages, a Python pass over every
article that costs about a second at 100k, are therefore computed once and extended.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from recommender.ranking import Catalog, epoch


@dataclass
class _Columns:
    rows: list[dict] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    row_of: dict[str, int] = field(default_factory=dict)
    lang: list = field(default_factory=list)
    category: list = field(default_factory=list)
    published: list[float] = field(default_factory=list)
    evergreen: list[bool] = field(default_factory=list)
    url_key: list = field(default_factory=list)
    title_key: list[str] = field(default_factory=list)

    def extended(self, rows: list[dict]) -> _Columns:
        """A new instance for `rows`, which start with self.rows; self is not changed."""
        new = rows[len(self.rows) :]
        row_of = dict(self.row_of)
        row_of.update({a["id"]: row for row, a in enumerate(new, start=len(self.rows))})  # the last row of an id wins
        return _Columns(
            rows=list(rows),
            ids=self.ids + [a["id"] for a in new],
            row_of=row_of,
            lang=self.lang + [a.get("lang") for a in new],
            category=self.category + [a.get("category") for a in new],
            published=self.published + [epoch(a.get("published")) for a in new],
            evergreen=self.evergreen + [bool(a.get("evergreen")) for a in new],
            url_key=self.url_key + [Catalog.normalize_url(a.get("url")) for a in new],
            title_key=self.title_key + [Catalog.normalize_title(a.get("title") or "") for a in new],
        )


_LAST = _Columns()
_LOCK = threading.Lock()


def _starts_with(rows: list[dict], prefix: list[dict]) -> bool:
    return len(prefix) <= len(rows) and all(a is b for a, b in zip(prefix, rows))


def catalog_from_rows(
    rows: list[dict], *, sparse: sp.csr_matrix, dense: np.ndarray, coverage: np.ndarray, alive: np.ndarray
) -> Catalog:
    """`Catalog.from_rows`, reusing the columns of the last call's rows when `rows` extends them."""
    global _LAST
    with _LOCK:
        base = _LAST if _LAST.rows and _starts_with(rows, _LAST.rows) else _Columns()
        columns = _LAST = base.extended(rows)
    return Catalog(
        ids=columns.ids,
        row_of=columns.row_of,
        lang=np.array(columns.lang, dtype=object),
        category=np.array(columns.category, dtype=object),
        published=np.array(columns.published, dtype=np.float64),
        evergreen=np.array(columns.evergreen, dtype=bool),
        alive=np.asarray(alive, dtype=bool),
        url_key=columns.url_key,
        title_key=columns.title_key,
        sparse=sparse,
        dense=dense,
        coverage=coverage,
    )
