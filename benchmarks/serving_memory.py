"""Memory of `related serve --workers N`: per-worker RSS and USS after loading, and after posted updates.

Every per-article array and column is memory-mapped from the version directory, so the
workers share one page-cached copy and each one's private memory (USS) should stay near
that of its imports, whatever the corpus size. This starts the service on loopback, waits
until every worker serves the index, and prints each worker's RSS, USS and PSS (psutil
`memory_full_info`), the time to ready and GET latencies over articles not asked before
(cold) and again (warm); then it posts `--updates` small updates (POST /v1/admin/articles),
waits until every worker serves the last one, and measures again. JSON goes to
benchmarks/results/serving_memory.json.

    python benchmarks/serving_memory.py --articles 20000
    python benchmarks/serving_memory.py --data-dir data --updates 10   # an existing index (copied by hard links)

Set RELATED_BIN to run another `related` executable (e.g. a wrapper that sets PYTHONPATH).
"""
from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving import HOST, ROOT, free_port, hard_linked_copy  # noqa: E402
from synthetic import synthetic_corpus  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
ADMIN_TOKEN = "serving-memory-benchmark"
LOADED = re.compile(r"serving index version (\S+) \(was \S+\), loaded in ([0-9.]+)s")
MIB = 1 << 20


def related_bin() -> str:
    return os.environ.get("RELATED_BIN") or str(Path(sys.executable).with_name("related"))


def corpus_path(n: int, shape: str) -> Path:
    suffix = "" if shape == "names" else f"-{shape}"
    return RESULTS / f"synthetic{suffix}-{n}-0.jsonl"


def built_index(n: int, shape: str) -> Path:
    """A data dir holding a build of the synthetic corpus (reused when input and code are unchanged)."""
    corpus = synthetic_corpus(n, path=corpus_path(n, shape), shape=shape)
    data = RESULTS / f"serving-memory-{corpus.stem}"
    done = subprocess.run(
        [related_bin(), "build", "--source", str(corpus), "--data-dir", str(data), "--no-progress"],
        capture_output=True, text=True,
    )
    if done.returncode:
        sys.exit(f"build failed: {done.stderr[-2000:]}")
    return data


def article_ids(data: Path, count: int, seed: int) -> list[str]:
    """`count` ids of the current version (from its metadata, whatever the layout), seeded."""
    version = (data / "current").resolve()
    ids = []
    for path in sorted(version.rglob("articles.jsonl")):
        with open(path, encoding="utf-8") as handle:
            ids.extend(json.loads(line)["id"] for line in handle if line.strip())
    return random.Random(seed).sample(ids, min(count, len(ids)))


def update_texts(corpus: Path | None, size: int) -> list[dict]:
    """`size` article texts for updates: the corpus's first ones, or made-up ones for an index given by --data-dir."""
    if corpus is None:
        return [{"title": f"update {i}", "body": f"text of update article {i} " * 40} for i in range(size)]
    with open(corpus, encoding="utf-8") as handle:
        return [json.loads(next(handle)) for _ in range(size)]


def update_records(texts: list[dict], tag: str) -> str:
    """An update body: the texts as new articles, under ids of their own."""
    lines = []
    for i, row in enumerate(texts):
        lines.append(json.dumps(row | {
            "id": f"{tag}-{i}", "url": f"https://synthetic.example/{tag}/{i}", "title": f"{row['title']} {tag}",
        }))
    return "\n".join(lines) + "\n"


def anonymous_mib(pid: int) -> float | None:
    """Memory no other process can share (heap, copies): USS also counts pages of mapped files that
    only this worker has touched so far, which the page cache holds once for all (Linux only)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            fields = dict(line.split(":", 1) for line in rollup.read().splitlines()[1:])
    except OSError:
        return None
    return round(int(fields["Anonymous"].split()[0]) / 1024, 1)


class Service:
    """`related serve` on loopback, its log read for each worker's loads."""

    def __init__(self, data: Path, workers: int, log: Path) -> None:
        self.port = free_port()
        self.base = f"{HOST}:{self.port}"
        self.workers = workers
        self.log = log
        env = dict(os.environ, PYTHONPATH=str(ROOT), RELATED_ADMIN_TOKEN=ADMIN_TOKEN,
                   RELATED_MAX_BODY_BYTES=str(64 * MIB))
        cmd = [related_bin(), "serve", "--data-dir", str(data), "--host", HOST, "--port", str(self.port),
               "--workers", str(workers)]
        self.started = time.perf_counter()
        with open(log, "w") as out:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def loads(self) -> list[tuple[str, float]]:
        """(version, seconds) of every load any worker logged so far."""
        return [(m[1], float(m[2])) for m in LOADED.finditer(self.log.read_text(errors="replace"))]

    def wait_for(self, version: str | None, timeout: float) -> float:
        """Seconds until every worker logged loading `version` (None: any version)."""
        started = time.perf_counter()
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the service exited: {self.log.read_text()[-2000:]}")
            done = [v for v, _ in self.loads() if version is None or v == version]
            if len(done) >= self.workers:
                return time.perf_counter() - started
            if time.perf_counter() - started > timeout:
                raise RuntimeError(f"not every worker loaded {version} after {timeout}s: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    def worker_memory(self) -> list[dict]:
        """RSS, USS, PSS (MiB) of each worker process (uvicorn's spawned children, not multiprocessing's resource tracker)."""
        supervisor = psutil.Process(self.proc.pid)
        workers = [supervisor] if self.workers == 1 else [  # one worker: uvicorn serves in its own process
            child for child in supervisor.children(recursive=True) if any("spawn_main" in a for a in child.cmdline())
        ]
        out = []
        for worker in workers:
            try:
                info = worker.memory_full_info()
            except psutil.NoSuchProcess:
                continue
            out.append({"pid": worker.pid, "rss_mib": round(info.rss / MIB, 1), "uss_mib": round(info.uss / MIB, 1),
                        "pss_mib": round(info.pss / MIB, 1), "anonymous_mib": anonymous_mib(worker.pid)})
        return out

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=120)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def service(data: Path, workers: int) -> Iterator[Service]:
    with tempfile.NamedTemporaryFile(suffix=".log", delete=False) as log:
        path = Path(log.name)
    running = Service(data, workers, path)
    try:
        yield running
    finally:
        running.stop()
        errors = [line for line in path.read_text(errors="replace").splitlines() if "ERROR" in line]
        if errors:
            print(f"{len(errors)} error lines in the server log, first ones:", *errors[:10], sep="\n  ", file=sys.stderr)
        path.unlink(missing_ok=True)


