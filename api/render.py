"""JSON bodies of related lists.

Most GETs are unfiltered and answered from the precomputed served lists; for those the body
is stitched from per-article JSON fragments, rendered once per index version, plus each
item's score. Serializing ten item dicts per request cost more than finding the list.
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
    """Bodies for served lists of one index version, from memoized item fragments."""

    def __init__(self, index: Any) -> None:
        self.index = index
        self._fragments: dict[int, bytes] = {}
        self._head = b',"index_version":' + to_json(index.name) + b',"fill_reason":null,"items":['

    def _fragment(self, row: int) -> bytes:
        """`{"id":…,"lang":…,"score":` for a catalog row."""
        fragment = self._fragments[row] = to_json(self.index.item_metadata(row))[:-1] + b',"score":'
        return fragment

    def render(self, article_id: str, rows: list[int], scores: list[float]) -> bytes:
        """Scores are printed with 4 decimals, the same values as `round(score, 4)` elsewhere."""
        get = self._fragments.get
        items = b",".join([(get(r) or self._fragment(r)) + b"%.4f}" % s for r, s in zip(rows, scores)])
        return b'{"article_id":' + to_json(article_id) + self._head + items + b"]}"
