"""Offline evaluation: labels -> graded qrels -> lists from each config -> metrics, runs, reports.

How a config names what it runs (`kind`, a top-level key of the TOML, removed before the rest is
validated, so `PipelineConfig` keeps forbidding unknown keys):

    kind = "pipeline"       # default when absent: the rest of the file is a PipelineConfig
    kind = "tfidf_cosine"   # baseline; optional [params] table: recommender.evaluation.baselines.TfidfCosineParams
    kind = "bm25"           # baseline; optional [params] table: recommender.evaluation.baselines.BM25Params
    name = "bm25"           # optional everywhere; defaults to the file name without .toml

`--config NAME` also finds the configs shipped in `recommender/configs/` (`default`,
`tfidf_cosine`, `bm25`, ...). Without any `--config`: default pipeline, tfidf_cosine, bm25.

Relevance (DESIGN.md): grade 2 same non-null story, 1 same non-null category, 0 otherwise; the query
article itself is never judged. Queries are the articles whose story has >= 2 members in the corpus
or, when the labels have no such story, the articles whose category has >= 2 members; if there are
more than `--queries` of them, a seeded sample of that many. Articles without anything relevant would
score 0 for every config and only dilute differences, so they are never queries. P@k, R@k and MRR count
grade >= 2 (same story) when stories exist, else grade >= 1 (same category); nDCG@10 uses the grades.

Lists: the top 10 is the list a sidebar serves (`for_article(limit=10)`, timed for the latency figures);
ranks 11..100, for R@100, come from a second `for_article(limit=100)` call, appended after the served
10 without repeats. The TREC run files hold exactly these merged lists, with scores made strictly
decreasing in served order so that trec_eval / ir_measures on the files reproduce our numbers.

Copies are judged by a relation that does not come from any ranking model
(recommender/evaluation/resemblance.py): word 5-shingle resemblance >= 0.8 of the bodies, or the same
canonical URL. `novelty_nDCG@10` gives a listed item that copies the query, or copies an item listed
above it, no gain, and its ideal ranking counts one member per copy group (connected component of the
relation; members that copy the query are left out): a policy that collapses copies is not penalised
for the copy it leaves out. Duplicate rate: the share of listed top-10 items that are such copies.

Beyond accuracy, in one reference space shared by all configs (plain TF-IDF, the tfidf_cosine
baseline's vectors, so configs are comparable whatever their own vectors): intra-list diversity
(mean pairwise 1 - cosine in each top 10), catalog coverage (share of articles in at least one
evaluated top 10).

ANN recall@10 (pipeline configs): for a seeded sample of up to 200 queries, the pipeline's own scoring
(`index.neighbours.query_neighbours`: both passes, dense blend, time factor) runs over exhaustive
candidates (a brute-force IndexFlatIP over the same dense vectors, all articles wide); its top 100 go
through the same policy; recall = |served top 10 ∩ exact top 10| / |exact top 10|.

Build cost: wall time of build() (or the baseline's fit) in this process, and peak memory as the highest
RSS sampled every 20 ms during it minus the RSS before it (`peak_rss_delta_mb`; memory already held by
the process is not counted, allocations shorter than a sample can be missed). A build reused by content
hash reports `reused: true` and its (tiny) reuse time; pass `force_build` for real figures.
"""
from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
import tomllib
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from pydantic import BaseModel, ValidationError

from recommender.evaluation import metrics as m
from recommender.evaluation import trec
from recommender.evaluation.judgments import Judgments, Labels, judgments_from_labels, judgments_from_qrels, read_labels, sample
from recommender.evaluation.resemblance import RESEMBLANCE, SHINGLE_WORDS, CopyRelation
from recommender.vectors.language import detect_language
from recommender.pipeline.articles import Article
from recommender.evaluation.baselines import BM25, BM25Params, TfidfCosine, TfidfCosineParams
from recommender.config import PipelineConfig
from recommender.errors import RelatedError
from recommender.pipeline.sources import read_corpus
from recommender.pipeline.sql_source import is_database_url

log = logging.getLogger("related.evaluate")

KINDS = ("pipeline", "tfidf_cosine", "bm25")
DEFAULT_CONFIGS = ("default", "tfidf_cosine", "bm25")
SERVED = 10
DEEP = 100
ANN_SAMPLE = 200
ANN_CANDIDATES = 100
NO_CATEGORY = "(none)"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


