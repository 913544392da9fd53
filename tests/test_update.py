"""`related update`: adds, edits and deletes on a built version, without refitting.

Small corpora built in process (fast); lists read back through RelatedIndex as the API would.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from index import segments
from index.artifacts import Version, VersionWriter, current_version, list_versions, verify_version
from index.columns import KeyIndex, StringColumn
from index.errors import CorruptArtifactError, NoIndexError
from index.faiss_index import flat
from index.neighbours import Queries
from recommender.pipeline import update as update_module
from recommender.pipeline.build import build
from recommender.cli import main
from recommender.config import BuildConfig, PipelineConfig
from recommender.errors import ArticleNotFoundError
from recommender.policy.ranking import RelatedQuery
from recommender.related import RelatedIndex
from recommender.pipeline.update import Lists, finish_rows, score_rows, update
from tests.news_corpus import CONFIG, STORY_WORDS, article, corpus, write_jsonl

ANY = RelatedQuery(limit=10, lang="any")


def served(data: Path, article_id: str, limit: int = 10) -> list[str]:
    index = RelatedIndex.open(data)
    return [item["id"] for item in index.for_article(article_id, RelatedQuery(limit=limit, lang="any")).items]


@pytest.fixture()
def built(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    build(write_jsonl(tmp_path / "corpus.jsonl", corpus()), data, PipelineConfig.from_dict(CONFIG))
    return data


def apply(tmp_path: Path, data: Path, records: list[dict], name: str = "update.jsonl"):
    return update(write_jsonl(tmp_path / name, records), data)


def members(story: str, size: int = 6) -> list[str]:
    return [f"{story}-{i}" for i in range(size)]


def test_added_article_enters_its_story_lists(tmp_path: Path, built: Path) -> None:
    before = current_version(built)
    new = article("flood", 99, seed=5)
    report = apply(tmp_path, built, [new])
    assert report.added == 1 and report.version is not None
    assert current_version(built) == report.version.resolve() != before
    for mate in members("flood"):
        assert "flood-99" in served(built, mate, limit=6), mate
    own = served(built, "flood-99", limit=6)
    assert set(own[:5]) <= set(members("flood")), own
    manifest = json.loads((report.version / "manifest.json").read_text())
    assert manifest["kind"] == "update" and manifest["parent"] == before.name
    assert manifest["counts"]["articles"] == 37 and manifest["update"]["added"] == 1
    assert manifest["drift"]["articles_since_build"] == 1 and manifest["drift"]["base_version"] == before.name
    verify_version(report.version)  # every file, linked or rewritten, is in the manifest with its checksum


def test_edit_moves_article_to_its_new_story(tmp_path: Path, built: Path) -> None:
    assert "flood-2" in served(built, "flood-0", limit=5)
    edited = article("cup", 2, seed=9, article_id="flood-2") | {"url": "https://news.example/flood/2"}
    report = apply(tmp_path, built, [edited])
    assert report.replaced == 1 and report.refilled > 0
    index = RelatedIndex.open(built)
    assert index.size == 36  # the old row is a tombstone, the new row the article
    for mate in members("flood"):
        if mate != "flood-2":
            assert "flood-2" not in served(built, mate, limit=5), mate
            assert len(served(built, mate, limit=8)) == 8  # refilled
    for mate in members("cup"):
        assert "flood-2" in served(built, mate, limit=6), mate


def test_delete_removes_everywhere_and_refills(tmp_path: Path, built: Path) -> None:
    report = apply(tmp_path, built, [{"id": "budget-3", "deleted": True}, {"id": "no-such-id", "deleted": True}])
    assert report.deleted == 1 and report.not_found == 1
    index = RelatedIndex.open(built)
    gone = [row for row, article_id in enumerate(index.catalog.ids) if article_id == "budget-3"]
    alive = index.catalog.alive
    lists = np.asarray(index.neighbours)[alive]
    assert not np.isin(lists, gone).any()
    assert (lists >= 0).all()  # refilled: every live list is full again
    with pytest.raises(ArticleNotFoundError):
        index.for_article("budget-3", ANY)
    for mate in members("budget"):
        if mate != "budget-3":
            ids = served(built, mate, limit=10)
            assert "budget-3" not in ids and len(ids) == 10


def test_served_lists_after_an_update_equal_the_request_time_policy(tmp_path: Path, built: Path) -> None:
    edited = article("quake", 2, seed=9, article_id="flood-2")  # flood-2 now tells a quake story
    apply(tmp_path, built, [article("flood", 99, seed=5), edited, {"id": "budget-3", "deleted": True}])
    index = RelatedIndex.open(built)
    assert index.served is not None
    answered = 0
    for article_id in index.catalog.ids:
        if not index.catalog.alive[index.row_of[article_id]]:
            continue
        query = RelatedQuery(limit=3)
        answered += index.served_list(article_id, query) is not None
        fast = index.for_article(article_id, query).items
        assert fast == index.for_article(article_id, query, policy=index.policy).items, article_id
    assert answered > 0
    listed = index.served[0][index.catalog.alive]
    assert not (~index.catalog.alive)[listed[listed >= 0]].any()  # no tombstone (deleted, or edited away) is served


def test_targeted_refresh_equals_full_recomputation(tmp_path: Path, built: Path) -> None:
    """With FAISS candidates covering the corpus, merged lists are exactly a recomputation's."""
    news = [article(s, 50 + i, seed=3) for s in ("chips", "comet") for i in range(3)]
    report = apply(tmp_path, built, news)
    assert report.added == 6 and report.refreshed > 0
    index = RelatedIndex.open(built)
    params = index.config.neighbours.params()
    rows = np.flatnonzero(index.catalog.alive)
    queries = Queries(index.corpus.sparse[rows], np.asarray(index.dense)[rows], index.catalog.published[rows], rows)
    parts, _ = score_rows(index.corpus, queries, params, expand_queries=False)
    fresh, _, _ = finish_rows(index.corpus, queries, params, parts, index.corpus.expanded[rows])
    stored = Lists(np.asarray(index.neighbours)[rows], np.asarray(index.neighbour_scores)[rows])
    np.testing.assert_allclose(stored.scores, fresh.scores, rtol=1e-4, atol=1e-5)
    same = (stored.ids == fresh.ids) | np.isclose(stored.scores, fresh.scores, atol=1e-5)  # ties may swap
    assert same.all()


