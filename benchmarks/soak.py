"""Soak: `related serve --workers 2` under steady load for minutes while its index changes.

    python benchmarks/soak.py                          # 100k articles, 10 minutes, 64 connections
    python benchmarks/soak.py --articles 20000 --minutes 3 --concurrency 32

Builds (or reuses) a synthetic index (benchmarks/synthetic.py) under benchmarks/results/soak/,
serves a hard-linked copy of it on a free 127.0.0.1 port and, for --minutes, drives it with
--concurrency connections from one asyncio process (httpx), each connection a closed loop:

- 90% GET related of a uniformly drawn id, a third of them conditional (If-None-Match with an
  ETag seen earlier);
- 5% drafts (POST /v1/related, a corpus article's text);
- 5% filtered GETs (category, exclude, lang=any, max_age_days), alternating with
  `related.html` when the service has that route.

Meanwhile the index changes: one article POSTed to /v1/admin/articles every 10 s, a CLI
`related update` of 50 articles every minute, and one full `related build --force` started
at --build-at (10 s), whose swap lands mid-run on 2 cores. Updates refused because the build holds the lock
(409 / exit 75) are counted as deferred, not as errors: that is the documented contract.

Reports errors by kind (any status but 200 and 304, or a failed request), req/s and p99 per
minute, each worker's RSS (and private memory) every 10 s with its growth after the first
minute (median of minute 2 against median of the last minute), and whether the `index_version` of the responses only moved forward: checked per
connection, since a keep-alive connection stays with one worker and the two workers switch
versions a check interval apart. Prints a per-minute table and writes
benchmarks/results/soak.json (soak-<N>k.json for other sizes). The baseline compared against
in the same run is the first minute (req/s, p99, RSS). Exit 1 when an acceptance criterion
fails: 0 errors, no version moving back, RSS growth <= 5% per worker after the first minute.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving import HOST, all_ready, free_port, hard_linked_copy, started, workers  # noqa: E402
from synthetic import synthetic_corpus  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
ADMIN_TOKEN = "soak-benchmark"
RSS_EVERY = 10.0
POST_EVERY = 10.0
CLI_UPDATE_EVERY = 60.0
CLI_UPDATE_ARTICLES = 50
MAX_RSS_GROWTH = 0.05


def related_bin() -> str:
    return os.environ.get("RELATED_BIN") or str(Path(sys.executable).with_name("related"))


def base_index(articles: int) -> tuple[Path, Path]:
    """The corpus and a built data dir for it (an unchanged corpus and config reuse the last build)."""
    corpus = synthetic_corpus(articles, path=RESULTS / f"synthetic-{articles}-0.jsonl")
    base = RESULTS / "soak" / f"base-{articles // 1000}k"
    done = subprocess.run([related_bin(), "build", "--source", str(corpus), "--data-dir", str(base), "--no-progress"],
                          capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"base build failed: {done.stderr[-2000:]}")
    return corpus, base


def sample_records(corpus: Path, count: int, seed: int = 0) -> tuple[list[str], list[dict]]:
    """Every id of the corpus (percent-encoded), and `count` whole records spread over it (drafts and updates)."""
    with open(corpus, encoding="utf-8") as fh:
        lines = fh.readlines()
    ids = [quote(json.loads(line)["id"], safe="") for line in lines]
    picks = random.Random(seed).sample(range(len(lines)), min(count, len(lines)))
    return ids, [json.loads(lines[i]) for i in picks]


# -- measurements ---------------------------------------------------------------------------------------
@dataclass
class Minute:
    requests: int = 0
    not_modified: int = 0
    errors: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    versions: set[str] = field(default_factory=set)

    def row(self, seconds: float) -> dict:
        lat = sorted(self.latencies)

        def pct(q: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1e3, 2) if lat else None

        return {
            "requests": self.requests, "rps": round(self.requests / seconds, 1), "p50_ms": pct(0.5),
            "p99_ms": pct(0.99), "not_modified": self.not_modified, "errors": sum(self.errors.values()),
            "errors_by_kind": dict(self.errors), "versions": sorted(self.versions),
        }


@dataclass
class Soak:
    started: float
    minutes: list[Minute] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    error_samples: dict[str, str] = field(default_factory=dict)
    backward: list[dict] = field(default_factory=list)
    reconnects: int = 0
    first_seen: dict[str, float] = field(default_factory=dict)
    changes: list[dict] = field(default_factory=list)
    rss: list[dict] = field(default_factory=list)

    def minute(self) -> Minute:
        index = int((time.perf_counter() - self.started) // 60)
        while len(self.minutes) <= index:
            self.minutes.append(Minute())
        return self.minutes[index]

    def at(self) -> float:
        return round(time.perf_counter() - self.started, 2)

    def record(self, latency: float, status: int | None, kind: str | None, detail: str = "") -> None:
        bucket = self.minute()
        bucket.requests += 1
        bucket.latencies.append(latency)
        bucket.not_modified += status == 304
        if kind is not None:
            bucket.errors[kind] += 1
            self.errors[kind] += 1
            self.error_samples.setdefault(kind, detail[:300])

    def version(self, name: str) -> None:
        self.minute().versions.add(name)
        self.first_seen.setdefault(name, self.at())


# -- traffic --------------------------------------------------------------------------------------------
ETAGS_KEPT = 20_000


@dataclass
class Traffic:
    ids: list[str]  # percent-encoded for the path
    records: list[dict]
    categories: list[str]
    html_route: str | None  # the path template of related.html, when the service has it
    etags: list[tuple[str, str]] = field(default_factory=list)  # (encoded id, ETag) of earlier answers

    def request(self, rng: random.Random) -> tuple[str, str, dict, bytes | None]:
        """(label, path, headers, body) of the next request, in the soak's mix."""
        draw = rng.random()
        article = rng.choice(self.ids)
        if draw < 0.90:
            if draw < 0.30 and self.etags:
                known, etag = rng.choice(self.etags)
                return "conditional", f"/v1/articles/{known}/related", {"If-None-Match": etag}, None
            return "get", f"/v1/articles/{article}/related", {}, None
        if draw < 0.95:
            record = rng.choice(self.records)
            body = {"title": record["title"], "body": " ".join(record["body"].split()[:300]), "limit": 10}
            return "draft", "/v1/related", {"Content-Type": "application/json"}, json.dumps(body).encode()
        if self.html_route is not None and rng.random() < 0.5:
            return "html", re.sub(r"\{article_id(:path)?\}", article, self.html_route), {}, None
        options = rng.choice([
            f"category={rng.choice(self.categories)}",
            f"exclude={rng.choice(self.ids)}&limit=5",
            "lang=any&limit=20",
            "max_age_days=365&relative_to=article",
        ])
        return "filtered", f"/v1/articles/{article}/related?{options}", {}, None

    def remember(self, rng: random.Random, path: str, etag: str) -> None:
        entry = (path.split("/")[3], etag)
        if len(self.etags) < ETAGS_KEPT:
            self.etags.append(entry)
        else:
            self.etags[rng.randrange(ETAGS_KEPT)] = entry


