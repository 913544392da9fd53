"""Build time, peak RSS and artifact size of `related build` on synthetic corpora.

Baseline measured in the same run: a bare scikit-learn `TfidfVectorizer().fit_transform`
over the same texts (the least any TF-IDF build must do), so figures are reported as
ratios too. Two corpus shapes (benchmarks/synthetic.py): "names", whose stories share rare
names (friendly), and "archive", a large varied archive's shape, where screens that lean on
the LSA vectors stop working. Targets on 2 cores: 100k articles in <= 60 s; 1M in <= 10 min
with <= 8 GiB peak RSS (must: 20 min, 12 GiB).

    python benchmarks/build_scale.py                       # N = 100k, both shapes
    python benchmarks/build_scale.py --large               # also 1M
    python benchmarks/build_scale.py --sizes 20000 --shapes archive
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic import SHAPES, synthetic_corpus  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
BASELINE = """
import json, sys
from sklearn.feature_extraction.text import TfidfVectorizer
texts = (json.loads(l) for l in open(sys.argv[1], encoding="utf-8"))
TfidfVectorizer(sublinear_tf=True).fit_transform(r["title"] + " " + r["body"] for r in texts)
"""


def run_measured(cmd: list[str]) -> tuple[float, float, int]:
    """Wall seconds, peak RSS in MiB and exit code of a child process."""
    started = time.perf_counter()
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        sys.stderr.write(process.stderr.read().decode()[-2000:])
    return seconds, usage.ru_maxrss / 1024, process.returncode


def directory_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def measure(n: int, shape: str, related: str, keep: Path | None) -> dict:
    corpus = synthetic_corpus(n, shape=shape)
    data = keep / f"{shape}-{n}" if keep else Path(tempfile.mkdtemp(prefix=f"build-{n}-"))
    shutil.rmtree(data, ignore_errors=True)
    try:
        base_s, base_rss, _ = run_measured([sys.executable, "-c", BASELINE, str(corpus)])
        build_s, build_rss, code = run_measured(
            [related, "build", "--source", str(corpus), "--data-dir", str(data), "--no-progress"]
        )
        version = (data / "current").resolve()
        manifest = json.loads((version / "manifest.json").read_text()) if code == 0 else {}
        return {
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
        }
    finally:
        if keep is None:
            shutil.rmtree(data, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000])
    parser.add_argument("--large", action="store_true", help="also build 1M articles")
    parser.add_argument("--shapes", nargs="*", choices=SHAPES, default=list(SHAPES))
    parser.add_argument("--keep", type=Path, help="keep each built data dir under this folder (for serving benchmarks)")
    parser.add_argument("--related", default=str(Path(sys.executable).with_name("related")))
    args = parser.parse_args()
    sizes = args.sizes + ([1_000_000] if args.large else [])
    rows = []
    for n in sizes:
        for shape in args.shapes:
            row = measure(n, shape, args.related, args.keep)
            rows.append(row)
            print(
                f"N={n:>9,} {shape:<8} build {row['build_seconds']:>7.1f}s  peak RSS {row['peak_rss_mib']:>6} MiB  "
                f"artifacts {row['artifact_mib']} MiB  | tfidf-only {row['baseline_tfidf_seconds']}s "
                f"-> ratio {row['time_ratio_vs_tfidf']}x time, {row['rss_ratio_vs_tfidf']}x RSS",
                flush=True,
            )
            print("    stages (s): " + "  ".join(f"{k} {v:.1f}" for k, v in (row["stages"] or {}).items()), flush=True)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "build_scale.json"
    out.write_text(json.dumps(rows, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