def test_same_update_twice_makes_no_version(tmp_path: Path, built: Path) -> None:
    records = [article("comet", 40, seed=2)]
    first = apply(tmp_path, built, records)
    assert first.version is not None
    count = len(list_versions(built))
    again = apply(tmp_path, built, records)
    assert again.version is None and again.unchanged == 1 and again.status == "unchanged"
    assert len(list_versions(built)) == count and current_version(built) == first.version.resolve()


def test_rollback_restores_previous_lists(tmp_path: Path, built: Path) -> None:
    before = served(built, "quake-0")
    version = current_version(built)
    apply(tmp_path, built, [{"id": "quake-1", "deleted": True}, article("quake", 70, seed=4)])
    assert served(built, "quake-0") != before
    result = CliRunner().invoke(main, ["rollback", "--data-dir", str(built)])
    assert result.exit_code == 0, result.output
    assert "status=ok" in result.stderr and version.name in result.stderr
    assert current_version(built) == version
    assert served(built, "quake-0") == before


def test_drift_recommends_rebuild(tmp_path: Path, built: Path) -> None:
    novel = "zorblax quintrel vashmoor pelligrue ostravane kimbrell dworak fennimore".split()
    records = [article("comet", 80 + i, seed=i, words=" ".join(novel)) for i in range(10)]
    report = apply(tmp_path, built, records)
    assert report.drift["new_share"] == pytest.approx(10 / 36, abs=1e-4)
    assert report.drift["oov_token_share"] > 0.3
    assert len(report.rebuild_reasons) == 2
    result = CliRunner().invoke(main, ["info", "--data-dir", str(built)])
    assert result.exit_code == 0 and "rebuild:    recommended" in result.output
    # A second update accumulates drift since the same full build.
    again = apply(tmp_path, built, [article("flood", 90)], name="second.jsonl")
    assert again.drift["updates_since_build"] == 2 and again.drift["articles_since_build"] == 11
    loose = BuildConfig(drift_new_share=0.9, drift_oov_share=0.9)
    assert update(write_jsonl(tmp_path / "third.jsonl", [article("flood", 91)]), built, build_config=loose).rebuild_reasons == []


def test_cli_update_summary_and_errors(tmp_path: Path, built: Path) -> None:
    source = write_jsonl(tmp_path / "u.jsonl", [article("cup", 60, seed=1)])
    result = CliRunner().invoke(main, ["update", "--source", str(source), "--data-dir", str(built)])
    assert result.exit_code == 0, result.output
    line = [entry for entry in result.stderr.splitlines() if entry.startswith("related update: status=")][-1]
    fields = dict(part.split("=", 1) for part in line.removeprefix("related update: ").split())
    assert fields["status"] == "updated" and fields["added"] == "1" and fields["version"] == current_version(built).name
    empty = tmp_path / "empty-data"
    result = CliRunner().invoke(main, ["update", "--source", str(source), "--data-dir", str(empty)])
    assert result.exit_code == 1 and "status=failed" in result.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1}\nnot json\n', encoding="utf-8")
    version = current_version(built)
    result = CliRunner().invoke(main, ["update", "--source", str(bad), "--data-dir", str(built)])
    assert result.exit_code == 1 and current_version(built) == version


