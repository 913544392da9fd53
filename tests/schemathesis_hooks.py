"""Schemathesis hooks for tests/test_openapi_fuzz.py (loaded by the schemathesis CLI, SCHEMATHESIS_HOOKS).

- JSON Lines bodies: the OpenAPI describes `application/x-ndjson` as the array of its lines' records,
  and this serializer writes each as a line.
  A body that is not an array has no JSON Lines form; it is sent empty, which the API refuses.
- Article ids: half of the GETs ask for an id the index holds (RELATED_FUZZ_IDS), so that the fuzzing
  reaches the ranking and not only the 404.
"""
from __future__ import annotations

import json
import os

import schemathesis
from hypothesis import strategies as st

KNOWN_IDS = json.loads(os.environ.get("RELATED_FUZZ_IDS", "[]"))


@schemathesis.serializer("application/x-ndjson")
def json_lines(ctx, value) -> bytes:
    if not isinstance(value, list):
        return b""
    return b"".join(json.dumps(record, ensure_ascii=False).encode("utf-8", "surrogatepass") + b"\n"
                    for record in value)


@schemathesis.hook
def flatmap_path_parameters(ctx, path_parameters):
    if not path_parameters or "article_id" not in path_parameters or not KNOWN_IDS:
        return st.just(path_parameters)
    return st.one_of(st.just(path_parameters),
                     st.sampled_from(KNOWN_IDS).map(lambda known: {**path_parameters, "article_id": known}))
