"""Latency of `related update` on a 100k-article index, end to end, against a full rebuild.

Each update (1,000 new articles; a single article) is applied two ways:
- with the CLI, as cron does: the clock starts when `related update` is launched and stops
  when a running `related serve` answers with the new article in the related list of one of
  its same-story articles (the API's hot reload; its check interval is set with
  RELATED_RELOAD_CHECK_SECONDS, default here 0.25 s). The time until the CLI exited (new
  version published) is reported too, and the update's own stage timings;
- POSTed to the running service (`/v1/admin/articles`, what a CMS calls when it publishes):
  the clock starts with the request and stops when a GET shows the article in such a list.

The 100k base index is built once under benchmarks/results/update-100k/base and reused; each
measurement runs on a fresh data dir holding a hard-linked copy of the base version (versions
are immutable, so links are safe). New articles are stitched from two members of an existing
synthetic story (second half of one, first half of the other), with new ids and URLs.

    python benchmarks/update_latency.py                 # reuse the base (build it if missing)
    python benchmarks/update_latency.py --rebuild       # also time a fresh full rebuild
    python benchmarks/update_latency.py --n 10000       # smaller, for a quick look

Targets on 2 cores: 1,000 new articles <= 10 s, a single article <= 2 s.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving import HOST, free_port, hard_linked_copy, running  # noqa: E402
from synthetic import synthetic_corpus  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
STORY_SIZE = 5  # synthetic.py: story of article i is i % (n // 5)


def related_bin() -> str:
    return os.environ.get("RELATED_BIN") or str(Path(sys.executable).with_name("related"))


def run(cmd: list[str], **kwargs) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    return time.perf_counter() - started, done


def base_index(n: int, rebuild: bool) -> tuple[Path, dict]:
    """The reusable base data dir and how long its full build took."""
    corpus = synthetic_corpus(n, path=RESULTS / f"synthetic-{n}-0.jsonl")
    root = RESULTS / f"update-{n // 1000}k"
    base = root / "base"
    info_path = root / "base-build.json"
    if rebuild:
        shutil.rmtree(base, ignore_errors=True)
    # Idempotent: a base built by this code and config is reused (a hash check); any change rebuilds it.
    seconds, done = run([related_bin(), "build", "--source", str(corpus), "--data-dir", str(base), "--no-progress"])
    if done.returncode:
        sys.exit(f"base build failed: {done.stderr[-2000:]}")
    if "status=unchanged" in done.stderr and info_path.exists():
        info = json.loads(info_path.read_text()) | {"measured": "earlier run (reused base; --rebuild to re-time)"}
    else:
        info = {"seconds": round(seconds, 2), "summary": done.stderr.strip().splitlines()[-1], "measured": "now"}
        info_path.write_text(json.dumps(info, indent=2) + "\n")
    manifest = json.loads(((base / "current").resolve() / "manifest.json").read_text())
    info["stages"] = manifest.get("stages")
    info["version"] = (base / "current").resolve().name
    return corpus, base, info


def stitched_articles(corpus: Path, n: int, count: int, tag: str, seed: int) -> tuple[list[dict], dict[str, list[str]]]:
    """`count` new articles, each from two members of one story; returns them and their mates' ids."""
    import numpy as np

    stories = n // STORY_SIZE
    rng = np.random.default_rng(seed)
    picks = rng.choice(stories, size=count, replace=False)
    wanted = {}
    for story in picks:
        a, b = int(story), int(story) + stories
        wanted[a] = wanted[b] = None
    with open(corpus, encoding="utf-8") as handle:
        for row, line in enumerate(handle):
            if row in wanted:
                wanted[row] = json.loads(line)
    half = lambda text, first: " ".join(text.split()[: len(text.split()) // 2] if first else text.split()[len(text.split()) // 2 :])  # noqa: E731
    records, mates = [], {}
    for i, story in enumerate(picks):
        x, y = wanted[int(story)], wanted[int(story) + stories]
        new_id = f"{tag}-{i}"
        records.append(x | {
            "id": new_id, "url": f"https://synthetic.example/{tag}/{i}",
            "title": half(x["title"], False) + " " + half(y["title"], True),
            "body": half(x["body"], False) + " " + half(y["body"], True),
        })
        mates[new_id] = [f"syn-{int(story) + k * stories}" for k in range(STORY_SIZE)]
    return records, mates


ADMIN_TOKEN = "update-latency-benchmark"


@contextlib.contextmanager
def serving(data: Path, reload_seconds: float):
    env = dict(
        os.environ, RELATED_RELOAD_CHECK_SECONDS=str(reload_seconds), RELATED_RESPONSE_CACHE_SIZE="0",
        RELATED_ADMIN_TOKEN=ADMIN_TOKEN, RELATED_MAX_BODY_BYTES=str(64 << 20),  # room for the 1,000-article batch
    )
    port = free_port()
    cmd = [related_bin(), "serve", "--data-dir", str(data), "--host", HOST, "--port", str(port)]
    with running(cmd, port, env) as base:
        yield base


def related_ids(base: str, article_id: str) -> list[str]:
    url = f"{base}/v1/articles/{quote(article_id, safe='')}/related?limit=10&lang=any"
    with urllib.request.urlopen(url, timeout=10) as response:
        return [item["id"] for item in json.loads(response.read())["items"]]


def measure_update(base_dir: Path, records: list[dict], mates: dict[str, list[str]], probe: str,
                   reload_seconds: float, api: bool, source: str | None = None, command: str = "update",
                   keep: bool = False) -> dict:
    """`related COMMAND --source SOURCE` on a copy of the base (default: `update` of `records` as a file);
    `keep`: the copy is kept (its path in the result's `data_dir`), else removed."""
    data = hard_linked_copy(base_dir, RESULTS, "update-bench-")
    if source is None:
        source = str(data / "update.jsonl")
        Path(source).write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    result: dict = {"articles": len(records), "probe": probe}
    try:
        with (serving(data, reload_seconds) if api else contextlib.nullcontext()) as base:
            started = time.perf_counter()
            process = subprocess.Popen(
                [related_bin(), "-v", command, "--source", source, "--data-dir", str(data)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            output: dict = {}

            def wait() -> None:  # records when the CLI exits, while the main thread polls the API
                output["err"] = process.communicate()[1]
                output["exited_at"] = time.perf_counter()

            waiter = threading.Thread(target=wait)
            waiter.start()
            seen_at = None
            if base is not None:
                deadline = started + 300
                while time.perf_counter() < deadline and not (not waiter.is_alive() and process.returncode):
                    try:
                        if any(probe in related_ids(base, mate) for mate in mates[probe]):
                            seen_at = time.perf_counter()
                            break
                    except Exception:
                        pass
                    time.sleep(0.05)
            waiter.join()
            if process.returncode:
                raise RuntimeError(f"{command} failed: {output['err'][-2000:]}")
            summary = [line for line in output["err"].splitlines() if "status=" in line][-1]
            # `-v` logs every stage, including writing and publishing (after the manifest is written).
            stages = {m[1]: float(m[2]) for m in re.finditer(r"related\.update: (\w+): ([\d.]+)s", output["err"])}
            result |= {
                "cli_seconds": round(output["exited_at"] - started, 3),
                "in_process_seconds": round(sum(stages.values()), 3),
                "stages": stages,
                "summary": summary.split(": ", 1)[-1],
                "end_to_end_seconds": round(seen_at - started, 3) if seen_at is not None else None,
                "end_to_end": "served by the API" if seen_at is not None else "not seen by the API",
            }
    finally:
        if keep:
            result["data_dir"] = str(data)
        else:
            shutil.rmtree(data, ignore_errors=True)
    return result


def measure_posted(base_dir: Path, records: list[dict], mates: dict[str, list[str]], probe: str,
                   reload_seconds: float) -> dict:
    """The same update POSTed to a running service (`/v1/admin/articles`, a CMS publish hook)."""
    data = hard_linked_copy(base_dir, RESULTS, "update-bench-")
    body = "".join(json.dumps(r) + "\n" for r in records).encode()
    try:
        with serving(data, reload_seconds) as base:
            request = urllib.request.Request(
                f"{base}/v1/admin/articles", data=body, method="POST",
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/x-ndjson"},
            )
            started = time.perf_counter()
            with urllib.request.urlopen(request, timeout=300) as response:
                result = json.loads(response.read())
            answered = time.perf_counter()
            seen = any(probe in related_ids(base, mate) for mate in mates[probe])
            seen_at = time.perf_counter()
    finally:
        shutil.rmtree(data, ignore_errors=True)
    return {
        "articles": len(records), "probe": probe,
        "response_seconds": round(answered - started, 3),
        "in_process_seconds": result["seconds"],
        "end_to_end_seconds": round(seen_at - started, 3) if seen else None,
        "end_to_end": "served by the API" if seen else "not seen by the API",
        "result": {k: result[k] for k in ("status", "added", "refreshed", "serving")},
    }


def seconds_of(run: dict) -> float:
    """End to end when the API was watched, else until the CLI exited or the call returned."""
    return run["end_to_end_seconds"] or run.get("cli_seconds") or run["response_seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rebuild", action="store_true", help="Time a fresh full build of the base index.")
    parser.add_argument("--reload-seconds", type=float, default=0.25, help="API check interval for `current`.")
    parser.add_argument("--no-api", action="store_true", help="Time until the version is published only.")
    args = parser.parse_args()

    corpus, base, build_info = base_index(args.n, args.rebuild)
    print(f"base: {build_info['version']} (full build {build_info.get('seconds', '?')} s, {build_info['measured']})")
    batch, batch_mates = stitched_articles(corpus, args.n, args.batch, "upd", seed=1)
    single, single_mates = stitched_articles(corpus, args.n, 1, "one", seed=2)
    runs = {}
    for name, records, mates in (("single", single, single_mates), (f"batch_{args.batch}", batch, batch_mates)):
        probe = records[-1]["id"]
        runs[name] = measure_update(base, records, mates, probe, args.reload_seconds, not args.no_api)
        r = runs[name]
        print(f"{name:>12}: end-to-end {r['end_to_end_seconds']} s ({r['end_to_end']}), CLI {r['cli_seconds']} s, "
              f"in-process {r['in_process_seconds']} s; stages {r['stages']}")
    if not args.no_api:
        for name, records, mates in (("single", single, single_mates), (f"batch_{args.batch}", batch, batch_mates)):
            r = runs[f"posted_{name}"] = measure_posted(base, records, mates, records[-1]["id"], args.reload_seconds)
            print(f"{'posted ' + name:>18}: end-to-end {r['end_to_end_seconds']} s ({r['end_to_end']}), "
                  f"response {r['response_seconds']} s, in-process {r['in_process_seconds']} s")
    full = build_info.get("seconds")
    ratios = {}
    if full:
        for name, r in runs.items():
            best = seconds_of(r)
            ratios[name] = round(full / best, 1)
            print(f"full rebuild {full} s is {ratios[name]}x the {name} update ({best} s)")
    targets = {name: 2.0 if "single" in name else 10.0 for name in runs}
    out = {
        "n": args.n, "cpus": os.cpu_count(), "load_average": os.getloadavg(), "reload_check_seconds": args.reload_seconds,
        "full_build": build_info, "updates": runs, "rebuild_over_update": ratios,
        "targets_seconds": targets,
        "meets_targets": {k: seconds_of(runs[k]) <= t for k, t in targets.items()},
    }
    path = RESULTS / ("update_latency.json" if args.n == 100_000 else f"update_latency-{args.n // 1000}k.json")
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