# -- configs ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalConfig:
    """One system to evaluate: our pipeline with a PipelineConfig, or a baseline with its params."""

    name: str
    kind: str
    pipeline: PipelineConfig | None = None
    params: BaseModel | None = None
    origin: str = "defaults"

    def describe(self) -> dict[str, Any]:
        settings = self.pipeline.model_dump(mode="json") if self.pipeline else self.params.model_dump(mode="json")
        return {"name": self.name, "kind": self.kind, "origin": self.origin, "settings": settings}


def shipped_config(name: str) -> Path | None:
    path = Path(str(resources.files("recommender") / "configs" / f"{name}.toml"))
    return path if path.is_file() else None


def config_from_dict(raw: dict[str, Any], name: str, origin: str) -> EvalConfig:
    raw = dict(raw)
    kind = raw.pop("kind", "pipeline")
    name = str(raw.pop("name", name))
    if kind not in KINDS:
        raise RelatedError(f"{origin}: unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    if not _SAFE_NAME.match(name):
        raise RelatedError(f"{origin}: config name {name!r} must be letters, digits, '.', '_' or '-' (max 64)")
    if kind == "pipeline":
        return EvalConfig(name, kind, pipeline=PipelineConfig.from_dict(raw | {"name": name}, origin=origin), origin=origin)
    params_raw = raw.pop("params", {})
    if raw:
        raise RelatedError(f"{origin}: a {kind} config takes only kind, name and [params]; got {', '.join(raw)}")
    model = TfidfCosineParams if kind == "tfidf_cosine" else BM25Params
    try:
        params = model.model_validate(params_raw)
    except ValidationError as err:
        problems = "; ".join(f"params.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors())
        raise RelatedError(f"invalid {origin}: {problems}") from None
    return EvalConfig(name, kind, params=params, origin=origin)


def load_config(spec: str | Path) -> EvalConfig:
    """A TOML file, or the name of a config shipped in recommender/configs/."""
    path = Path(spec)
    if not path.is_file():
        shipped = shipped_config(str(spec))
        if shipped is None:
            raise RelatedError(f"config file not found: {spec} (and no shipped config of that name)")
        path = shipped
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise RelatedError(f"config file {path} is not valid TOML: {err}") from None
    return config_from_dict(raw, path.stem, str(path))


def load_configs(specs: Sequence[str | Path]) -> list[EvalConfig]:
    configs = [load_config(s) for s in (specs or DEFAULT_CONFIGS)]
    names = Counter(c.name for c in configs)
    twice = [n for n, count in names.items() if count > 1]
    if twice:
        raise RelatedError(f"config names must be unique (set `name = ...`): {', '.join(twice)}")
    return configs


# -- measuring helpers ----------------------------------------------------------------------------
class PeakMemory:
    """Highest RSS of this process while the block runs, sampled every `interval` seconds."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.process = psutil.Process()
        self.before = self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakMemory:
        self.before = self.peak = self.process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def delta_mb(self) -> float:
        return (self.peak - self.before) / 2**20


Ranked = list[tuple[str, float]]


class System:
    """What the evaluation needs of a config: related lists by article id, and the cost of building it."""

    name: str
    config: EvalConfig
    build_info: dict[str, Any]

    def related(self, article_id: str, limit: int) -> Ranked:
        raise NotImplementedError

    def exact_recall(self, queries: Sequence[str]) -> float | None:
        """ANN recall@10 of the served lists against exhaustive search (None: the system is exact)."""
        return None


class BaselineSystem(System):
    def __init__(self, config: EvalConfig, articles: Sequence[Article]) -> None:
        self.name, self.config = config.name, config
        self.ids = [a.id for a in articles]
        self.row_of = {a: i for i, a in enumerate(self.ids)}
        model = TfidfCosine(config.params) if config.kind == "tfidf_cosine" else BM25(config.params)
        started = time.perf_counter()
        with PeakMemory() as memory:
            self.model = model.fit(articles)
        self.build_info = {
            "seconds": round(time.perf_counter() - started, 3),
            "peak_rss_delta_mb": round(memory.delta_mb, 1),
            "reused": False,
        }

    def related(self, article_id: str, limit: int) -> Ranked:
        rows, scores = self.model.related(self.row_of[article_id], limit)
        return [(self.ids[r], float(s)) for r, s in zip(rows, scores)]


class PipelineSystem(System):
    def __init__(self, config: EvalConfig, corpus: Path, data_dir: Path, *, force_build: bool) -> None:
        from recommender.pipeline.build import build
        from recommender.policy.ranking import RelatedQuery
        from recommender.related import RelatedIndex

        self.name, self.config = config.name, config
        assert config.pipeline is not None
        started = time.perf_counter()
        with PeakMemory() as memory:
            report = build(corpus, data_dir, config.pipeline, force=force_build)
        self.build_info = {
            "seconds": round(time.perf_counter() - started, 3),
            "peak_rss_delta_mb": None if report.unchanged else round(memory.delta_mb, 1),
            "reused": report.unchanged,
            "stages": report.stages,
            "version": report.version.name if report.version else None,
        }
        self.index = RelatedIndex.open(data_dir)
        self._query = RelatedQuery

    def related(self, article_id: str, limit: int) -> Ranked:
        # Ranks past the sidebar are for R@100 only: no floor cuts them, as none cuts the baselines'.
        floor = None if limit <= SERVED else 0.0
        result = self.index.for_article(article_id, self._query(limit=limit, min_score=floor))
        return [(item["id"], float(item["score"])) for item in result.items]

    def exact_recall(self, queries: Sequence[str]) -> float | None:
        """Served top 10 vs the same scoring (both passes, time factor, policy) over exhaustive candidates.

        The query's candidates come from a brute-force IndexFlatIP over the same dense vectors, all
        articles wide; the corpus side (its stored feedback-expanded rows) stays as built.
        """
        import dataclasses

        import faiss

        from index.neighbours import query_neighbours

        index = self.index
        catalog = index.catalog
        dense = np.ascontiguousarray(np.asarray(index.dense, dtype=np.float32))
        flat = faiss.IndexFlatIP(dense.shape[1])
        flat.add(dense)
        exhaustive = dataclasses.replace(index.corpus, index=flat)
        n = dense.shape[0]
        width = min(ANN_CANDIDATES, n - 1)
        if not queries or width <= 0:
            return None
        rows = np.array([index.row_of[q] for q in queries])
        params = dataclasses.replace(index.config.neighbours.params(), k=width)
        contexts = [index.context(int(row)) for row in rows]
        ids, scores, _ = query_neighbours(exhaustive, index.queries(contexts, dense[rows]), params, width=n)
        served, exact = [], []
        for i, (article_id, ctx) in enumerate(zip(queries, contexts)):
            items = index.policy.rank(catalog, ctx, self._query(limit=SERVED), ids[i], scores[i])
            exact.append([catalog.ids[item.row] for item in items])
            served.append([d for d, _ in self.related(article_id, SERVED)])
        return m.set_recall(served, exact)


# -- evaluation ---------------------------------------------------------------------------------
@dataclass
class SystemResult:
    """Everything measured for one config; `summary()` is its part of metrics.json."""

    name: str
    kind: str
    description: dict[str, Any]
    build: dict[str, Any]
    ranked: dict[str, Ranked]  # qid -> merged list (served 10 first), real scores
    run: trec.Run
    per_query: dict[str, dict[str, float]]
    means: dict[str, float]
    beyond: dict[str, float]
    ann_recall: float | None
    latencies: list[float]
    by_language: dict[str, dict[str, float]]
    by_category: dict[str, dict[str, float]]
    significance: dict[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "config": self.description,
            "metrics": self.means,
            "beyond": self.beyond,
            "ann_recall@10": self.ann_recall,
            "latency": m.latency_summary(self.latencies),
            "build": self.build,
            "by_language": self.by_language,
            "by_category": self.by_category,
            "significance": self.significance,
        }


@dataclass
class Evaluation:
    corpus: Path
    articles: list[Article]
    judgments: Judgments
    labels: Labels | None
    query_lang: dict[str, str]
    query_category: dict[str, str]
    systems: list[SystemResult]
    seed: int
    created: str
    copies: CopyRelation
    rejects: int = 0

    def grade(self, qid: str, docid: str) -> int:
        return self.judgments.qrels.get(qid, {}).get(docid, 0)

    def summary(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "corpus": str(self.corpus),
            "articles": len(self.articles),
            "rejects": self.rejects,
            "queries": len(self.judgments.queries),
            "judgments": self.judgments.source,
            "relevance_level": self.judgments.level,
            "relevance": "P/R/MRR count grade >= level; nDCG uses grades 2 story / 1 category",
            "seed": self.seed,
            "measures": [*m.RANK_MEASURES, m.NOVELTY],
            "copy_relation": {
                "shingle_words": SHINGLE_WORDS, "resemblance": RESEMBLANCE, "same_canonical_url": True,
                "pairs": len(self.copies.pairs),
                "articles_with_a_copy": self.copies.articles_with_a_copy,
            },
            "configs": [s.summary() for s in self.systems],
        }


def breakdown(per_query: dict[str, dict[str, float]], group_of: dict[str, str]) -> dict[str, dict[str, float]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for qid, group in group_of.items():
        groups[group].append(qid)
    out = {}
    for group in sorted(groups):
        qids = groups[group]
        out[group] = {"queries": len(qids)} | {
            name: float(np.mean([values[q] for q in qids])) for name, values in per_query.items()
        }
    return out


def ideal_novel_gains(judged: dict[str, int], query: str, copies: CopyRelation) -> list[int]:
    """The gains a list could collect without copies: the best grade of each copy group,
    members that copy the query left out."""
    best: dict[str, int] = {}
    for docid, grade in judged.items():
        if grade > 0 and not copies.is_copy(query, docid):
            group = copies.group.get(docid, docid)
            best[group] = max(best.get(group, 0), grade)
    return list(best.values())


def novelty(
    ranked: dict[str, Ranked], judgments: Judgments, copies: CopyRelation, ideal: dict[str, list[int]]
) -> tuple[dict[str, float], float]:
    """Per-query novelty nDCG@10 and the pooled share of listed top-10 items that are copies."""
    values, listed, redundant = {}, 0, 0
    for qid in judgments.queries:
        items = [d for d, _ in ranked.get(qid, [])[:SERVED]]
        flags = copies.copies_earlier(qid, items)
        grades = [judgments.qrels[qid].get(d, 0) for d in items]
        values[qid] = m.novelty_ndcg(grades, flags, ideal[qid], SERVED)
        listed += len(items)
        redundant += sum(flags)
    return values, (redundant / listed if listed else math.nan)


def evaluate_system(
    system: System,
    judgments: Judgments,
    copies: CopyRelation,
    ideal: dict[str, list[int]],
    reference: TfidfCosine,
    row_of: dict[str, int],
    query_lang: dict[str, str],
    query_category: dict[str, str],
    seed: int,
    progress: Callable[[str], None] | None = None,
) -> SystemResult:
    ranked: dict[str, Ranked] = {}
    latencies: list[float] = []
    for qid in judgments.queries:
        started = time.perf_counter()
        served = system.related(qid, SERVED)
        latencies.append(time.perf_counter() - started)
        if len(served) < SERVED:  # the floor (or the corpus) ended the list: nothing ranks below it
            ranked[qid] = served
            continue
        seen = {d for d, _ in served}
        deep = [(d, s) for d, s in system.related(qid, DEEP) if d not in seen]
        ranked[qid] = (served + deep)[:DEEP]
    run = trec.ranked_to_run(ranked)
    values = m.per_query(judgments.qrels, run, judgments.level, judgments.queries)
    values[m.NOVELTY], duplicates = novelty(ranked, judgments, copies, ideal)
    lists = [[row_of[d] for d, _ in ranked[q][:SERVED]] for q in judgments.queries]
    vectors = reference.vectors_
    beyond = {
        "catalog_coverage": m.catalog_coverage(lists, len(row_of)),
        "intra_list_diversity": m.intra_list_diversity(lists, vectors),
        "duplicate_rate": duplicates,
        "mean_list_length": float(np.mean([len(x) for x in lists])) if lists else math.nan,
    }
    if progress:
        progress(f"{system.name}: lists done, measuring ANN recall")
    ann = system.exact_recall(sample(judgments.queries, ANN_SAMPLE, seed + 1))
    return SystemResult(
        name=system.name,
        kind=system.config.kind,
        description=system.config.describe(),
        build=system.build_info,
        ranked=ranked,
        run=run,
        per_query=values,
        means=m.means(values),
        beyond=beyond,
        ann_recall=ann,
        latencies=latencies,
        by_language=breakdown(values, query_lang),
        by_category=breakdown(values, query_category),
    )


def run_evaluation(
    corpus: Path,
    configs: Sequence[EvalConfig],
    out: Path,
    *,
    labels_path: Path | None = None,
    qrels_path: Path | None = None,
    queries: int = 1000,
    seed: int = 0,
    level: int | None = None,
    force_build: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Evaluation:
    """Evaluate every config on `corpus` and write metrics.json, summary.md, report.html, runs and qrels to `out`."""
    from recommender.evaluation import report

    say = progress or (lambda message: log.info(message))
    if labels_path is None and qrels_path is None:
        raise RelatedError("give --labels or --qrels")
    if queries < 1:
        raise RelatedError("--queries must be at least 1")
    corpus = corpus if is_database_url(corpus) else Path(corpus)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    query = next((c.pipeline.source.query for c in configs if c.pipeline is not None), None)
    ingested = read_corpus(corpus, query=query)
    articles = ingested.articles
    if not articles:
        raise RelatedError(f"no valid articles in {corpus}")
    ids = [a.id for a in articles]
    labels = read_labels(labels_path) if labels_path else None
    if qrels_path is not None:
        judgments = judgments_from_qrels(trec.read_qrels(qrels_path), ids, queries, seed, level)
    else:
        assert labels is not None
        judgments = judgments_from_labels(labels, ids, queries, seed)
        if level is not None:
            judgments.level = level
    say(f"{len(articles)} articles, {len(judgments.queries)} queries, relevance level {judgments.level}")

    by_id = {a.id: a for a in articles}
    query_lang = {
        q: by_id[q].lang or detect_language(f"{by_id[q].title}. {by_id[q].body}", "en") for q in judgments.queries
    }
    query_category = {
        q: ((labels.category.get(q) if labels and labels.has_categories else None) or by_id[q].category or NO_CATEGORY)
        for q in judgments.queries
    }
    reference = TfidfCosine().fit(articles)
    row_of = {article_id: row for row, article_id in enumerate(ids)}
    copies = CopyRelation.of(articles)
    ideal = {q: ideal_novel_gains(judgments.qrels[q], q, copies) for q in judgments.queries}
    say(f"copy relation: {len(copies.pairs)} pairs of copies")

    results: list[SystemResult] = []
    for config in configs:
        say(f"{config.name}: building ({config.kind})")
        if config.kind == "pipeline":
            system: System = PipelineSystem(config, corpus, out / "indexes" / config.name, force_build=force_build)
        else:
            system = BaselineSystem(config, articles)
        say(f"{config.name}: querying")
        results.append(
            evaluate_system(system, judgments, copies, ideal, reference, row_of, query_lang, query_category, seed, say)
        )
    first = results[0]
    for result in results[1:]:
        result.significance = {"vs": first.name} | m.paired_test(
            [first.per_query["nDCG@10"][q] for q in judgments.queries],
            [result.per_query["nDCG@10"][q] for q in judgments.queries],
        )

    evaluation = Evaluation(
        corpus=corpus,
        articles=articles,
        judgments=judgments,
        labels=labels,
        query_lang=query_lang,
        query_category=query_category,
        systems=results,
        seed=seed,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        copies=copies,
        rejects=len(ingested.rejects),
    )
    write_outputs(evaluation, out)
    report.write_summary(evaluation, out / "summary.md")
    report.write_html(evaluation, out / "report.html")
    return evaluation


def write_outputs(evaluation: Evaluation, out: Path) -> None:
    """metrics.json, per_query.jsonl, qrels.txt and runs/<config>.run (TREC)."""
    (out / "metrics.json").write_text(json.dumps(_finite(evaluation.summary()), indent=2) + "\n", encoding="utf-8")
    trec.write_qrels(out / "qrels.txt", evaluation.judgments.qrels)
    runs = out / "runs"
    runs.mkdir(exist_ok=True)
    for result in evaluation.systems:
        trec.write_run(runs / f"{result.name}.run", result.run, result.name)
    with open(out / "per_query.jsonl", "w", encoding="utf-8") as handle:
        for result in evaluation.systems:
            for qid in evaluation.judgments.queries:
                row = {"config": result.name, "qid": qid, "lang": evaluation.query_lang[qid],
                       "category": evaluation.query_category[qid]}
                row |= {name: round(values[qid], 6) for name, values in result.per_query.items()}
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def _finite(value: Any) -> Any:
    """JSON has no NaN: NaN and infinities become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
