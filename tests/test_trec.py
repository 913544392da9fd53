"""TREC qrels/run files: round trips, odd ids, malformed lines, and agreement with ir_measures."""
from __future__ import annotations

import ir_measures
import pytest
from hypothesis import given
from hypothesis import strategies as st

from recommender.evaluation import trec


def test_qrels_round_trip(tmp_path):
    qrels = {"q1": {"a": 2, "b": 1, "c": 0}, "q 2": {"d%x": 1}}
    path = tmp_path / "qrels.txt"
    trec.write_qrels(path, qrels)
    assert trec.read_qrels(path) == qrels
    assert "q1 0 a 2" in path.read_text().splitlines()


def test_run_round_trip_keeps_served_order(tmp_path):
    ranked = {"q1": [("b", 0.5), ("a", 0.9), ("c", 0.9)], "q2": [("x y", 1.0)]}
    run = trec.ranked_to_run(ranked)
    path = tmp_path / "x.run"
    trec.write_run(path, run, "my config")
    lines = path.read_text().splitlines()
    assert lines[0].split() == ["q1", "Q0", "b", "1", "0.500000", "my%20config"]
    assert [line.split()[2] for line in lines[:3]] == ["b", "a", "c"]
    assert lines[3].split()[2] == "x%20y"
    back = trec.read_run(path)
    assert list(back) == ["q1", "q2"] and set(back["q2"]) == {"x y"}
    assert sorted(back["q1"], key=lambda d: -back["q1"][d]) == ["b", "a", "c"]


def test_files_read_by_ir_measures_give_our_numbers(tmp_path):
    qrels = {"q1": {"a": 2, "c": 1}}
    run = trec.ranked_to_run({"q1": [("b", 0.3), ("a", 0.3), ("c", 0.9)]})
    trec.write_qrels(tmp_path / "qrels", qrels)
    trec.write_run(tmp_path / "run", run, "t")
    ours = ir_measures.calc_aggregate([ir_measures.nDCG @ 10], qrels, run)
    theirs = ir_measures.calc_aggregate(
        [ir_measures.nDCG @ 10],
        ir_measures.read_trec_qrels(str(tmp_path / "qrels")),
        ir_measures.read_trec_run(str(tmp_path / "run")),
    )
    assert ours == pytest.approx(theirs)


@pytest.mark.parametrize(
    "text, message",
    [("q1 0 a\n", "4 fields"), ("q1 0 a high\n", "not an integer")],
)
def test_bad_qrels_lines_name_the_line(tmp_path, text, message):
    path = tmp_path / "qrels"
    path.write_text("# comment\n" + text)
    with pytest.raises(trec.TrecFormatError, match=rf":2: .*{message}"):
        trec.read_qrels(path)


def test_bad_run_line(tmp_path):
    path = tmp_path / "run"
    path.write_text("q1 Q0 a one 1.0 t\n")
    with pytest.raises(trec.TrecFormatError, match=":1: "):
        trec.read_run(path)


@given(st.text(min_size=1, max_size=30))
def test_id_encoding_round_trips(value):
    encoded = trec.encode_id(value)
    assert not any(ch.isspace() for ch in encoded)
    assert trec.decode_id(encoded) == value


@given(st.lists(st.floats(-1e6, 1e6), max_size=30))
def test_monotone_scores_strictly_decrease(scores):
    out = trec.monotone_scores(scores)
    assert all(b < a for a, b in zip(out, out[1:]))
