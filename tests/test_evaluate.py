"""Evaluation: hand-computed metrics, judgments from labels, config kinds, and `related evaluate` end to end."""
from __future__ import annotations

import json
import math
from pathlib import Path

import ir_measures
import numpy as np
import pytest
import scipy.sparse as sp
from click.testing import CliRunner

from recommender.evaluation import metrics

from recommender.evaluation import trec
from recommender.cli import main
from recommender.errors import RelatedError
from recommender.evaluation.evaluate import config_from_dict, load_config, load_configs, run_evaluation
from recommender.evaluation.judgments import Labels, judgments_from_labels, judgments_from_qrels, read_labels

DEMO = Path(__file__).resolve().parents[1] / "recommender" / "demo"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


# -- metrics on a hand-computed case ------------------------------------------------------------------
def test_rank_metrics_match_hand_computation():
    qrels = {"q1": {"a": 2, "b": 1, "c": 2}, "q2": {"d": 1}}
    # q1 served: b (grade 1), x (0), a (2); c is never found.  q2 gets no list at all.
    run = trec.ranked_to_run({"q1": [("b", 0.9), ("x", 0.8), ("a", 0.7)]})
    values = metrics.per_query(qrels, run, level=2, queries=["q1", "q2"])
    dcg = 1 / math.log2(2) + 2 / math.log2(4)  # linear gains, trec_eval style
    idcg = 2 / math.log2(2) + 2 / math.log2(3) + 1 / math.log2(4)
    assert values["nDCG@10"]["q1"] == pytest.approx(dcg / idcg)
    assert values["P@5"]["q1"] == pytest.approx(1 / 5)  # only `a` has grade >= 2
    assert values["P@10"]["q1"] == pytest.approx(1 / 10)
    assert values["R@10"]["q1"] == pytest.approx(1 / 2)
    assert values["MRR@10"]["q1"] == pytest.approx(1 / 3)
    assert all(values[name]["q2"] == 0.0 for name in metrics.RANK_MEASURES)  # no list counts as 0
    assert metrics.means(values)["nDCG@10"] == pytest.approx(dcg / idcg / 2)
    # category level: b counts too
    level1 = metrics.per_query(qrels, run, level=1, queries=["q1"])
    assert level1["MRR@10"]["q1"] == 1.0 and level1["P@5"]["q1"] == pytest.approx(2 / 5)


def test_beyond_accuracy_metrics():
    vectors = sp.csr_matrix(np.array([[1, 0], [1, 0], [0, 1], [0.6, 0.8]], dtype=np.float32))
    lists = [[0, 1, 2], [2, 3]]
    assert metrics.catalog_coverage(lists, 5) == pytest.approx(4 / 5)
    # list 1 pairs: (0,1) cos 1, (0,2) 0, (1,2) 0 -> diversity 2/3; list 2: cos 0.8 -> 0.2
    assert metrics.intra_list_diversity(lists, vectors) == pytest.approx((2 / 3 + 0.2) / 2)
    assert metrics.duplicate_rate(lists, vectors, 0.9) == pytest.approx(1 / 4)
    assert metrics.set_recall([["a", "b"], ["c"]], [["a", "x"], ["c"]]) == pytest.approx(0.75)


def test_paired_test():
    same = metrics.paired_test([0.1, 0.5, 0.9], [0.1, 0.5, 0.9])
    assert same["ttest_p"] == 1.0 and same["ties"] == 3
    better = metrics.paired_test([0.1] * 20, list(np.linspace(0.3, 0.6, 20)))
    assert better["wins"] == 20 and better["ttest_p"] < 0.001 and better["wilcoxon_p"] < 0.001


# -- judgments -------------------------------------------------------------------------------------
def test_story_judgments_exclude_the_query():
    labels = Labels(
        story={"a": "s1", "b": "s1", "c": None, "d": "s2"},
        category={"a": "pol", "b": "pol", "c": "pol", "d": "pol"},
    )
    j = judgments_from_labels(labels, ["a", "b", "c", "d"], limit=100, seed=0)
    assert j.level == 2 and j.queries == ["a", "b"]  # d's story has one member
    assert j.qrels["a"] == {"b": 2, "c": 1, "d": 1}


def test_category_judgments_sample_when_no_stories():
    ids = [f"x{i}" for i in range(50)]
    labels = Labels(story=dict.fromkeys(ids), category={i: ("a" if n % 2 else "b") for n, i in enumerate(ids)} | {"x0": None})
    j = judgments_from_labels(labels, ids, limit=10, seed=3)
    assert j.level == 1 and len(j.queries) == 10 and "x0" not in j.queries
    assert j.queries == judgments_from_labels(labels, ids, limit=10, seed=3).queries
    assert all(q not in j.qrels[q] and set(j.qrels[q].values()) == {1} for q in j.queries)
    with pytest.raises(RelatedError):
        judgments_from_labels(Labels(story={"a": None}, category={"a": None}), ["a"], 10, 0)


def test_imported_qrels_keep_corpus_articles_only():
    qrels = {"a": {"b": 2, "zz": 2, "a": 2}, "b": {"a": 0}, "zz": {"a": 1}}
    j = judgments_from_qrels(qrels, ["a", "b"], limit=10, seed=0, level=None)
    assert j.queries == ["a"] and j.qrels == {"a": {"b": 2}} and j.level == 2