def test_update_without_index_raises(tmp_path: Path) -> None:
    with pytest.raises(NoIndexError):
        update(write_jsonl(tmp_path / "u.jsonl", [article("cup", 1)]), tmp_path / "nothing")


def test_corrupt_parent_is_not_updated(tmp_path: Path, built: Path) -> None:
    version = current_version(built)
    target = version / "neighbours.npy"
    target.chmod(0o644)
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(CorruptArtifactError, match="checksum"):
        apply(tmp_path, built, [article("cup", 61)])
    assert current_version(built) == version


def test_story_words_are_distinct() -> None:  # the fixtures' premise
    words = [set(w.split()) for w in STORY_WORDS.values()]
    assert all(not (a & b) for i, a in enumerate(words) for b in words[i + 1 :])


# --------------------------------------------------------------------------- segments


def flat_copy(version_dir: Path, data: Path) -> Path:
    """The same version with every per-row artifact written as one file (what a full write would hold)."""
    version = Version.open(version_dir)
    meta = {k: v for k, v in version.manifest.data.items() if k not in ("format_version", "created", "content_hash", "files", "segments")}
    names = (set(version.manifest.files) - {p for ps in version.manifest.data.get("segments", {}).values() for p in ps}) | set(
        version.manifest.data.get("segments", {})
    )
    with VersionWriter(data) as writer:
        for name in sorted(names):
            if name == "index.faiss":
                assert version.manifest.data["index_type"] == "IndexFlatIP"
                writer.save_index(name, flat(np.asarray(version.array("dense.npy"))))
            elif name in ("id_hashes.npy", "id_rows.npy"):  # one part: one sorted index of every row
                hashes, rows = KeyIndex.sorted_hashes(list(StringColumn(version.array("ids.npy"), version.array("ids_offsets.npy"))))
                writer.save_array(name, hashes if name == "id_hashes.npy" else rows)
            elif name.endswith(".npy"):
                writer.save_array(name, np.asarray(version.array(name)))
            elif name.endswith(".jsonl"):
                writer.save_jsonl(name, version.jsonl(name))
            else:
                writer.path(name).write_bytes(version.file(name).read_bytes())
        return writer.commit(meta, "flat" + version.manifest.content_hash[:8])


def assert_same_index(a: RelatedIndex, b: RelatedIndex) -> None:
    assert list(a.catalog.ids) == list(b.catalog.ids)
    assert [a.item_metadata(row) for row in range(len(a.catalog.ids))] == [b.item_metadata(row) for row in range(len(b.catalog.ids))]
    np.testing.assert_array_equal(np.asarray(a.dense), np.asarray(b.dense))
    np.testing.assert_array_equal(np.asarray(a.neighbours), np.asarray(b.neighbours))
    np.testing.assert_array_equal(a.catalog.alive, b.catalog.alive)
    for x, y in ((a.catalog.sparse, b.catalog.sparse), (a.corpus.sparse, b.corpus.sparse), (a.corpus.expanded, b.corpus.expanded)):
        assert (x != y).nnz == 0 and x.shape == y.shape
    assert a.faiss.ntotal == b.faiss.ntotal
    for row, article_id in enumerate(a.catalog.ids):
        if a.catalog.alive[row]:
            assert a.for_article(article_id, ANY).items == b.for_article(article_id, ANY).items, article_id


def test_update_writes_only_new_rows_and_loads_like_a_full_write(tmp_path: Path, built: Path) -> None:
    base = current_version(built)
    first = apply(tmp_path, built, [article("flood", 90 + i, seed=7) for i in range(3)], "u1.jsonl")
    second = apply(tmp_path, built, [article("cup", 90, seed=7), {"id": "quake-2", "deleted": True}], "u2.jsonl")
    manifest = json.loads((second.version / "manifest.json").read_text())
    assert manifest["segments"]["dense.npy"] == ["dense.npy", "delta-0001/dense.npy", "delta-0002/dense.npy"]
    assert np.load(second.version / "delta-0002" / "dense.npy").shape[0] == 1  # only the new row is written
    for name in ("dense.npy", "tfidf_data.npy", "index.faiss", "items.npy", "articles.jsonl", "postings_rows.npy"):
        assert os.path.samefile(base / name, second.version / name)  # the build's files are shared
    assert os.path.samefile(first.version / "delta-0001/dense.npy", second.version / "delta-0001/dense.npy")
    segmented = RelatedIndex(Version.open(second.version))
    full = RelatedIndex(Version.open(flat_copy(second.version, tmp_path / "flat")))
    assert_same_index(segmented, full)
    # The rows since the build get rare-term postings of their own at load.
    assert [(block.offset, block.stop) for block in segmented.corpus.postings.blocks] == [(0, 36), (36, 40)]
    assert "cup-90" in served(built, "cup-1", limit=6)