async def connection(base: str, traffic: Traffic, soak: Soak, deadline: float, seed: int) -> None:
    """One keep-alive connection in closed loop; checks that the versions it sees never move back."""
    rng = random.Random(seed)
    last_version: str | None = None
    reconnected = False

    async def trace(event: str, info: dict) -> None:
        nonlocal reconnected
        if event.endswith("connect_tcp.complete"):
            reconnected = True  # a new connection may reach the other worker: new baseline

    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
        while time.perf_counter() < deadline:
            label, path, headers, body = traffic.request(rng)
            t = time.perf_counter()
            try:
                response = await client.request(
                    "POST" if body is not None else "GET", path, headers=headers, content=body,
                    extensions={"trace": trace},
                )
            except httpx.HTTPError as err:
                soak.record(time.perf_counter() - t, None, f"{label}: {type(err).__name__}", repr(err))
                continue
            latency = time.perf_counter() - t
            status = response.status_code
            if status not in (200, 304):
                try:
                    code = response.json()["error"]["code"]
                except Exception:
                    code = "-"
                soak.record(latency, status, f"{label}: {status} {code}", response.text)
                continue
            soak.record(latency, status, None)
            if reconnected:
                soak.reconnects += last_version is not None
                last_version, reconnected = None, False
            if status == 304 or label == "html":
                continue
            version = response.json()["index_version"]
            soak.version(version)
            if last_version is not None and version < last_version:
                soak.backward.append({"at": soak.at(), "from": last_version, "to": version, "request": label})
            last_version = max(version, last_version or version)
            if label == "get":
                traffic.remember(rng, path, response.headers["etag"])


