"""Copies judged apart from the ranking model: the shingle relation, novelty nDCG, and the
duplicate policy on and off in `related evaluate` on a corpus with a syndicated copy."""
from __future__ import annotations

import json
import math

import ir_measures
import pytest

from recommender.evaluation import metrics, trec
from recommender.evaluation.evaluate import config_from_dict, ideal_novel_gains, run_evaluation
from recommender.evaluation.resemblance import CopyRelation, resemblance, shingles
from recommender.pipeline.articles import Article
from tests.corpora import SMALL, merge, stories, write_jsonl

WORDS = "the harbour authority said on tuesday that the new ferry terminal will open in spring after delays".split()


def article(article_id: str, body: str, url: str | None = None) -> Article:
    return Article(article_id, "", body, None, "en", None, url)


def test_shingle_resemblance():
    text = " ".join(WORDS)
    assert len(shingles(text)) == len(WORDS) - 4
    assert shingles("Ferry, terminal!") == {"ferry terminal"}  # shorter than a shingle: one shingle
    assert shingles("") == set() and resemblance(set(), set()) == 0.0
    # casefolding and punctuation do not matter; one changed word near the end keeps resemblance high
    assert resemblance(shingles(text.upper() + "."), shingles(text)) == 1.0
    edited = " ".join(WORDS[:-1] + ["setbacks"])
    assert resemblance(shingles(edited), shingles(text)) == pytest.approx(12 / 14)


def test_copy_relation_groups_by_shingles_and_url():
    text = " ".join(WORDS)
    articles = [
        article("a", text, "https://www.port.example/ferry?utm=1"),
        article("b", text + " (Wire)"),  # 13 of its 14 shingles are a's 13: a copy
        article("c", " ".join(reversed(WORDS))),  # same words, no shared shingle
        article("d", "a correction with other words", "http://port.example/ferry/"),  # same canonical URL as a
        article("e", ""),
        article("f", ""),  # two empty bodies are no evidence of a copy
    ]
    copies = CopyRelation.of(articles)
    assert copies.pairs == {("a", "b"), ("a", "d")}
    assert copies.group["b"] == copies.group["d"] == "a" and copies.group["c"] == "c"
    assert copies.articles_with_a_copy == 3
    assert copies.copies_earlier("b", ["c", "a", "d"]) == [False, True, True]  # a copies the query; d copies a


def test_novelty_ndcg_equals_ndcg_without_copies():
    qrels = {"q": {"a": 2, "b": 1, "c": 2, "d": 1}}
    ranked = [("b", 0.9), ("x", 0.8), ("a", 0.7), ("d", 0.6)]
    plain = metrics.per_query(qrels, trec.ranked_to_run({"q": ranked}), level=2)["nDCG@10"]["q"]
    copies = CopyRelation(set(), {d: d for d in "abcdqx"})
    grades = [qrels["q"].get(d, 0) for d, _ in ranked]
    novel = metrics.novelty_ndcg(grades, [False] * 4, ideal_novel_gains(qrels["q"], "q", copies))
    assert novel == pytest.approx(plain)
    assert plain == pytest.approx(ir_measures.calc_aggregate([ir_measures.nDCG @ 10], [
        ir_measures.Qrel("q", d, g) for d, g in qrels["q"].items()], [
        ir_measures.ScoredDoc("q", d, s) for d, s in ranked])[ir_measures.nDCG @ 10])


def test_a_syndicated_copy_counts_once():
    """Story members a, b and b2 (a copy of b): listing a and b is the best list there is."""
    judged = {"a": 2, "b": 2, "b2": 2}
    copies = CopyRelation({("b", "b2")}, {"a": "a", "b": "b", "b2": "b", "q": "q"})
    ideal = ideal_novel_gains(judged, "q", copies)
    assert sorted(ideal) == [2, 2]
    assert metrics.novelty_ndcg([2, 2], copies.copies_earlier("q", ["a", "b"]), ideal) == 1.0
    # the copy listed as well gains nothing and costs nothing above it
    listed = ["b", "b2", "a"]
    flags = copies.copies_earlier("q", listed)
    assert flags == [False, True, False]
    expected = (2 + 2 / math.log2(4)) / (2 + 2 / math.log2(3))
    assert metrics.novelty_ndcg([2, 2, 2], flags, ideal) == pytest.approx(expected)
    # a copy of the query is no gain and is not in the ideal list either
    assert ideal_novel_gains({"b2": 2, "a": 2}, "b", copies) == [2]


def syndicated_corpus() -> list[dict]:
    """Six small stories; comet-0 also appears as a wire copy (same title, a credit line added)."""
    records = stories(5, ("flood", "budget", "cup", "chips", "quake", "comet"))
    original = next(r for r in records if r["id"] == "comet-0")
    wire = dict(original, id="comet-0-wire", body=original["body"] + "<p>Distributed by the wire service.</p>",
                url="https://wire.example/comet-0")
    return records + [wire]


def test_evaluate_reports_novelty_with_the_duplicate_policy_on_and_off(tmp_path):
    records = syndicated_corpus()
    corpus = write_jsonl(tmp_path / "corpus.jsonl", records)
    labels = write_jsonl(tmp_path / "labels.jsonl", [
        {"id": r["id"], "story": r["id"].split("-")[0], "category": r["category"]} for r in records])
    configs = [
        config_from_dict(dict(SMALL), "on", "test"),
        config_from_dict(merge(SMALL, {"policy": {"duplicates": False}}), "off", "test"),
    ]
    out = tmp_path / "out"
    evaluation = run_evaluation(corpus, configs, out, labels_path=labels)
    assert evaluation.copies.pairs == {("comet-0", "comet-0-wire")}
    on, off = evaluation.systems
    # policy on: the copy is collapsed, so comet-1's list shows the story's four groups and is ideal
    assert on.beyond["duplicate_rate"] == 0.0
    comet_on = [d for d, _ in on.ranked["comet-1"][:10]]
    assert len({"comet-0", "comet-0-wire"} & set(comet_on)) == 1
    assert on.per_query[metrics.NOVELTY]["comet-1"] == pytest.approx(1.0)
    assert on.per_query["nDCG@10"]["comet-1"] < 1.0  # plain nDCG misses the collapsed copy
    # policy off: both members listed, the lower one gains nothing
    assert off.beyond["duplicate_rate"] > 0.0
    assert {"comet-0", "comet-0-wire"} <= {d for d, _ in off.ranked["comet-1"][:10]}
    assert off.per_query[metrics.NOVELTY]["comet-1"] <= on.per_query[metrics.NOVELTY]["comet-1"]
    assert on.means[metrics.NOVELTY] >= off.means[metrics.NOVELTY]
    # JSON, Markdown and HTML all report both measures and the duplicate rate
    report = json.loads((out / "metrics.json").read_text())
    assert report["copy_relation"]["pairs"] == 1 and report["copy_relation"]["shingle_words"] == 5
    for config in report["configs"]:
        assert {"nDCG@10", metrics.NOVELTY} <= set(config["metrics"]) and "duplicate_rate" in config["beyond"]
    for name in ("summary.md", "report.html"):
        text = (out / name).read_text()
        assert metrics.NOVELTY in text and "dup rate" in text and "shingle" in text


def test_shipped_duplicates_off_config():
    from recommender.evaluation.evaluate import load_config

    config = load_config("duplicates_off")
    assert config.name == "duplicates_off" and config.pipeline.policy.duplicates is False
    assert config.pipeline.neighbours == load_config("default").pipeline.neighbours
