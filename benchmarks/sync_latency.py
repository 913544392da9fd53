"""Latency of `related sync` on a 100k-article index built from a SQLite `articles` table, against
`related update` of the same rows from a file, in the same run.

Changed rows are new articles (stitched from two members of one synthetic story, as in
update_latency.py) written into the table with a later `updated_at`. The clock starts when
`related sync` is launched and stops when a running `related serve` lists the last of them in a
same-story list (its reload check every RELATED_RELOAD_CHECK_SECONDS, 0.25 s here).

- first_sync: 1,000 changed rows, synced into the version built from the table. Every row of the
  table carries the one timestamp of the import, which is the build's watermark, so this sync also
  reads all 100k rows once to find them already applied (their digests): the worst case, once.
- sync: the steady state, on the version first_sync published: 1,000 more rows changed later.
- update_baseline: the same 1,000 rows as an update file through `related update`, on that same
  version. The difference to `sync` is the cost of reading changed rows from the database.

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
import shutil
import sqlite3
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic import synthetic_corpus  # noqa: E402
from update_latency import RESULTS, measure_update, related_bin, run, seconds_of, stitched_articles  # noqa: E402

BUILT_AT = "2025-06-01T00:00:00Z"
CHANGED_AT = "2025-06-02T00:00:00Z"
LATER_AT = "2025-06-02T00:05:00Z"
COLUMNS = ("id", "title", "body", "published", "lang", "category", "url")
TARGET_SECONDS = 10.0


def cms_table(corpus: Path, db: Path, n: int) -> None:
    """The CMS's table holding the synthetic corpus, all rows edited at BUILT_AT (made once)."""
    db.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(db)
    con.execute("create table if not exists articles (id text primary key, title text, body text, published text, "
                "lang text, category text, url text, updated_at text, deleted integer not null default 0)")
    con.execute("create index if not exists articles_updated_at on articles (updated_at)")  # as a CMS has
    if con.execute("select count(*) from articles").fetchone()[0] != n:
        con.execute("delete from articles")
        with open(corpus, encoding="utf-8") as lines:
            rows = ((*(r.get(c) for c in COLUMNS), BUILT_AT) for r in map(json.loads, lines))
            con.executemany("insert into articles values (?,?,?,?,?,?,?,?,0)", rows)
    con.commit()
    con.close()


def change_rows(db: Path, records: list[dict] | None, when: str = CHANGED_AT) -> None:
    """Insert `records` as rows edited at `when`; None: remove every changed row (back to the base table)."""
    con = sqlite3.connect(db)
    if records:
        con.executemany("insert into articles values (?,?,?,?,?,?,?,?,0)",
                        [(*(r.get(c) for c in COLUMNS), when) for r in records])
    else:
        con.execute("delete from articles where updated_at > ?", (BUILT_AT,))
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
    change_rows(db, None)  # leftovers of an interrupted run
    seconds, done = run([related_bin(), "build", "--source", url, "--data-dir", str(root / "base"), "--no-progress"])
    if done.returncode:
        sys.exit(f"base build failed: {done.stderr[-2000:]}")
    build_line = done.stderr.strip().splitlines()[-1]
    print(f"base: {build_line} ({seconds:.1f} s)")

    first, first_mates = stitched_articles(corpus, args.n, args.changed, "chg", seed=1)
    records, mates = stitched_articles(corpus, args.n, args.changed, "chg2", seed=2)
    probe = records[-1]["id"]
    runs = {}
    try:
        change_rows(db, first, CHANGED_AT)
        runs["first_sync"] = measure_update(root / "base", first, first_mates, first[-1]["id"], args.reload_seconds, True,
                                            url, "sync", keep=True)
        synced = Path(runs["first_sync"].pop("data_dir"))
        change_rows(db, records, LATER_AT)
        runs["sync"] = measure_update(synced, records, mates, probe, args.reload_seconds, True, url, "sync")
        runs["update_baseline"] = measure_update(synced, records, mates, probe, args.reload_seconds, True)
    finally:
        change_rows(db, None)
        if "first_sync" in runs:
            shutil.rmtree(synced, ignore_errors=True)
    for name, r in runs.items():
        print(f"{name:>16}: served after {r['end_to_end_seconds']} s ({r['end_to_end']}), CLI {r['cli_seconds']} s, "
              f"in-process {r['in_process_seconds']} s; stages {r['stages']}")
    sync_s, update_s = seconds_of(runs["sync"]), seconds_of(runs["update_baseline"])
    ratio = round(sync_s / update_s, 2)
    print(f"sync of {args.changed} changed rows: {sync_s} s until served, {ratio}x the update of the same file "
          f"({update_s} s); target <= {TARGET_SECONDS} s: {'met' if sync_s <= TARGET_SECONDS else 'MISSED'}; "
          f"first sync after the one-timestamp import {seconds_of(runs['first_sync'])} s")
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
