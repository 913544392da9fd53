"""Build time, peak RSS and artifact size of `related build` on synthetic corpora.

Baseline measured in the same run: a bare scikit-learn `TfidfVectorizer().fit_transform`
over the same texts (the least any TF-IDF build must do), so figures are reported as
ratios too. Two corpus shapes (benchmarks/synthetic.py): "names", whose stories share rare
names (friendly), and "archive", a large varied archive's shape, where screens that lean on
the LSA vectors stop working. Each row also says whether the timed lists are any good: how
many of an article's story mates (from the corpus's labels) its top 10 holds. Targets on 2 cores:
100k articles in <= 60 s; 1M in <= 10 min with <= 8 GiB peak RSS (must: 20 min, 12 GiB).

With --dask W the same corpus is also built with `related build --dask` on a LocalCluster of
W single-threaded worker processes started here, beside the local build: its time, the peak
RSS of the build's process and of each worker, and which files differ from the local build's
version (none expected with an exact index; an IVF index above `index.exact_max` too, as the
index is built by the build's process and only searched on the workers). The workers map the
neighbour search's inputs from benchmarks/results/dask-shared (--broadcast: a copy each).

    python benchmarks/build_scale.py                          # N = 100k, both shapes
    python benchmarks/build_scale.py --large                  # also 1M
    python benchmarks/build_scale.py --sizes 20000 --shapes archive --keep /tmp/builds
    python benchmarks/build_scale.py --large --dask 2         # each size locally and on 2 Dask workers
    python benchmarks/build_scale.py --sizes 10000 --dask 2 --partition-mb 4
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic import SHAPES, synthetic_corpus  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
BASELINE = """
import json, sys
from sklearn.feature_extraction.text import TfidfVectorizer
texts = (json.loads(l) for l in open(sys.argv[1], encoding="utf-8"))
TfidfVectorizer(sublinear_tf=True).fit_transform(r["title"] + " " + r["body"] for r in texts)
"""


def run_measured(cmd: list[str], log: Path) -> tuple[float, float, int]:
    """Wall seconds, peak RSS in MiB and exit code of a child process; its output goes to `log`
    (a build logs each stage with the peak RSS so far)."""
    started = time.perf_counter()
    with open(log, "wb") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        sys.stderr.write(log.read_text(errors="replace")[-2000:])
    return seconds, usage.ru_maxrss / 1024, process.returncode


def directory_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def version_files(data: Path) -> dict[str, dict]:
    return json.loads(((data / "current").resolve() / "manifest.json").read_text())["files"]


def build_command(related: str, corpus: Path, data: Path, config: Path, *extra: str) -> list[str]:
    return [related, "--verbose", "build", "--source", str(corpus), "--data-dir", str(data), "--config", str(config),
            "--no-progress", *extra]


def measure(n: int, shape: str, related: str, config: Path, client=None, keep: Path | None = None) -> dict:
    """One size and shape: the baseline, the local build and (with a Dask client) the Dask build."""
    corpus = synthetic_corpus(n, shape=shape)
    data = keep / f"{shape}-{n}" if keep else Path(tempfile.mkdtemp(prefix=f"build-{n}-"))
    shutil.rmtree(data, ignore_errors=True)
    try:
        logs = RESULTS / f"build_scale-{shape}-{n}"
        base_s, base_rss, _ = run_measured([sys.executable, "-c", BASELINE, str(corpus)], logs.with_suffix(".tfidf.log"))
        build_s, build_rss, code = run_measured(build_command(related, corpus, data / "local", config), logs.with_suffix(".log"))
        version = (data / "local" / "current").resolve()
        manifest = json.loads((version / "manifest.json").read_text()) if code == 0 else {}
        row = {
            "articles": n,
            "shape": shape,
            "exit_code": code,
            "build_seconds": round(build_s, 1),
            "peak_rss_mib": round(build_rss),
            "artifact_mib": round(directory_bytes(version) / 2**20, 1) if code == 0 else None,
            "stages": manifest.get("stages"),
            "baseline_tfidf_seconds": round(base_s, 1),
            "baseline_tfidf_rss_mib": round(base_rss),
            "time_ratio_vs_tfidf": round(build_s / base_s, 2),
            "rss_ratio_vs_tfidf": round(build_rss / base_rss, 2),
            "story_mates_at_10": story_mates_at_10(version, corpus) if code == 0 else None,
        }
        if client is not None:
            row["dask"] = measure_dask(client, related, corpus, data, config, version_files(data / "local") if code == 0 else {})
        return row
    finally:
        if keep is None:
            shutil.rmtree(data, ignore_errors=True)


def story_mates_at_10(version: Path, corpus: Path) -> dict:
    """Whether the timed lists are any good: of the articles whose story has other articles, how
    many of those the top 10 of the stored lists holds (mean, and the best possible), and the share
    of articles with at least one. The corpus's labels say which story each article tells."""
    from index.columns import StringColumn

    stories: dict[str, int] = {}
    with open(corpus.with_name(corpus.stem + "-labels.jsonl"), encoding="utf-8") as labels:
        story_of = {r["id"]: stories.setdefault(r["story"], len(stories)) for r in map(json.loads, labels)}
    ids = StringColumn(np.load(version / "ids.npy"), np.load(version / "ids_offsets.npy"))
    story = np.array([story_of[i] for i in ids])
    size = np.bincount(story)[story]
    top = np.asarray(np.load(version / "neighbours.npy", mmap_mode="r")[:, :10]).astype(np.int64)
    found = ((top >= 0) & (story[np.maximum(top, 0)] == story[:, None])).sum(axis=1)
    told = size > 1
    return {
        "articles": int(told.sum()),
        "mean": round(float(found[told].mean()), 3),
        "best_possible": round(float(np.minimum(size[told] - 1, 10).mean()), 3),
        "share_with_one": round(float((found[told] > 0).mean()), 4),
    }


def peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_dask(client, related: str, corpus: Path, data: Path, config: Path, local_files: dict) -> dict:
    """The Dask build of the same corpus, on fresh workers (restarted, so their peak RSS is this build's)."""
    client.restart()
    seconds, rss, code = run_measured(
        build_command(related, corpus, data / "dask", config, "--dask", client.scheduler.address),
        RESULTS / f"build_scale-{corpus.stem}-dask.log",
    )
    manifest = json.loads(((data / "dask" / "current").resolve() / "manifest.json").read_text()) if code == 0 else {}
    files = manifest.get("files", {})
    return {
        "exit_code": code,
        "build_seconds": round(seconds, 1),
        "client_peak_rss_mib": round(rss),
        "worker_peak_rss_mib": sorted(round(v) for v in client.run(peak_rss_mib).values()),
        "executor": manifest.get("executor"),
        "stages": manifest.get("stages"),
        "files_differing_from_local": sorted(f for f in local_files.keys() | files.keys() if local_files.get(f) != files.get(f)),
    }


def write_config(path: Path, partition_mb: float | None, shared_dir: Path | None) -> Path:
    """Defaults, except the Dask partition size and shared directory when given."""
    lines = ['name = "default"', "[build]"]
    if partition_mb is not None:
        lines.append(f"dask_partition_bytes = {int(partition_mb * 2**20)}")
    if shared_dir is not None:
        shared_dir.mkdir(parents=True, exist_ok=True)
        lines.append(f"dask_shared_dir = {json.dumps(str(shared_dir))}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000])
    parser.add_argument("--large", action="store_true", help="also build 1M articles")
    parser.add_argument("--shapes", nargs="*", choices=SHAPES, default=list(SHAPES))
    parser.add_argument("--keep", type=Path, help="keep each built data dir under this folder (for serving benchmarks)")
    parser.add_argument("--related", default=str(Path(sys.executable).with_name("related")))
    parser.add_argument("--dask", type=int, metavar="WORKERS", default=0,
                        help="also build on a LocalCluster of this many worker processes (1 thread each)")
    parser.add_argument("--partition-mb", type=float, default=None,
                        help="source MiB per Dask partition (default: build.dask_partition_bytes, 64 MiB)")
    parser.add_argument("--broadcast", action="store_true",
                        help="send the neighbour search's inputs to every worker process instead of sharing "
                             "one memory-mapped copy through a directory (build.dask_shared_dir)")
    args = parser.parse_args()
    sizes = args.sizes + ([1_000_000] if args.large else [])
    RESULTS.mkdir(exist_ok=True)
    shared = None if args.broadcast or not args.dask else RESULTS / "dask-shared"
    config = write_config(RESULTS / "build_scale.toml", args.partition_mb, shared)
    with contextlib.ExitStack() as stack:
        client = None
        if args.dask:
            from distributed import Client, LocalCluster

            cluster = stack.enter_context(
                LocalCluster(n_workers=args.dask, threads_per_worker=1, processes=True, dashboard_address=None)
            )
            client = stack.enter_context(Client(cluster))
        rows = []
        for n, shape in ((n, shape) for n in sizes for shape in args.shapes):
            row = measure(n, shape, args.related, config, client, args.keep)
            rows.append(row)
            print(
                f"N={n:>9,} {shape:<8} build {row['build_seconds']:>7.1f}s  peak RSS {row['peak_rss_mib']:>6} MiB  "
                f"artifacts {row['artifact_mib']} MiB  | tfidf-only {row['baseline_tfidf_seconds']}s "
                f"-> ratio {row['time_ratio_vs_tfidf']}x time, {row['rss_ratio_vs_tfidf']}x RSS",
                flush=True,
            )
            print("    stages (s): " + "  ".join(f"{k} {v:.1f}" for k, v in (row["stages"] or {}).items()), flush=True)
            if row["story_mates_at_10"]:
                mates = row["story_mates_at_10"]
                print(f"    story mates in the top 10: {mates['mean']} of {mates['best_possible']} possible; "
                      f"{mates['share_with_one']:.1%} of articles with mates list one", flush=True)
            if "dask" in row:
                dask = row["dask"]
                print(
                    f"             dask {dask['build_seconds']:>7.1f}s  client RSS {dask['client_peak_rss_mib']} MiB  "
                    f"workers {dask['worker_peak_rss_mib']} MiB  stages {dask['stages']}  "
                    f"differs from local: {dask['files_differing_from_local'] or 'nothing'}",
                    flush=True,
                )
    out = RESULTS / ("build_scale_dask.json" if args.dask else "build_scale.json")
    out.write_text(json.dumps(rows, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
