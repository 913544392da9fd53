"""JSON bodies of related lists.

Most GETs are unfiltered and answered from the precomputed served lists; for those the body
is stitched from the items' JSON fragments, which the build stored (recommender.policy.catalog) and
the index maps from its version directory, plus each item's score. Serializing ten item dicts
per request cost more than finding the list, and no fragment is rendered at request time, so
the first requests after a load are as fast as the later ones.
"""
from __future__ import annotations

from typing import Any

from pydantic_core import to_json


def render(result: Any) -> bytes:
    """Any RelatedList; NaN/inf (never expected) become null rather than invalid JSON."""
    return to_json(
        {
            "article_id": result.article_id,
            "index_version": result.index_version,
            "fill_reason": result.fill_reason,
            "items": result.items,
        },
        inf_nan_mode="null",
    )


class ServedRenderer:
    """Bodies for served lists of one index version, from its stored item fragments."""

    def __init__(self, index: Any) -> None:
        self.index = index
        self._items = index.catalog.items
        self._head = b',"index_version":' + to_json(index.name) + b',"fill_reason":null,"items":['

    def render(self, article_id: str, rows: list[int], scores: list[float]) -> bytes:
        """Scores are printed with 4 decimals, the same values as `round(score, 4)` elsewhere."""
        fragments = self._items.raw_rows(rows)
        items = b",".join([f + b"%.4f}" % s for f, s in zip(fragments, scores)])
        return b'{"article_id":' + to_json(article_id) + self._head + items + b"]}"
