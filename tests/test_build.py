"""build(): rejects, failure safety (current untouched, no partial version), idempotence, --force."""
from __future__ import annotations

import json
import os

import pytest

import recommender.pipeline.build as build_module
from index.artifacts import VersionWriter, current_version, list_versions
from index.errors import CorruptArtifactError
from recommender.pipeline.build import build
from recommender.errors import RelatedError
from recommender.related import RelatedIndex
from tests.corpora import build_records, load_jsonl, small_config, stories, write_jsonl

GOOD = stories(size=4)  # 32 articles


def bad_lines(good_id: str) -> list[tuple[bytes, str]]:
    """(raw line, expected start of the reject reason), one of each kind."""
    def line(obj: dict) -> bytes:
        return json.dumps(obj).encode()

    return [
        (b'{"id": "broken", "title": ', "invalid JSON"),
        (line({"title": "No id", "body": "text"}), "missing id"),
        (line({"id": "no-text", "title": "", "body": "  "}), "missing title and body"),
        (line({"id": "typed", "title": 42, "body": "text"}), "wrong type for field 'title'"),
        (line({"id": "undated", "title": "t", "body": "b", "published": "next Tuesday"}), "unparseable date"),
        ('{"id": "latin1", "title": "caf\u00e9", "body": "x"}'.encode("latin-1"), "invalid UTF-8"),
        (line(dict(GOOD[0], id=good_id, title="Second version wins")), ""),  # supersedes line 1
    ]


def test_bad_records_are_rejected_with_line_and_reason_and_good_ones_indexed(tmp_path):
    bad = bad_lines(GOOD[0]["id"])
    lines = [json.dumps(r).encode() for r in GOOD] + [raw for raw, _ in bad]
    source = tmp_path / "corpus.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    data_dir = tmp_path / "data"
    report = build(source, data_dir, small_config({"build": {"max_reject_share": 0.3}}))

    reported_ids = [None, None, "no-text", "typed", "undated", None]
    expected = [(1, GOOD[0]["id"], "duplicate id: superseded by line 39")] + [
        (len(GOOD) + i + 1, reported_ids[i], reason) for i, (_, reason) in enumerate(bad[:-1])
    ]
    for rejects_file in (data_dir / "rejects.jsonl", report.version / "rejects.jsonl"):
        rejects = load_jsonl(rejects_file)
        assert [(r["line"], r["id"]) for r in rejects] == [(line, rid) for line, rid, _ in expected]
        for got, (_, _, reason) in zip(rejects, expected):
            assert got["reason"].startswith(reason), got
    assert (report.records, report.articles, report.rejects) == (len(lines), len(GOOD), 7)

    index = RelatedIndex.open(data_dir)
    assert set(index.row_of) == {r["id"] for r in GOOD}
    assert index.item_metadata(index.row_of[GOOD[0]["id"]])["title"] == "Second version wins"


def test_rejected_ids_are_reported_when_usable(tmp_path):
    source = tmp_path / "corpus.jsonl"
    source.write_bytes(b"\n".join([json.dumps(r).encode() for r in GOOD] + [json.dumps({"id": "typed", "title": 1}).encode()]))
    build(source, tmp_path / "data", small_config())
    assert load_jsonl(tmp_path / "data" / "rejects.jsonl") == [
        {"line": len(GOOD) + 1, "id": "typed", "reason": "wrong type for field 'title': expected string, got int"}
    ]


def test_too_many_rejects_fail_and_keep_the_current_version(tmp_path):
    data_dir, first = build_records(tmp_path, GOOD)
    source = tmp_path / "worse.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in GOOD[:10]) + "not json\n" * 2, encoding="utf-8")
    with pytest.raises(RelatedError, match="max_reject_share"):
        build(source, data_dir, small_config())  # 2 of 12 records rejected: 17% > 10%
    assert list_versions(data_dir) == [first.version]
    assert current_version(data_dir) == first.version.resolve()
    assert len(load_jsonl(data_dir / "rejects.jsonl")) == 2  # the operator can see why


