"""Schemathesis over the whole OpenAPI, against `related serve` on loopback: seeded, bounded in examples
and time, every check (no server error, responses as documented, schema-valid requests accepted and
schema-violating ones refused), the admin endpoints included with their JSON Lines bodies."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.live_server import REPO, live_server
from tests.test_api import ADMIN_TOKEN, build_index, make_corpus

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
MAX_EXAMPLES = 25
MAX_SECONDS = 75


@pytest.mark.skipif(not SCHEMATHESIS.exists(), reason="schemathesis is not installed (pip install -e '.[test]')")
def test_schemathesis_finds_no_failure(tmp_path):
    from datetime import datetime, timezone

    data_dir = tmp_path / "data"
    now = datetime.now(timezone.utc)
    build_index(data_dir, now=now)
    ids = [article["id"] for article in make_corpus(now)][::3]
    with live_server(data_dir, tmp_path / "serve.log", admin_token=ADMIN_TOKEN, reload_check_seconds="0.5") as base:
        env = os.environ | {
            "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks", "RELATED_FUZZ_IDS": json.dumps(ids),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
        result = subprocess.run(
            [str(SCHEMATHESIS), "run", f"{base}/openapi.json", "--checks", "all", "--seed", "1",
             "--max-examples", str(MAX_EXAMPLES), "--max-time", str(MAX_SECONDS),
             "--header", f"Authorization: Bearer {ADMIN_TOKEN}", "--no-color"],
            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=MAX_SECONDS * 3,  # caches stay in tmp
        )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_served_openapi_lets_lang_name_only_the_index_languages(tmp_path):
    """GET and drafts answer 422 to a language the index does not hold, so the schema says so."""
    import re

    from tests.test_api import ready, related, serve

    build_index(tmp_path / "data")  # English and German articles
    with serve(tmp_path / "data") as client:
        ready(client)
        document = client.get("/openapi.json").json()
        get = document["paths"]["/v1/articles/{article_id}/related"]["get"]["parameters"]
        query_lang = next(p for p in get if p["name"] == "lang")["schema"]["anyOf"][0]["pattern"]
        draft = document["components"]["schemas"]["DraftRequest"]["properties"]["lang"]["anyOf"][0]["pattern"]
        assert query_lang == draft
        for code, accepted in [("en", True), (" DE ", True), ("any", True), ("", True), ("fr", False), ("eng", False)]:
            assert bool(re.match(query_lang, code)) is accepted, code
            assert (related(client, "flood-0", lang=code).status_code == 200) is accepted, code
