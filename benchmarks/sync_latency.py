"""Latency of `related sync` on a 100k-article index built from a SQLite `articles` table, against
`related update` of the same rows from a file, in the same run.

1,000 new articles (stitched from two members of one synthetic story, as in update_latency.py) are
written into the table with a later `updated_at`. The clock starts when `related sync` is launched
and stops when a running `related serve` lists the last of them in a same-story list (its reload
check every RELATED_RELOAD_CHECK_SECONDS, 0.25 s here). Then the same 1,000 articles, as an update
file, go through `related update` on a fresh copy of the same base version: the baseline. The
difference is the cost of reading the changed rows from the database (the `ingest` stage).

The table (benchmarks/results/sync-100k/cms.db, from benchmarks/synthetic.py) and its base build
are made once and reused (the build is a no-op while the table is unchanged); the changed rows
are removed again at the end.

    python benchmarks/sync_latency.py              # 100k rows, 1,000 changed
    python benchmarks/sync_latency.py --n 10000    # smaller, for a quick look

Target on 2 cores: 1,000 changed rows served within 10 s of launching the sync.
"""
from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic import synthetic_corpus  # noqa: E402
from update_latency import RESULTS, measure_update, related_bin, run, seconds_of, stitched_articles  # noqa: E402

BUILT_AT = "2025-06-01T00:00:00Z"
CHANGED_AT = "2025-06-02T00:00:00Z"
COLUMNS = ("id", "title", "body", "published", "lang", "category", "url")
TARGET_SECONDS = 10.0


def cms_table(corpus: Path, db: Path, n: int) -> None:
    """The CMS's table holding the synthetic corpus, all rows edited at BUILT_AT (made once)."""
    db.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(db)
    con.execute("create table if not exists articles (id text primary key, title text, body text, published text, "
                "lang text, category text, url text, updated_at text, deleted integer not null default 0)")
    if con.execute("select count(*) from articles").fetchone()[0] != n:
        con.execute("delete from articles")
        with open(corpus, encoding="utf-8") as lines:
            rows = ((*(r.get(c) for c in COLUMNS), BUILT_AT) for r in map(json.loads, lines))
            con.executemany("insert into articles values (?,?,?,?,?,?,?,?,0)", rows)
    con.commit()
    con.close()


def change_rows(db: Path, records: list[dict] | None) -> None:
    """Insert `records` as rows edited at CHANGED_AT; None: remove them again (back to the base table)."""
    con = sqlite3.connect(db)
    con.execute("delete from articles where updated_at = ?", (CHANGED_AT,))
    if records:
        con.executemany("insert into articles values (?,?,?,?,?,?,?,?,0)",
                        [(*(r.get(c) for c in COLUMNS), CHANGED_AT) for r in records])
    con.commit()
    con.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--changed", type=int, default=1000)
    parser.add_argument("--reload-seconds", type=float, default=0.25, help="API check interval for `current`.")
    args = parser.parse_args()

    corpus = synthetic_corpus(args.n, path=RESULTS / f"synthetic-{args.n}-0.jsonl")
    root = RESULTS / f"sync-{args.n // 1000}k"
    db = root / "cms.db"
    url = f"sqlite:///{db.resolve()}"
    cms_table(corpus, db, args.n)
    change_rows(db, None)
    seconds, done = run([related_bin(), "build", "--source", url, "--data-dir", str(root / "base"), "--no-progress"])
    if done.returncode:
        sys.exit(f"base build failed: {done.stderr[-2000:]}")
    build_line = done.stderr.strip().splitlines()[-1]
    print(f"base: {build_line} ({seconds:.1f} s)")

    records, mates = stitched_articles(corpus, args.n, args.changed, "chg", seed=1)
    probe = records[-1]["id"]
    change_rows(db, records)
    try:
        runs = {
            "sync": measure_update(root / "base", records, mates, probe, args.reload_seconds, True, url, "sync"),
            "update_baseline": measure_update(root / "base", records, mates, probe, args.reload_seconds, True),
        }
    finally:
        change_rows(db, None)
    for name, r in runs.items():
        print(f"{name:>16}: served after {r['end_to_end_seconds']} s ({r['end_to_end']}), CLI {r['cli_seconds']} s, "
              f"in-process {r['in_process_seconds']} s; stages {r['stages']}")
    sync_s, update_s = seconds_of(runs["sync"]), seconds_of(runs["update_baseline"])
    ratio = round(sync_s / update_s, 2)
    print(f"sync of {args.changed} changed rows: {sync_s} s until served, {ratio}x the update of the same file "
          f"({update_s} s); target <= {TARGET_SECONDS} s: {'met' if sync_s <= TARGET_SECONDS else 'MISSED'}")
    out = {
        "n": args.n, "changed": args.changed, "cpus": os.cpu_count(), "load_average": os.getloadavg(),
        "reload_check_seconds": args.reload_seconds, "base_build": {"seconds": round(seconds, 2), "summary": build_line},
        "runs": runs, "sync_over_update": ratio, "target_seconds": TARGET_SECONDS, "meets_target": sync_s <= TARGET_SECONDS,
    }
    path = RESULTS / ("sync_latency.json" if args.n == 100_000 else f"sync_latency-{args.n // 1000}k.json")
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
