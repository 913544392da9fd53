"""What `related serve` prints when it starts: where the docs are and a URL to try.

The example uses the first article of the current version (the first line of its
articles.jsonl: one short read, not a load), so it works when copied into a browser.
"""
from __future__ import annotations

import json
from urllib.parse import quote

from api.settings import Settings
from index.artifacts import current_version

WILDCARD_HOSTS = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}


def public_base(settings: Settings) -> str:
    """A base URL a person on this machine can open (a wildcard bind becomes loopback)."""
    host = WILDCARD_HOSTS.get(settings.host, settings.host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{settings.port or 'PORT'}"  # port 0: the one uvicorn reports below


def example_article_id(settings: Settings) -> str | None:
    version = current_version(settings.data_dir)
    if version is None:
        return None
    try:
        with open(version / "articles.jsonl", encoding="utf-8") as rows:
            return json.loads(rows.readline())["id"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def startup_lines(settings: Settings) -> list[str]:
    base = public_base(settings)
    lines = [f"related serve: API docs at {base}/docs"]
    article_id = example_article_id(settings)
    if article_id is None:
        lines.append(
            f"related serve: no index version in {settings.data_dir} yet: run `related build --source FILE "
            f"--data-dir {settings.data_dir}`; this server picks it up without a restart"
        )
    else:
        path = f"/v1/articles/{quote(article_id, safe='')}"
        lines.append(f"related serve: try {base}{path}/related?limit=5 (sidebar HTML: {base}{path}/related.html)")
    return lines
