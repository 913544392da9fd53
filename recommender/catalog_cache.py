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

from recommender.ranking import Catalog


@dataclass
class _Columns:
    rows: list[dict] = field(default_factory=list)
    row_of: dict[str, int] = field(default_factory=dict)
    columns: dict[str, list] = field(default_factory=lambda: Catalog.row_columns([]))

    def extended(self, rows: list[dict]) -> _Columns:
        """A new instance for `rows`, which start with self.rows; self is not changed."""
        new = rows[len(self.rows) :]
        row_of = dict(self.row_of)
        row_of.update({a["id"]: row for row, a in enumerate(new, start=len(self.rows))})  # the last row of an id wins
        added = Catalog.row_columns(new)
        return _Columns(list(rows), row_of, {name: self.columns[name] + added[name] for name in added})


_LAST = _Columns()
_LOCK = threading.Lock()


def _starts_with(rows: list[dict], prefix: list[dict]) -> bool:
    return len(prefix) <= len(rows) and all(a is b for a, b in zip(prefix, rows))


def catalog_from_rows(
    rows: list[dict], *, sparse: sp.csr_matrix, dense: np.ndarray, alive: np.ndarray, simhash: np.ndarray | None = None
) -> Catalog:
    """`Catalog.from_rows`, reusing the columns of the last call's rows when `rows` extends them."""
    global _LAST
    with _LOCK:
        base = _LAST if _LAST.rows and _starts_with(rows, _LAST.rows) else _Columns()
        columns = _LAST = base.extended(rows)
    return Catalog.from_columns(
        columns.columns, columns.row_of, sparse=sparse, dense=dense, alive=alive, simhash=simhash
    )
