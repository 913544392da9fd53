"""TREC qrels (`qid 0 docid grade`) and runs (`qid Q0 docid rank score tag`), read and written.

The files compare our numbers with trec_eval, ir_measures and ranx. TREC formats split on
whitespace, while a CMS id may contain spaces, so ids are written with whitespace and `%`
percent-encoded (`a b` -> `a%20b`) and decoded on reading; ids without those characters (all
the usual ones) are written unchanged, so the files stay plain TREC.

In memory both are `{qid: {docid: value}}` dicts, the shape ir_measures, pytrec_eval and ranx take.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from recommender.errors import RelatedError

Qrels = dict[str, dict[str, int]]
Run = dict[str, dict[str, float]]

_ENCODE = re.compile(r"[\s%]")
_DECODE = re.compile(r"%([0-9A-Fa-f]{2})")


class TrecFormatError(RelatedError):
    """A qrels or run file line that does not parse; the message names the file and line."""


def encode_id(value: str) -> str:
    if not value:
        raise ValueError("TREC ids must be non-empty")
    return _ENCODE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode("utf-8")), value)


def decode_id(value: str) -> str:
    if "%" not in value:
        return value
    raw = bytearray()
    pos = 0
    for match in _DECODE.finditer(value):
        raw += value[pos : match.start()].encode("utf-8")
        raw.append(int(match.group(1), 16))
        pos = match.end()
    raw += value[pos:].encode("utf-8")
    return raw.decode("utf-8", errors="replace")


def _lines(path: Path) -> Iterable[tuple[int, list[str]]]:
    try:
        handle = open(path, encoding="utf-8")
    except FileNotFoundError:
        raise RelatedError(f"file not found: {path}") from None
    with handle:
        for number, line in enumerate(handle, 1):
            fields = line.split()
            if fields and not fields[0].startswith("#"):
                yield number, fields


# -- qrels -------------------------------------------------------------------------------------
def write_qrels(path: Path, qrels: Mapping[str, Mapping[str, int]]) -> None:
    """One `qid 0 docid grade` line per judged pair, queries and documents in sorted order."""
    with open(path, "w", encoding="utf-8") as out:
        for qid in sorted(qrels):
            q = encode_id(qid)
            for docid in sorted(qrels[qid]):
                out.write(f"{q} 0 {encode_id(docid)} {int(qrels[qid][docid])}\n")


def read_qrels(path: Path) -> Qrels:
    qrels: Qrels = {}
    for number, fields in _lines(Path(path)):
        if len(fields) != 4:
            raise TrecFormatError(f"{path}:{number}: a qrels line has 4 fields (qid 0 docid grade), got {len(fields)}")
        try:
            grade = int(fields[3])
        except ValueError:
            raise TrecFormatError(f"{path}:{number}: grade {fields[3]!r} is not an integer") from None
        qrels.setdefault(decode_id(fields[0]), {})[decode_id(fields[2])] = grade
    return qrels


# -- runs ----------------------------------------------------------------------------------------
def monotone_scores(scores: Sequence[float], step: float = 1e-6) -> list[float]:
    """Scores made strictly decreasing, so tools that sort by score (trec_eval, ir_measures) keep our order.

    A served list is ordered by the policy (MMR, duplicate groups, freshness), not always by score;
    each score is lowered just below its predecessor where needed.
    """
    out: list[float] = []
    for score in scores:
        value = float(score) if math.isfinite(score) else 0.0
        if out and value >= out[-1] - step / 2:
            value = out[-1] - step
        out.append(value)
    return out


def ranked_to_run(ranked: Mapping[str, Sequence[tuple[str, float]]]) -> Run:
    """`{qid: [(docid, score), ...] in served order}` -> run dict whose score order is that order."""
    run: Run = {}
    for qid, items in ranked.items():
        scores = monotone_scores([s for _, s in items])
        run[qid] = {docid: round(s, 6) for (docid, _), s in zip(items, scores)}
    return run


def write_run(path: Path, run: Mapping[str, Mapping[str, float]], tag: str) -> None:
    """`qid Q0 docid rank score tag`, ranks from 1 by descending score (ties: docid, as trec_eval)."""
    tag = encode_id(tag)
    with open(path, "w", encoding="utf-8") as out:
        for qid in sorted(run):
            q = encode_id(qid)
            items = sorted(run[qid].items(), key=lambda kv: (-kv[1], kv[0]))
            for rank, (docid, score) in enumerate(items, 1):
                out.write(f"{q} Q0 {encode_id(docid)} {rank} {score:.6f} {tag}\n")


def read_run(path: Path) -> Run:
    run: Run = {}
    for number, fields in _lines(Path(path)):
        if len(fields) != 6:
            raise TrecFormatError(
                f"{path}:{number}: a run line has 6 fields (qid Q0 docid rank score tag), got {len(fields)}"
            )
        try:
            score = float(fields[4])
            int(fields[3])
        except ValueError:
            raise TrecFormatError(f"{path}:{number}: rank/score {fields[3]!r} {fields[4]!r} are not numbers") from None
        run.setdefault(decode_id(fields[0]), {})[decode_id(fields[2])] = score
    return run
