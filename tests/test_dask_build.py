"""Dask build on a LocalCluster of two worker processes: the version of the local build, bit for bit."""
from __future__ import annotations

import csv
import gzip
import io
import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from index.artifacts import read_manifest
from recommender.pipeline.build import build
from recommender.cli import main
from recommender.pipeline.progress import NO_BARS
from recommender.related import RelatedIndex
from recommender.pipeline.sources import read_source
from tests import news_corpus
from tests.corpora import SMALL, load_jsonl, merge, small_config, stories

distributed = pytest.importorskip("distributed")
from recommender.pipeline.dask_build import DaskExecutor  # noqa: E402  (needs the dask extra)

PARTITION_BYTES = 256 * 1024  # about 300 articles per partition
# Some 2,000 articles and 256 dims: FAISS's scores then come from BLAS products large enough
# for BLAS to use threads, whose float sums would differ between the build's process and workers.
EXACT = merge(SMALL, {"reduce": {"dims": 256}})
DASK = merge(EXACT, {"build": {"dask_partition_bytes": PARTITION_BYTES}})


@pytest.fixture(scope="module")
def scheduler():
    try:
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        )
    except Exception as err:  # no sockets or no process spawning in this environment
        pytest.skip(f"cannot start a Dask LocalCluster: {err}")
    with cluster:
        yield cluster.scheduler_address


def corpus_lines() -> tuple[list[bytes], dict[int, str]]:
    """2,040 articles (en and de) plus, inside partitions, bad records and a duplicate id across
    partitions; (lines, expected reject reason by line number)."""
    records = stories(size=30) + [
        news_corpus.article(story, i, article_id=f"news-{story}-{i}") for story in news_corpus.STORY_WORDS
        for i in range(300)
    ]
    lines = [json.dumps(r).encode() for r in records]
    lines.insert(500, b'{"id": "broken", "title": ')
    lines.insert(1100, json.dumps({"id": "untitled", "title": "", "body": " "}).encode())
    lines.insert(1700, json.dumps(dict(records[0], title="Second version wins")).encode())
    return lines, {1: "duplicate id: superseded by line 1701", 501: "invalid JSON", 1101: "missing title and body"}


def write_toml(path: Path, sections: dict) -> Path:
    path.write_text("".join(
        f"[{name}]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items())
        for name, values in sections.items()
    ), encoding="utf-8")
    return path


def test_dask_build_writes_the_version_of_the_local_build(tmp_path, scheduler):
    lines, reasons = corpus_lines()
    source = tmp_path / "corpus.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    local = build(source, tmp_path / "local", small_config(EXACT))
    result = CliRunner().invoke(main, [
        "build", "--source", str(source), "--data-dir", str(tmp_path / "dask"), "--dask", scheduler,
        "--config", str(write_toml(tmp_path / "dask.toml", DASK)),
    ], catch_exceptions=False)
    assert result.exit_code == 0, result.output

    version = RelatedIndex.open(tmp_path / "dask").version.manifest  # loads and verifies every checksum
    executor = version.data["executor"]
    assert executor["kind"] == "dask" and executor["partitions"] == math.ceil(source.stat().st_size / PARTITION_BYTES) > 4
    local_files = read_manifest(local.version).files
    assert {"vocabulary.json", "idf.npy", "index.faiss", "neighbours.npy"} <= local_files.keys()
    assert version.files == local_files  # same bytes in every file: vocabulary, IDF, vectors, neighbours, ...
    rejects = load_jsonl(tmp_path / "dask" / "rejects.jsonl")
    assert {r["line"]: r["reason"][: len(reasons[r["line"]])] for r in rejects} == reasons


# A lossy index: its candidates' dense scores are re-scored exactly, on the workers as locally.
IVF_SQ8 = {"index": {"exact_max": 0, "large": "ivfsq8", "nlist": 16, "nprobe": 4}}


@pytest.mark.parametrize("index", [{}, IVF_SQ8], ids=["exact", "ivfsq8"])
def test_neighbour_search_from_a_shared_directory_finds_the_same_lists(tmp_path, scheduler, index):
    """Workers map the index and matrices from a directory they share instead of receiving copies;
    the scheduler comes from the config."""
    source = tmp_path / "corpus.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in stories(size=12)), encoding="utf-8")
    local = build(source, tmp_path / "local", small_config(merge(EXACT, index)))
    shared = tmp_path / "shared"
    shared.mkdir()
    config = write_toml(tmp_path / "dask.toml", merge(merge(DASK, index), {"build": {
        "dask_scheduler": scheduler, "dask_shared_dir": str(shared)
    }}))
    result = CliRunner().invoke(main, [
        "build", "--source", str(source), "--data-dir", str(tmp_path / "dask"), "--config", str(config)
    ], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    version = read_manifest((tmp_path / "dask" / "current").resolve())
    assert version.data["executor"]["kind"] == "dask"
    assert version.files == read_manifest(local.version).files
    assert list(shared.iterdir()) == []  # the scratch directory is gone


@pytest.mark.parametrize("kind", ["jsonl.gz", "csv"])
def test_unsplittable_sources_keep_line_numbers_and_the_last_duplicate(tmp_path, scheduler, kind):
    """gzip does not seek and a quoted CSV field may hold line breaks: partitions are runs of lines."""
    records = stories(size=8, names=("flood", "budget", "cup", "hochwasser"))
    records[3]["body"] = "Line one\nline two of a quoted field"  # one CSV record over two lines
    records.insert(20, dict(records[2], title="Later copy wins"))
    if kind == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(records[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(records[:12])
        out.write("not,enough,fields\n")
        writer.writerows(records[12:])
        source = tmp_path / "corpus.csv"
        source.write_text(out.getvalue(), encoding="utf-8")
    else:
        lines = [json.dumps(r) for r in records]
        lines.insert(12, "{broken")
        source = tmp_path / "corpus.jsonl.gz"
        source.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    expected = read_source(source)
    assert len(expected.rejects) == 2

    with DaskExecutor(scheduler, partition_bytes=1024) as executor:
        intake = executor.ingest(executor.locate(source), NO_BARS)
        assert executor.describe()["partitions"] > 3
        _, rows = executor.vectorize(*vectorizer_and_config(), NO_BARS)
    assert (intake.records, intake.articles, intake.rejects) == (
        expected.records, len(expected.articles), expected.rejects
    )
    assert [r["id"] for r in rows] == [a.id for a in expected.articles]
    assert rows[[r["id"] for r in rows].index(records[2]["id"])]["title"] == "Later copy wins"


def vectorizer_and_config():
    from recommender.vectors.tfidf import ArticleVectorizer

    config = small_config()
    return ArticleVectorizer(config.text, config.reduce), config
