"""Human-readable evaluation reports: Markdown summary and one self-contained HTML file.

The HTML embeds its plots as base64 PNG (matplotlib, Agg backend) and needs no other file, so it can
be attached to an issue or mailed. It shows article titles in its examples; the Markdown and
metrics.json show only ids and numbers.
"""
from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from recommender.evaluation.metrics import NOVELTY, RANK_MEASURES, latency_summary  # noqa: E402
from recommender.evaluation.resemblance import RESEMBLANCE, SHINGLE_WORDS  # noqa: E402

if TYPE_CHECKING:
    from recommender.evaluation.evaluate import Evaluation, SystemResult

EXAMPLES = 5
MAX_GROUPS = 20  # bars per breakdown plot; the tables list every group
GRADE_CLASS = {2: "story", 1: "category", 0: "other"}


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _p(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


# -- tables (shared by Markdown and HTML) -----------------------------------------------------------
def main_table(evaluation: Evaluation) -> tuple[list[str], list[list[str]]]:
    header = ["config", "kind", *RANK_MEASURES, NOVELTY, "dup rate", "coverage", "diversity", "ANN R@10",
              "p50 ms", "p99 ms", "build s", "peak MB"]
    rows = []
    for s in evaluation.systems:
        latency = latency_summary(s.latencies)
        build = s.build
        seconds = _fmt(build.get("seconds"), 1) + (" (reused)" if build.get("reused") else "")
        rows.append([
            s.name, s.kind, *(_fmt(s.means[name]) for name in RANK_MEASURES), _fmt(s.means[NOVELTY]),
            _fmt(s.beyond["duplicate_rate"], 4), _fmt(s.beyond["catalog_coverage"]),
            _fmt(s.beyond["intra_list_diversity"]), "exact" if s.ann_recall is None else _fmt(s.ann_recall),
            _fmt(latency["p50_ms"], 2), _fmt(latency["p99_ms"], 2), seconds, _fmt(build.get("peak_rss_delta_mb"), 0),
        ])
    return header, rows


def significance_table(evaluation: Evaluation) -> tuple[list[str], list[list[str]]]:
    header = ["config", "vs", "Δ nDCG@10", "t-test p", "Wilcoxon p", "wins / losses / ties"]
    rows = []
    for s in evaluation.systems[1:]:
        sig = s.significance or {}
        rows.append([
            s.name, str(sig.get("vs")), f"{sig.get('mean_diff', math.nan):+.4f}", _p(sig.get("ttest_p")),
            _p(sig.get("wilcoxon_p")), f"{sig.get('wins')} / {sig.get('losses')} / {sig.get('ties')}",
        ])
    return header, rows


def breakdown_table(evaluation: Evaluation, attribute: str) -> tuple[list[str], list[list[str]]]:
    systems = evaluation.systems
    groups = sorted({g for s in systems for g in getattr(s, attribute)})
    header = [attribute.removeprefix("by_"), "queries",
              *(f"{s.name} {name}" for s in systems for name in ("nDCG@10", NOVELTY))]
    rows = []
    for group in groups:
        first = getattr(systems[0], attribute).get(group, {})
        rows.append([group, str(first.get("queries", 0)),
                     *(_fmt(getattr(s, attribute).get(group, {}).get(name)) for s in systems for name in ("nDCG@10", NOVELTY))])
    return header, rows


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def esc(cell: str) -> str:
        return cell.replace("|", "\\|")

    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _intro(evaluation: Evaluation) -> list[str]:
    j = evaluation.judgments
    level = "same story (grade 2)" if j.level >= 2 else "same category (grade ≥ 1)"
    return [
        f"Corpus `{evaluation.corpus.name}`: {len(evaluation.articles)} articles"
        + (f" ({evaluation.rejects} rejected)" if evaluation.rejects else "")
        + f", {len(j.queries)} queries (judgments from {j.source}, seed {evaluation.seed}).",
        f"nDCG@10 on graded relevance (2 same story, 1 same category); P, R and MRR count {level} as relevant.",
        "Top 10 = the served list (limit=10); R@100 appends the limit=100 list. Copies are judged apart from any "
        f"ranking model: word {SHINGLE_WORDS}-shingle resemblance ≥ {RESEMBLANCE} of the bodies, or the same "
        f"canonical URL ({len(evaluation.copies.pairs)} pairs in this corpus). {NOVELTY} gives a copy of the query "
        "or of a higher item no gain and counts one member per copy group in the ideal list; dup rate is the share "
        "of listed top-10 items that are such copies. Diversity and coverage use one plain TF-IDF space for all configs. "
        "Latency: one `for_article` call (limit=10) or one baseline query, in-process. "
        "Peak MB: RSS increase during the build.",
    ]


def write_summary(evaluation: Evaluation, path) -> None:
    parts = ["# Related-articles evaluation", "", *_intro(evaluation), "", "## Configs", "",
             _markdown_table(*main_table(evaluation)), ""]
    if len(evaluation.systems) > 1:
        parts += ["## Significance (paired, per-query nDCG@10, two-sided)", "",
                  _markdown_table(*significance_table(evaluation)), ""]
    parts += ["## By language", "", _markdown_table(*breakdown_table(evaluation, "by_language")), "",
              "## By category", "", _markdown_table(*breakdown_table(evaluation, "by_category")), ""]
    path.write_text("\n".join(parts), encoding="utf-8")


# -- plots ---------------------------------------------------------------------------------------------
def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def plot_metrics(systems: Sequence[SystemResult]) -> str:
    names = [*RANK_MEASURES, NOVELTY, "coverage", "diversity"]
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(systems)
    x = np.arange(len(names))
    for i, s in enumerate(systems):
        values = [s.means[n] for n in (*RANK_MEASURES, NOVELTY)] + [s.beyond["catalog_coverage"], s.beyond["intra_list_diversity"]]
        ax.bar(x + i * width - 0.4 + width / 2, np.nan_to_num(values), width, label=s.name)
    ax.set_xticks(x, names)
    ax.set_ylim(0, 1.05)
    ax.set_title("Metrics per config")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def plot_by_category(systems: Sequence[SystemResult], attribute: str = "by_category") -> str:
    sizes = getattr(systems[0], attribute)
    groups = sorted(sorted(sizes, key=lambda g: -sizes[g]["queries"])[:MAX_GROUPS])  # the largest groups only
    fig, ax = plt.subplots(figsize=(min(16, max(6, 0.3 * len(groups) * len(systems))), 4))
    width = 0.8 / len(systems)
    x = np.arange(len(groups))
    for i, s in enumerate(systems):
        values = [getattr(s, attribute).get(g, {}).get("nDCG@10", np.nan) for g in groups]
        ax.bar(x + i * width - 0.4 + width / 2, np.nan_to_num(values), width, label=s.name)
    ax.set_xticks(x, groups, rotation=45 if len(groups) > 6 else 0, ha="right" if len(groups) > 6 else "center")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("nDCG@10")
    shown = f" (largest {len(groups)} of {len(sizes)})" if len(sizes) > len(groups) else ""
    ax.set_title("nDCG@10 by " + attribute.removeprefix("by_") + shown)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def plot_scores(evaluation: Evaluation) -> str:
    """Score of each served item, split by grade: how well a score threshold would separate them."""
    systems = evaluation.systems
    fig, axes = plt.subplots(1, len(systems), figsize=(4 * len(systems), 3.2), squeeze=False)
    for ax, s in zip(axes[0], systems):
        by_grade: dict[int, list[float]] = {0: [], 1: [], 2: []}
        for qid, items in s.ranked.items():
            for docid, score in items[:10]:
                by_grade[min(2, max(0, evaluation.grade(qid, docid)))].append(score)
        everything = [v for values in by_grade.values() for v in values]
        bins = np.linspace(min(everything, default=0), max(everything, default=1) or 1, 30)
        for grade, colour in ((0, "#999999"), (1, "#e0b000"), (2, "#2a9d3a")):
            if by_grade[grade]:
                ax.hist(by_grade[grade], bins=bins, alpha=0.6, color=colour, label=GRADE_CLASS[grade])
        ax.set_title(f"{s.name}: top-10 scores", fontsize=9)
        ax.legend(fontsize=7)
    return _png(fig)


def plot_latency(systems: Sequence[SystemResult]) -> str:
    fig, ax = plt.subplots(figsize=(7, 3.2))
    values = [np.asarray(s.latencies) * 1000 for s in systems if s.latencies]
    positive = np.concatenate(values) if values else np.array([1.0])
    positive = positive[positive > 0]
    low, high = (positive.min(), positive.max()) if positive.size else (0.01, 1.0)
    bins = np.logspace(np.log10(max(low, 1e-3)), np.log10(max(high, low * 1.01)), 40)
    for s in systems:
        ax.hist(np.asarray(s.latencies) * 1000, bins=bins, alpha=0.5, label=s.name)
    ax.set_xscale("log")
    ax.set_xlabel("ms per query (limit=10)")
    ax.set_title("Latency per query")
    ax.legend(fontsize=8)
    return _png(fig)


# -- examples -----------------------------------------------------------------------------------------
def pick_examples(evaluation: Evaluation, count: int = EXAMPLES) -> list[str]:
    """Queries where configs disagree most (largest nDCG@10 spread), then seeded random ones."""
    queries = evaluation.judgments.queries
    spread = {
        q: max(s.per_query["nDCG@10"][q] for s in evaluation.systems) - min(s.per_query["nDCG@10"][q] for s in evaluation.systems)
        for q in queries
    }
    chosen = [q for q in sorted(queries, key=lambda q: -spread[q])[: (count + 1) // 2] if spread[q] > 0]
    rng = np.random.default_rng(evaluation.seed)
    rest = [q for q in queries if q not in chosen]
    for i in rng.permutation(len(rest))[: count - len(chosen)]:
        chosen.append(rest[i])
    return chosen


def _examples_html(evaluation: Evaluation) -> str:
    titles = {a.id: a.title for a in evaluation.articles}
    labels = evaluation.labels
    out = []
    for qid in pick_examples(evaluation):
        story = labels.story.get(qid) if labels else None
        out.append(
            f"<h3>{html.escape(qid)}: {html.escape(titles.get(qid, '')[:160])}</h3>"
            f"<p class='meta'>story {html.escape(str(story))} · category "
            f"{html.escape(evaluation.query_category.get(qid, ''))}</p><div class='lists'>"
        )
        for s in evaluation.systems:
            ndcg = s.per_query["nDCG@10"][qid]
            items = "".join(
                f"<li class='{GRADE_CLASS[min(2, evaluation.grade(qid, d))]}' title='{html.escape(d)}'>"
                f"{html.escape(titles.get(d, d)[:90])} <span class='score'>{score:.3f}</span></li>"
                for d, score in s.ranked[qid][:10]
            )
            out.append(f"<div class='list'><h4>{html.escape(s.name)} <small>nDCG@10 {ndcg:.3f}</small></h4><ol>{items}</ol></div>")
        out.append("</div>")
    return "\n".join(out)


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th:first-child,td:first-child{text-align:left}img{max-width:100%;display:block;margin:1em 0}
.lists{display:flex;gap:1em;flex-wrap:wrap}.list{flex:1;min-width:260px;font-size:12px}
li{margin:2px 0;padding:1px 4px}li.story{background:#c8efc8}li.category{background:#fbefb5}
.score{color:#777}.meta{color:#555;font-size:13px}
"""


def write_html(evaluation: Evaluation, path) -> None:
    systems = evaluation.systems
    intro = "".join(f"<p>{html.escape(line)}</p>" for line in _intro(evaluation))
    sections = [
        f"<h1>Related-articles evaluation</h1>{intro}",
        "<h2>Configs</h2>" + _html_table(*main_table(evaluation)),
    ]
    if len(systems) > 1:
        sections.append("<h2>Significance (paired, per-query nDCG@10)</h2>" + _html_table(*significance_table(evaluation)))
    plots = [
        ("Metrics", plot_metrics(systems)),
        ("nDCG@10 by category", plot_by_category(systems, "by_category")),
        ("nDCG@10 by language", plot_by_category(systems, "by_language")),
        ("Score distributions (served top 10, by grade)", plot_scores(evaluation)),
        ("Latency", plot_latency(systems)),
    ]
    for title, png in plots:
        sections.append(f'<h2>{html.escape(title)}</h2><img alt="{html.escape(title)}" src="data:image/png;base64,{png}">')
    sections.append("<h2>By category</h2>" + _html_table(*breakdown_table(evaluation, "by_category")))
    sections.append("<h2>By language</h2>" + _html_table(*breakdown_table(evaluation, "by_language")))
    sections.append(
        "<h2>Examples</h2><p class='meta'>Green: same story; yellow: same category. "
        "Queries where configs disagree most, then random ones.</p>" + _examples_html(evaluation)
    )
    document = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Related-articles evaluation</title>"
        f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>"
    )
    path.write_text(document, encoding="utf-8")