# -- changes --------------------------------------------------------------------------------------------
def changed(record: dict, tag: str, new: bool) -> dict:
    """A new article (fresh id) or an edit of an existing one; never a deletion (traffic asks for every id)."""
    words = record["body"].split()
    return record | {
        "id": f"soak-{tag}" if new else record["id"],
        "title": f"{record['title']} ({tag})",
        "body": " ".join(words[len(words) // 3 :] + words[: len(words) // 3]),
        "url": f"https://synthetic.example/soak/{tag}",
    }


async def post_updates(base: str, traffic: Traffic, soak: Soak, deadline: float) -> None:
    rng = random.Random(1)
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/x-ndjson"}
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        k = 0
        while time.perf_counter() + POST_EVERY < deadline:
            await asyncio.sleep(POST_EVERY)
            k += 1
            record = changed(rng.choice(traffic.records), f"post-{k}", new=k % 2 == 1)
            at, t = soak.at(), time.perf_counter()
            response = await client.post("/v1/admin/articles", content=json.dumps(record) + "\n", headers=headers)
            body = response.json()
            soak.changes.append({
                "kind": "post", "at": at, "seconds": round(time.perf_counter() - t, 2), "status": response.status_code,
                "outcome": "applied" if response.status_code == 200 else
                           "deferred (locked)" if response.status_code == 409 else "failed",
                "version": body.get("version") or body.get("error", {}).get("code"),
            })


async def run_cli(soak: Soak, kind: str, *args: str) -> dict:
    at, t = soak.at(), time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        related_bin(), *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    stderr = (await process.communicate())[1].decode(errors="replace")
    status = [line for line in stderr.splitlines() if "status=" in line]
    outcome = {0: "applied", 75: "deferred (locked)"}.get(process.returncode, "failed")
    entry = {"kind": kind, "at": at, "seconds": round(time.perf_counter() - t, 2), "exit": process.returncode,
             "outcome": outcome, "summary": (status or stderr.splitlines()[-1:] or [""])[-1][:400]}
    soak.changes.append(entry)
    return entry


async def cli_updates(data: Path, traffic: Traffic, soak: Soak, deadline: float) -> None:
    rng = random.Random(2)
    k = 0
    while time.perf_counter() + CLI_UPDATE_EVERY < deadline:
        await asyncio.sleep(CLI_UPDATE_EVERY)
        k += 1
        records = [changed(r, f"cli-{k}-{i}", new=i % 2 == 0)
                   for i, r in enumerate(rng.sample(traffic.records, CLI_UPDATE_ARTICLES))]
        source = data / f"soak-update-{k}.jsonl"
        source.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        await run_cli(soak, "cli update", "update", "--source", str(source), "--data-dir", str(data))


async def full_build(corpus: Path, data: Path, soak: Soak, at: float) -> None:
    """One full build, retried every 5 s while an update holds the lock (as deploy/crontab does)."""
    await asyncio.sleep(at)
    while True:
        entry = await run_cli(soak, "full build", "build", "--source", str(corpus), "--data-dir", str(data),
                              "--force", "--no-progress")
        if entry["exit"] != 75:
            break
        await asyncio.sleep(5)
    if entry["exit"] == 0:
        entry["version"] = (data / "current").resolve().name


# -- worker memory --------------------------------------------------------------------------------------
def wait_all_ready(base: str, server: psutil.Process, count: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not all_ready(base, server, count):
        if time.monotonic() > deadline:
            raise RuntimeError(f"not every worker was ready after {timeout} s")
        time.sleep(0.5)


def memory(process: psutil.Process) -> dict:
    status = Path(f"/proc/{process.pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    kib = lambda key: int(fields[key].split()[0]) // 1024 if key in fields else None  # noqa: E731
    return {"pid": process.pid, "rss_mb": process.memory_info().rss >> 20, "anon_mb": kib("RssAnon"),
            "file_mb": kib("RssFile"), "uss_mb": process.memory_full_info().uss >> 20}


async def sample_memory(server: psutil.Process, soak: Soak, deadline: float) -> None:
    while True:
        try:
            soak.rss.append({"at": soak.at(), "workers": [memory(p) for p in workers(server)]})
        except (psutil.Error, OSError) as err:
            soak.rss.append({"at": soak.at(), "error": repr(err)})
        if time.perf_counter() + RSS_EVERY > deadline + 1:
            return
        await asyncio.sleep(RSS_EVERY)


def growth(samples: list[dict], seconds: float) -> dict[str, dict]:
    """Per worker pid: median RSS (and private memory) over minute 2 and over the last minute, and the growth.

    Medians of six samples: RSS counts the mapped files' pages, which come and go with every new version,
    and a posted update briefly adds its temporaries to the worker that runs it."""
    by_pid: dict[int, list[tuple[float, dict]]] = defaultdict(list)
    for sample in samples:
        for w in sample.get("workers", []):
            by_pid[w["pid"]].append((sample["at"], w))
    out = {}
    for pid, series in by_pid.items():
        early = [w for at, w in series if 60 <= at < 120] or [series[0][1]]
        late = [w for at, w in series if at >= seconds - 60] or [series[-1][1]]
        row: dict = {"samples": len(series)}
        for key, label in (("rss_mb", "rss"), ("anon_mb", "private")):
            first, last = statistics.median(w[key] for w in early), statistics.median(w[key] for w in late)
            row |= {f"{label}_mb_minute_2": first, f"{label}_mb_last_minute": last,
                    f"{label}_growth": round(last / first - 1, 4)}
        out[str(pid)] = row
    return out


# -- the run --------------------------------------------------------------------------------------------
async def soak_run(base: str, server: psutil.Process, corpus: Path, data: Path, traffic: Traffic, args) -> Soak:
    seconds = args.minutes * 60
    soak = Soak(started=time.perf_counter())
    deadline = soak.started + seconds
    background = [
        asyncio.create_task(post_updates(base, traffic, soak, deadline)),
        asyncio.create_task(cli_updates(data, traffic, soak, deadline)),
        asyncio.create_task(sample_memory(server, soak, deadline)),
    ]
    if args.build_at < seconds:
        background.append(asyncio.create_task(full_build(corpus, data, soak, args.build_at)))
    await asyncio.gather(*(connection(base, traffic, soak, deadline, seed) for seed in range(args.concurrency)))
    await asyncio.gather(*background)  # the build may outlast the traffic: wait for it to report
    return soak


def report(soak: Soak, args, build_seconds: float) -> dict:
    minutes = []
    for i, bucket in enumerate(soak.minutes[: args.minutes]):
        rss = [s for s in soak.rss if i * 60 <= s["at"] < (i + 1) * 60 and s.get("workers")]
        row = {"minute": i + 1, **bucket.row(60.0)}
        row["rss_mb"] = [w["rss_mb"] for w in rss[-1]["workers"]] if rss else []
        row["changes"] = [f"{c['kind']}: {c['outcome']}" for c in soak.changes if i * 60 <= c["at"] < (i + 1) * 60]
        minutes.append(row)
    grown = growth(soak.rss, args.minutes * 60)
    build = next((c for c in reversed(soak.changes) if c["kind"] == "full build"), {})  # the attempt that ran
    swap_at = soak.first_seen.get(build.get("version", ""), None)
    outcomes = Counter(f"{c['kind']}: {c['outcome']}" for c in soak.changes)
    acceptance = {
        "no_errors": not soak.errors,
        "versions_forward_only": not soak.backward,
        "rss_growth_within_5pct": all(g["rss_growth"] <= MAX_RSS_GROWTH for g in grown.values()) and bool(grown),
        "build_swapped_mid_run": swap_at is not None and 0.25 * args.minutes * 60 <= swap_at <= 0.75 * args.minutes * 60,
    }
    return {
        "articles": args.articles, "minutes": args.minutes, "concurrency": args.concurrency, "workers": args.workers,
        "cpus": os.cpu_count(), "load_average_end": os.getloadavg(), "base_build_seconds": round(build_seconds, 1),
        "per_minute": minutes, "errors_by_kind": dict(soak.errors), "error_samples": soak.error_samples,
        "versions_moved_back": soak.backward[:50], "versions_moved_back_count": len(soak.backward),
        "reconnects": soak.reconnects, "versions_first_seen": soak.first_seen,
        "full_build": build | {"swap_seen_at": swap_at}, "change_outcomes": dict(outcomes), "changes": soak.changes,
        "rss_growth_after_minute_1": grown, "rss_samples": soak.rss, "acceptance": acceptance,
        "baseline": "minute 1 of the same run (req/s, p99, RSS)",
    }


def print_table(out: dict) -> None:
    print(f"\nsoak: {out['articles']:,} articles, {out['minutes']} min, {out['concurrency']} connections, "
          f"{out['workers']} workers, {out['cpus']} cpus (load average at the end {out['load_average_end'][0]:.1f})")
    print(f"{'min':>3} {'requests':>9} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>8} {'304':>6} {'errors':>6}  "
          f"{'RSS MB (workers)':<17} changes")
    first = out["per_minute"][0] if out["per_minute"] else None
    for row in out["per_minute"]:
        changes = Counter(row["changes"])
        print(f"{row['minute']:>3} {row['requests']:>9} {row['rps']:>7} {row['p50_ms']:>7} {row['p99_ms']:>8} "
              f"{row['not_modified']:>6} {row['errors']:>6}  {'/'.join(map(str, row['rss_mb'])):<17} "
              + ", ".join(f"{k} x{v}" for k, v in sorted(changes.items())))
    if first and out["per_minute"][-1]["rps"]:
        last = out["per_minute"][-1]
        print(f"last minute vs first: req/s x{last['rps'] / first['rps']:.2f}, "
              f"p99 x{(last['p99_ms'] or 0) / (first['p99_ms'] or 1):.2f}")
    print(f"errors by kind: {out['errors_by_kind'] or 'none'}")
    print(f"versions moved back: {out['versions_moved_back_count']} (reconnections {out['reconnects']})")
    build = out["full_build"]
    print(f"full build: {build.get('outcome')} at {build.get('at')} s, took {build.get('seconds')} s, "
          f"first served at {build.get('swap_seen_at')} s")
    print(f"changes: {out['change_outcomes']}")
    for pid, g in out["rss_growth_after_minute_1"].items():
        print(f"worker {pid}, median of minute 2 -> of the last minute: RSS {g['rss_mb_minute_2']} -> "
              f"{g['rss_mb_last_minute']} MB ({g['rss_growth']:+.1%}), private {g['private_mb_minute_2']} -> "
              f"{g['private_mb_last_minute']} MB ({g['private_growth']:+.1%})")
    print("acceptance: " + ", ".join(f"{k}={'yes' if v else 'NO'}" for k, v in out["acceptance"].items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--articles", type=int, default=100_000)
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--build-at", type=float, default=10,
                        help="Seconds into the run to start the full build (a 100k build takes 2 minutes on 2 idle "
                             "cores, so its swap lands mid-run); past the end of the run: no build.")
    args = parser.parse_args()

    t = time.perf_counter()
    corpus, base_dir = base_index(args.articles)
    build_seconds = time.perf_counter() - t
    ids, records = sample_records(corpus, 2000)
    data = hard_linked_copy(base_dir, RESULTS / "soak", "run-")
    port = free_port()
    env = dict(os.environ, RELATED_ADMIN_TOKEN=ADMIN_TOKEN)
    cmd = [related_bin(), "serve", "--data-dir", str(data), "--host", HOST, "--port", str(port),
           "--workers", str(args.workers)]
    try:
        with started(cmd, port, env) as (base, process):
            server = psutil.Process(process.pid)
            wait_all_ready(base, server, args.workers)
            paths = httpx.get(f"{base}/openapi.json").json()["paths"]
            html = next((p for p in paths if p.endswith("related.html")), None)
            traffic = Traffic(ids, records, sorted({r["category"] for r in records if r.get("category")}), html)
            print(f"serving {base} ({args.workers} workers); related.html: {html or 'no such route, filtered GETs only'}")
            soak = asyncio.run(soak_run(base, server, corpus, data, traffic, args))
    finally:
        import shutil

        shutil.rmtree(data, ignore_errors=True)
    out = report(soak, args, build_seconds)
    print_table(out)
    path = RESULTS / ("soak.json" if args.articles == 100_000 else f"soak-{args.articles // 1000}k.json")
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")
    sys.exit(0 if all(v for k, v in out["acceptance"].items() if k != "build_swapped_mid_run") else 1)


if __name__ == "__main__":
    main()
