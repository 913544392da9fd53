"""ETags and a small in-process LRU of rendered GET related responses.

The ETag is a hash of the index version, the article id and the normalized options, so it
can be checked before any work is done: a matching If-None-Match costs a hash, not a query.
The same key addresses the rendered body in the LRU; a version swap clears it.
"""
from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from typing import Any

NOW_BUCKET_SECONDS = 3600  # lists filtered by age relative to "now" change as time passes


def etag_for(version: str, article_id: str, options: list[Any], *, now_relative: bool = False) -> str:
    bucket = int(time.time() // NOW_BUCKET_SECONDS) if now_relative else None
    raw = repr((version, article_id, options, bucket))  # unambiguous for str/number/None/list values
    return 'W/"' + hashlib.blake2b(raw.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest() + '"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Weak comparison (RFC 9110 13.1.2): `W/"x"` matches `"x"`; `*` matches anything."""
    if not if_none_match:
        return False
    opaque = etag.removeprefix("W/")
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == opaque:
            return True
    return False


class ResponseCache:
    """LRU of rendered bodies; only touched from the event loop, so no lock."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> bytes | None:
        body = self._items.get(key)
        if body is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return body

    def put(self, key: str, body: bytes) -> None:
        if self.size <= 0:
            return
        self._items[key] = body
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def clear(self, *_: Any) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)
