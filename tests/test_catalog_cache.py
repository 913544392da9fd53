"""catalog_from_rows: the same Catalog as Catalog.from_rows, with the columns of known rows reused."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recommender.catalog_cache import catalog_from_rows
from recommender.ranking import Catalog


def rows(n: int, start: int = 0) -> list[dict]:
    return [
        {"id": f"a{i % 7}" if i % 5 == 0 else f"a{i}", "title": f"Title  {i}!", "url": f"https://www.x.org/{i}?q=1",
         "published": None if i % 3 else f"2024-05-0{1 + i % 9}T10:00:00Z", "lang": "en" if i % 2 else "de",
         "category": None if i % 4 else "world", "evergreen": i % 6 == 0}
        for i in range(start, start + n)
    ]


def catalog_args(n: int) -> dict:
    return {"sparse": sp.random(n, 5, density=0.5, format="csr", dtype=np.float32, random_state=0),
            "dense": np.ones((n, 3), np.float32), "alive": np.ones(n, bool)}


def assert_same(a: Catalog, b: Catalog) -> None:
    for name in ("ids", "row_of", "url_key", "title_key"):
        assert getattr(a, name) == getattr(b, name), name
    for name in ("lang", "category", "evergreen", "alive", "lang_codes", "title_codes", "url_codes"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    np.testing.assert_array_equal(a.published, b.published)


def test_extended_rows_give_the_catalog_from_rows_gives() -> None:
    first = rows(30)
    assert_same(catalog_from_rows(first, **catalog_args(30)), Catalog.from_rows(first, **catalog_args(30)))
    grown = first + rows(12, start=30)  # same row objects first, as index.segments hands them out
    earlier = catalog_from_rows(first, **catalog_args(30))
    assert_same(catalog_from_rows(grown, **catalog_args(42)), Catalog.from_rows(grown, **catalog_args(42)))
    assert len(earlier.ids) == 30 and len(earlier.row_of) == len({r["id"] for r in first})  # untouched
    other = rows(20, start=100)  # not an extension: computed afresh
    assert_same(catalog_from_rows(other, **catalog_args(20)), Catalog.from_rows(other, **catalog_args(20)))
