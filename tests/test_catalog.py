"""recommender.policy.catalog: the metadata columns a build writes and the service memory-maps."""
from __future__ import annotations

import json
import mmap
from pathlib import Path

import numpy as np
import pytest

from index.artifacts import Version, current_version
from index.columns import NO_CODE, key_code
from index.errors import CorruptArtifactError
from recommender.policy.catalog import ITEM_FIELDS, epochs, normalize_title, normalize_url
from recommender.policy.ranking import RelatedQuery
from recommender.related import RelatedIndex
from tests.corpora import build_records, newsroom


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("catalog")
    records = newsroom()
    records[0] = records[0] | {"evergreen": True, "title": "Ärger / «Flut» \"quoted\"\tand\u2028line"}
    data_dir, _ = build_records(root, records)
    return data_dir


def metadata_rows(data: Path) -> list[dict]:
    path = current_version(data) / "articles.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def mapped(array: np.ndarray) -> bool:
    """Whether an array's memory is a mapped file (not a private copy)."""
    while array is not None and not isinstance(array, (np.memmap, mmap.mmap)):
        array = getattr(array, "base", getattr(array, "obj", None))
    return array is not None


def test_columns_hold_what_the_metadata_rows_say(data: Path) -> None:
    index = RelatedIndex.open(data)
    rows = metadata_rows(data)
    catalog = index.catalog
    assert list(catalog.ids) == [r["id"] for r in rows]
    assert [index.item_metadata(i) for i in range(len(rows))] == [{k: r.get(k) for k in ITEM_FIELDS} for r in rows]
    np.testing.assert_array_equal(catalog.evergreen, [bool(r.get("evergreen")) for r in rows])
    np.testing.assert_array_equal(catalog.published, epochs([r.get("published") for r in rows]))
    np.testing.assert_array_equal(catalog.lang_codes, [key_code(r["lang"]) for r in rows])
    np.testing.assert_array_equal(catalog.category_codes, [key_code(r.get("category")) for r in rows])
    np.testing.assert_array_equal(catalog.title_codes, [key_code(normalize_title(r["title"])) for r in rows])
    np.testing.assert_array_equal(catalog.url_codes, [key_code(normalize_url(r.get("url"))) for r in rows])
    assert all(index.row_of[r["id"]] == i for i, r in enumerate(rows))
    assert "no-such-id" not in index.row_of and NO_CODE == -1


def test_the_service_maps_every_column_and_parses_no_metadata_rows(data: Path, monkeypatch) -> None:
    monkeypatch.setattr(Version, "jsonl", lambda *a: pytest.fail("the service parsed a JSON Lines artifact"))
    index = RelatedIndex.open(data)
    catalog = index.catalog
    for array in (catalog.ids.blob, catalog.ids.offsets, catalog.items.blob, catalog.items.offsets, catalog.lang_codes,
                  catalog.category_codes, catalog.title_codes, catalog.url_codes, catalog.published, catalog.evergreen,
                  catalog.alive, catalog.simhash, catalog.sparse.data, catalog.sparse.indices, index.dense,
                  index.neighbours, index.served[0], index.vectorizer._projection):
        assert mapped(array)
    article_id = next(iter(catalog.ids))
    assert index.for_article(article_id, RelatedQuery(limit=3)).items


def test_a_version_without_columns_asks_for_a_rebuild(data: Path, tmp_path: Path) -> None:
    version = Version.open(current_version(data))
    manifest = json.loads((version.path / "manifest.json").read_text())
    del manifest["files"]["items.npy"]
    copy = tmp_path / "old"
    copy.mkdir()
    for path in version.path.iterdir():
        (copy / path.name).symlink_to(path)
    (copy / "manifest.json").unlink()
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CorruptArtifactError, match="no metadata columns .* rebuild it"):
        RelatedIndex(Version.open(copy, verify=False))


def test_titles_and_urls_are_compared_normalized() -> None:
    assert normalize_title("ÄRGER: «Flut»!") == normalize_title("ärger  flut")
    assert normalize_url("https://www.News.example/a/?utm=1#top") == normalize_url("http://news.example/a")
    assert normalize_url("") is None and normalize_url("https://") is None