@pytest.mark.parametrize("content", ["", "\n\n", "not json\n"])
def test_empty_corpus_is_an_error(tmp_path, content):
    source = tmp_path / "empty.jsonl"
    source.write_text(content, encoding="utf-8")
    with pytest.raises(RelatedError, match="no valid articles"):
        build(source, tmp_path / "data", small_config({"build": {"max_reject_share": 1.0}}))
    assert list_versions(tmp_path / "data") == []


def test_missing_source_is_an_error(tmp_path):
    with pytest.raises(RelatedError, match="not found"):
        build(tmp_path / "missing.jsonl", tmp_path / "data", small_config())


def test_corrupt_artifact_is_refused_at_open(tmp_path):
    data_dir, report = build_records(tmp_path, GOOD)
    target = report.version / "neighbours.npy"
    os.chmod(target, 0o644)
    raw = bytearray(target.read_bytes())
    raw[-1] ^= 0xFF
    target.write_bytes(bytes(raw))
    with pytest.raises(CorruptArtifactError, match="neighbours.npy"):
        RelatedIndex.open(data_dir)


def fail(*args, **kwargs):
    raise RuntimeError("injected failure")


@pytest.mark.parametrize("target", ["neighbours", "commit"])
def test_failed_build_leaves_the_previous_version_current(tmp_path, monkeypatch, target):
    data_dir, first = build_records(tmp_path, GOOD)
    if target == "neighbours":
        monkeypatch.setattr(build_module, "build_neighbours", fail)
    else:
        monkeypatch.setattr(VersionWriter, "commit", fail)
    with pytest.raises(RuntimeError, match="injected"):
        build(write_jsonl(tmp_path / "changed.jsonl", GOOD[:20]), data_dir, small_config())
    assert list_versions(data_dir) == [first.version]
    assert sorted(p.name for p in (data_dir / "versions").iterdir()) == [first.version.name]  # no staging left
    assert current_version(data_dir) == first.version.resolve()
    assert RelatedIndex.open(data_dir).name == first.version.name

    monkeypatch.undo()  # the lock was released: the next build succeeds
    second = build(tmp_path / "changed.jsonl", data_dir, small_config())
    assert current_version(data_dir) == second.version.resolve() != first.version.resolve()


def test_rebuild_of_the_same_input_is_a_no_op_and_force_builds_anew(tmp_path):
    data_dir, first = build_records(tmp_path, GOOD)
    assert not first.unchanged and first.articles == len(GOOD)
    again = build(tmp_path / "corpus.jsonl", data_dir, small_config())
    assert again.unchanged and again.version == first.version
    assert "unchanged" in again.summary()
    assert list_versions(data_dir) == [first.version]

    forced = build(tmp_path / "corpus.jsonl", data_dir, small_config(), force=True)
    assert not forced.unchanged and forced.version != first.version
    assert list_versions(data_dir) == [first.version, forced.version]
    assert current_version(data_dir) == forced.version.resolve()


def test_changed_artifact_config_builds_a_new_version(tmp_path):
    data_dir, first = build_records(tmp_path, GOOD)
    second = build(tmp_path / "corpus.jsonl", data_dir, small_config({"text": {"title_weight": 3}}))
    assert not second.unchanged and second.version != first.version
    assert RelatedIndex.open(data_dir).config.text.title_weight == 3


def test_policy_only_config_change_takes_effect(tmp_path):
    data_dir, _ = build_records(tmp_path, GOOD)
    build(tmp_path / "corpus.jsonl", data_dir, small_config({"policy": {"category_cap": 1}}))
    assert RelatedIndex.open(data_dir).config.policy.category_cap == 1


def test_old_versions_are_pruned_to_keep(tmp_path):
    data_dir, _ = build_records(tmp_path, GOOD, {"build": {"keep": 2}})
    for _ in range(2):
        build(tmp_path / "corpus.jsonl", data_dir, small_config({"build": {"keep": 2}}), force=True)
    versions = list_versions(data_dir)
    assert len(versions) == 2 and current_version(data_dir) == versions[-1].resolve()


def test_every_stage_shows_a_bar(tmp_path, capsys):
    source = tmp_path / "corpus.jsonl"
    write_jsonl(source, GOOD)
    build(source, tmp_path / "data", small_config(), progress=True)
    shown = capsys.readouterr().err
    for stage in ("ingest", "vectorize", "index", "neighbours", "served", "write"):
        assert f"{stage:<10}" in shown, stage