def test_update_parts_are_written_to_be_mapped_after_the_parts_before_them(tmp_path: Path, built: Path) -> None:
    apply(tmp_path, built, [article("flood", 90, seed=7)], "u1.jsonl")
    report = apply(tmp_path, built, [article("cup", 90, seed=7), {"id": "quake-2", "deleted": True}], "u2.jsonl")
    version = Version.open(report.version)
    arrays = [name for name in version.manifest.data["segments"] if name.endswith(".npy")]
    assert {"dense.npy", "items.npy", "items_offsets.npy", "id_hashes.npy", "tfidf_indptr.npy"} <= set(arrays)
    for name in arrays:
        paths = version.paths(name)
        assert len(paths) == 3, name
        for k in (1, 2):  # each appended part's data starts, within a page, where the parts before it end
            assert segments.header(paths[k])[2] % segments.PAGE == segments.append_offset(paths[:k]), name


def test_tampered_update_part_is_refused(tmp_path: Path, built: Path) -> None:
    report = apply(tmp_path, built, [article("comet", 91, seed=1)])
    target = report.version / "delta-0001" / "signature_data.npy"
    target.chmod(0o644)
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(CorruptArtifactError, match="checksum mismatch for delta-0001/signature_data.npy"):
        Version.open(report.version)
    with pytest.raises(CorruptArtifactError, match="checksum"):
        apply(tmp_path, built, [article("comet", 92, seed=1)], "again.jsonl")
    assert current_version(built) == report.version.resolve()


def test_update_parts_are_merged_past_max_deltas_and_rebuild_compacts(
    tmp_path: Path, built: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(update_module, "MAX_DELTAS", 2)
    counts = []
    for i, story in enumerate(("flood", "budget", "chips", "quake")):
        report = apply(tmp_path, built, [article(story, 95, seed=i)], f"u{i}.jsonl")
        counts.append(len(json.loads((report.version / "manifest.json").read_text())["segments"]["dense.npy"]))
        assert f"{story}-95" in served(built, f"{story}-0", limit=6)
    assert counts == [2, 3, 2, 3]  # the third update merged the two earlier parts into its own
    assert_same_index(RelatedIndex.open(built), RelatedIndex(Version.open(flat_copy(current_version(built), tmp_path / "f"))))
    records = corpus() + [article(s, 95, seed=i) for i, s in enumerate(("flood", "budget", "chips", "quake"))]
    rebuilt = build(write_jsonl(tmp_path / "all.jsonl", records), built, PipelineConfig.from_dict(CONFIG))
    manifest = json.loads((rebuilt.version / "manifest.json").read_text())
    assert "segments" not in manifest and not any("/" in name for name in manifest["files"])
    assert "quake-95" in served(built, "quake-0", limit=6)


def test_served_lists_after_updates_equal_a_full_recomputation(tmp_path: Path, built: Path) -> None:
    """The update collapses only the lists that changed, from a catalog of their rows: same result."""
    from recommender.policy.served import served_lists

    apply(tmp_path, built, [article("flood", 97, seed=1), article("cup", 2, seed=8, article_id="budget-1")], "u1.jsonl")
    apply(tmp_path, built, [article("chips", 97, seed=1), {"id": "quake-3", "deleted": True}], "u2.jsonl")
    index = RelatedIndex.open(built)
    assert index.served is not None
    width = index.served[0].shape[1]
    expected = served_lists(index.config.policy, index.catalog, np.asarray(index.neighbours),
                            np.asarray(index.neighbour_scores), width=width)
    alive = index.catalog.alive
    np.testing.assert_array_equal(np.asarray(index.served[0])[alive], expected[0][alive])
    np.testing.assert_allclose(np.asarray(index.served[1])[alive], expected[1][alive])


def test_served_lists_past_the_budget_are_cleared_and_answered_by_the_policy(
    tmp_path: Path, built: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(update_module, "SERVED_RECOMPUTE_MAX", 2)
    report = apply(tmp_path, built, [article("flood", 98, seed=2), article("comet", 98, seed=2)])
    assert report.served_cleared > 0
    index = RelatedIndex.open(built)
    cleared = np.flatnonzero((np.asarray(index.served[0]) < 0).all(axis=1) & index.catalog.alive)
    assert cleared.size >= report.served_cleared
    unfiltered = RelatedQuery(limit=5)
    for row, article_id in enumerate(index.catalog.ids):
        if index.catalog.alive[row]:  # served or not, an unfiltered request gets what the policy says
            assert index.for_article(article_id, unfiltered).items == index.for_article(
                article_id, unfiltered, policy=index.policy
            ).items, article_id