def test_read_labels_errors(tmp_path):
    path = tmp_path / "labels.jsonl"
    path.write_text('{"id": "a", "story": "s", "category": null, "topics": []}\n\n{"story": "s"}\n')
    with pytest.raises(RelatedError, match=":3:"):
        read_labels(path)


# -- configs -----------------------------------------------------------------------------------------
def test_config_kinds():
    assert config_from_dict({}, "x", "t").kind == "pipeline"
    pipe = config_from_dict({"kind": "pipeline", "neighbours": {"k": 20}}, "mine", "t")
    assert pipe.pipeline.neighbours.k == 20 and pipe.pipeline.name == "mine"
    bm25 = config_from_dict({"kind": "bm25", "name": "b", "params": {"k1": 1.2}}, "x", "t")
    assert bm25.name == "b" and bm25.params.k1 == 1.2
    for bad in ({"kind": "lsa"}, {"kind": "bm25", "text": {}}, {"kind": "bm25", "params": {"k9": 1}}, {"name": "a b"}):
        with pytest.raises(RelatedError):
            config_from_dict(bad, "x", "t")


def test_shipped_configs_and_defaults(tmp_path):
    assert [c.name for c in load_configs([])] == ["default", "tfidf_cosine", "bm25"]
    assert [c.kind for c in load_configs([])] == ["pipeline", "tfidf_cosine", "bm25"]
    for name in ("sparse_only", "unigrams"):
        assert load_config(name).kind == "pipeline"
    path = tmp_path / "bm25.toml"
    path.write_text('kind = "bm25"\n')
    with pytest.raises(RelatedError, match="unique"):
        load_configs(["bm25", str(path)])
    with pytest.raises(RelatedError, match="not found"):
        load_config("no-such-config")


# -- end to end --------------------------------------------------------------------------------------
def test_evaluate_demo_corpus_end_to_end(tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        ["evaluate", "--corpus", str(DEMO / "articles.jsonl"), "--labels", str(DEMO / "labels.jsonl"),
         "--out", str(out), "--queries", "60", "--config", "default", "--config", "tfidf_cosine", "--config", "bm25"],
    )
    assert result.exit_code == 0, result.output
    assert "nDCG@10" in result.output
    for name in ("metrics.json", "summary.md", "report.html", "qrels.txt", "per_query.jsonl",
                 "runs/default.run", "runs/tfidf_cosine.run", "runs/bm25.run"):
        assert (out / name).is_file(), name
    html = (out / "report.html").read_text()
    assert html.count('<img alt="') >= 4 and 'src="data:image/png;base64,iVBOR' in html
    report = json.loads((out / "metrics.json").read_text())
    assert [c["name"] for c in report["configs"]] == ["default", "tfidf_cosine", "bm25"]
    assert report["relevance_level"] == 2
    default = report["configs"][0]
    assert 0.3 < default["metrics"]["nDCG@10"] <= 1.0
    assert 0.0 <= default["ann_recall@10"] <= 1.0
    assert default["latency"]["p50_ms"] > 0 and default["build"]["seconds"] > 0
    assert report["configs"][1]["significance"]["vs"] == "default"
    assert "## Significance" in (out / "summary.md").read_text()
    # the exported files reproduce our numbers with ir_measures alone
    qrels = list(ir_measures.read_trec_qrels(str(out / "qrels.txt")))
    for config in report["configs"]:
        run = list(ir_measures.read_trec_run(str(out / "runs" / f"{config['name']}.run")))
        again = ir_measures.calc_aggregate([ir_measures.nDCG @ 10, ir_measures.R(rel=2) @ 100], qrels, run)
        assert again[ir_measures.nDCG @ 10] == pytest.approx(config["metrics"]["nDCG@10"], abs=1e-6)
        assert again[ir_measures.R(rel=2) @ 100] == pytest.approx(config["metrics"]["R@100"], abs=1e-6)

    # importing the written qrels gives the same judgments and numbers
    again = run_evaluation(DEMO / "articles.jsonl", load_configs(["tfidf_cosine"]), tmp_path / "again",
                           qrels_path=out / "qrels.txt")
    assert again.systems[0].means["nDCG@10"] == pytest.approx(report["configs"][1]["metrics"]["nDCG@10"])


def test_evaluate_needs_labels_or_qrels(tmp_path):
    result = CliRunner().invoke(main, ["evaluate", "--corpus", str(DEMO / "articles.jsonl"), "--out", str(tmp_path)])
    assert result.exit_code == 1 and "--labels or --qrels" in result.output


@pytest.mark.skipif(not (SHARED / "duc2004").is_dir(), reason="../shared/data/duc2004 not available")
def test_baselines_reproduce_reference_numbers_on_duc2004(tmp_path):
    data = SHARED / "duc2004"
    evaluation = run_evaluation(data / "corpus.jsonl", load_configs(["tfidf_cosine", "bm25"]), tmp_path,
                                labels_path=data / "labels.jsonl")
    ndcg = {s.name: s.means["nDCG@10"] for s in evaluation.systems}
    assert ndcg["tfidf_cosine"] == pytest.approx(0.858, abs=0.005)
    assert ndcg["bm25"] == pytest.approx(0.840, abs=0.005)
