"""The served OpenAPI document names the languages `lang` accepts: those of the index being served.

GET and drafts answer 422 to a `lang` the index holds no article in, so a schema allowing any 2-3
letter code would promise what the API refuses (schemathesis calls that a schema-valid request
rejected). The document is FastAPI's, with the generic `lang` pattern replaced by one listing the
served version's languages; rebuilt when a new version brings other languages.
"""
from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI

from api.holder import IndexHolder
from api.schemas import LANG_PATTERN, language_pattern


def _narrowed(node: Any, pattern: str) -> Any:
    if isinstance(node, dict):
        return {key: pattern if key == "pattern" and value == LANG_PATTERN else _narrowed(value, pattern)
                for key, value in node.items()}
    if isinstance(node, list):
        return [_narrowed(value, pattern) for value in node]
    return node


def serve_language_aware_openapi(app: FastAPI, holder: IndexHolder) -> None:
    generic = app.openapi  # FastAPI's own, which caches the document it builds
    served: dict[tuple[str, ...], dict[str, Any]] = {}

    def openapi() -> dict[str, Any]:
        document = generic()
        index = holder.index
        if index is None:
            return document
        codes = tuple(sorted(index.languages))
        if codes not in served:
            served.clear()
            served[codes] = _narrowed(copy.deepcopy(document), language_pattern(codes))
        return served[codes]

    app.openapi = openapi  # type: ignore[method-assign]