def latencies(svc: Service, ids: list[str]) -> dict:
    """p50/p99/max (ms) of unfiltered GET related requests, one connection each (so both workers answer)."""
    times = []
    for article_id in ids:
        started = time.perf_counter()
        status, _ = svc.request("GET", f"/v1/articles/{quote(article_id, safe='')}/related")
        times.append((time.perf_counter() - started) * 1000)
        if status != 200:
            raise RuntimeError(f"GET related {article_id}: {status}")
    times.sort()
    return {"requests": len(times), "p50_ms": round(statistics.median(times), 2),
            "p99_ms": round(times[int(0.99 * (len(times) - 1))], 2), "max_ms": round(times[-1], 2)}


def snapshot(svc: Service, ids: list[str]) -> dict:
    """Memory now, then the latencies of first requests (cold) and the same again (warm), then memory."""
    memory = svc.worker_memory()
    cold, warm = latencies(svc, ids), latencies(svc, ids)
    return {"workers": memory, "max_uss_mib": max(w["uss_mib"] for w in memory), "get_cold": cold, "get_warm": warm,
            "workers_after_requests": svc.worker_memory()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--articles", type=int, default=20_000, help="Synthetic corpus size (ignored with --data-dir).")
    parser.add_argument("--shape", choices=("names", "archive"), default="names")
    parser.add_argument("--data-dir", type=Path, default=None, help="Use this index instead of building one.")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--updates", type=int, default=5, help="Updates posted after the first measurement.")
    parser.add_argument("--update-size", type=int, default=10, help="New articles per update.")
    parser.add_argument("--requests", type=int, default=500, help="GETs per latency sample.")
    parser.add_argument("--settle", type=float, default=5.0, help="Seconds to wait after ready before measuring.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "serving_memory.json")
    args = parser.parse_args()

    source = args.data_dir or built_index(args.articles, args.shape)
    data = hard_linked_copy(source, RESULTS, "serving-memory-")
    ids = article_ids(data, 2 * args.requests, args.seed)
    texts = update_texts(None if args.data_dir else corpus_path(args.articles, args.shape), args.update_size)
    results: dict = {"source": str(source), "workers": args.workers, "cpus": os.cpu_count(),
                     "load_average_before": os.getloadavg()}
    try:
        with service(data, args.workers) as svc:
            results["ready_s"] = round(svc.wait_for(None, timeout=1800), 2)
            results["load_s"] = [s for _, s in svc.loads()]
            time.sleep(args.settle)
            results["loaded"] = snapshot(svc, ids[: args.requests])
            auth = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/x-ndjson"}
            posted, version = [], None
            for u in range(args.updates):
                started = time.perf_counter()
                status, body = svc.request("POST", "/v1/admin/articles",
                                           update_records(texts, f"mem{u}").encode(), auth)
                if status != 200:
                    raise RuntimeError(f"update {u}: {status} {body[:500]!r}")
                version = json.loads(body)["version"]
                posted.append(round(time.perf_counter() - started, 3))
            if version is not None:
                results["update_s"] = posted
                results["all_workers_on_last_update_s"] = round(svc.wait_for(version, timeout=600), 2)
                time.sleep(args.settle)
                results["updated"] = snapshot(svc, ids[args.requests :])
    finally:
        shutil.rmtree(data, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    for stage in ("loaded", "updated"):
        if stage in results:
            r = results[stage]
            workers = ", ".join(
                f"RSS {w['rss_mib']:.0f} / USS {w['uss_mib']:.0f} / anonymous {w['anonymous_mib']} MiB" for w in r["workers"]
            )
            print(f"{stage:>8}: {workers}; GET p50/p99 cold {r['get_cold']['p50_ms']}/{r['get_cold']['p99_ms']} ms, "
                  f"warm {r['get_warm']['p50_ms']}/{r['get_warm']['p99_ms']} ms")
    print(f"ready in {results['ready_s']} s; updates posted in {results.get('update_s')} s; -> {args.out}")


if __name__ == "__main__":
    main()
