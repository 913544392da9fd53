"""HTTP throughput of `related serve` against a bare FastAPI app, on the same uvicorn settings.

    python benchmarks/api_throughput.py [--articles 100000] [--duration 15] [--workers 1]
    python benchmarks/api_throughput.py --data-dir DIR --corpus CORPUS.jsonl --articles 1000000 --workers 2

The first phase starts the moment the service reports ready (--cold seconds of uniform GETs):
the figures of a freshly started or reloaded service, beside the warm ones.

Builds (or reuses) a synthetic index under benchmarks/results/, starts our service and a
bare FastAPI app that returns a constant 10-item list on free loopback ports, drives both
with the same load (wrk with a Lua script picking random known ids when wrk is on PATH,
else a bounded asyncio httpx client), then POSTs 500-word drafts. The GET phases alternate
in --rounds short rounds (ours uniform, bare, ours hot), so the ratio compares runs taken
seconds apart on a noisy shared box; figures are medians over rounds. Prints req/s, p50 and
p99 for each and writes benchmarks/results/api_throughput.json. Loopback only; every
phase is bounded by --duration.
"""
from __future__ import annotations

import argparse
import asyncio
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
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from serving import HOST, free_port, running  # noqa: E402

CONSTANT_ITEMS = [
    {
        "id": f"syn-{i}",
        "title": "kalo mira tensu vorandri polo mira ten",
        "url": f"https://synthetic.example/{i}",
        "published": "2024-05-01T10:00:00Z",
        "category": "politics",
        "lang": "en",
        "score": 0.8123,
    }
    for i in range(10)
]


def bare_app():
    """The reference: a bare FastAPI app returning a constant 10-item list on the same route."""
    from fastapi import FastAPI

    app = FastAPI()
    payload = {"article_id": "x", "index_version": "bare", "fill_reason": None, "items": CONSTANT_ITEMS}

    @app.get("/v1/articles/{article_id:path}/related")
    async def related(article_id: str) -> dict:
        return payload

    @app.get("/readyz")
    async def readyz() -> dict:
        return {"ready": True}

    return app




def related_bin() -> str:
    candidate = Path(sys.executable).with_name("related")
    return str(candidate) if candidate.exists() else "related"


def ensure_index(articles: int, seed: int) -> tuple[Path, Path]:
    from benchmarks.synthetic import synthetic_corpus

    corpus = synthetic_corpus(articles, seed, path=RESULTS / f"synthetic-{articles}-{seed}.jsonl")
    data_dir = RESULTS / f"api-{articles}-{seed}" / "data"
    started = time.perf_counter()
    # Idempotent: an unchanged corpus + config is a no-op that only re-hashes the source.
    subprocess.run([related_bin(), "build", "--source", str(corpus), "--data-dir", str(data_dir), "--no-progress"],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    print(f"index ready in {time.perf_counter() - started:.1f}s: {data_dir}", file=sys.stderr)
    return corpus, data_dir


# -- load -------------------------------------------------------------------------------------
GET_LUA = """
local n = {n}
request = function()
  return wrk.format("GET", "/v1/articles/syn-" .. math.random(0, n - 1) .. "/related?limit=10")
end
"""
HOT_IDS = 1000  # a popular-articles phase: ids from a small set, all in the response cache
POST_LUA = """
local bodies = {{{bodies}}}
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  return wrk.format("POST", "/v1/related", nil, bodies[math.random(1, #bodies)])
end
"""
UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


def lua_string(text: str) -> str:
    return "[==[" + text + "]==]"


def parse_wrk(out: str) -> dict:
    def ms(label: str) -> float:
        m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
        return round(float(m.group(1)) * UNIT[m.group(2)], 3) if m else float("nan")

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {
        "requests": total, "rps": round(rps, 1), "p50_ms": ms("50"), "p90_ms": ms("90"), "p99_ms": ms("99"),
        "non_2xx": int(errors.group(1)) if errors else 0, "socket_errors": socket_errors.group(1) if socket_errors else None,
    }


def wrk(base: str, script: str, duration: float, concurrency: int, threads: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(script)
    try:
        out = subprocess.run(
            ["wrk", f"-t{min(threads, concurrency)}", f"-c{concurrency}", f"-d{int(duration)}s", "--latency",
             "--timeout", "10s", "-s", fh.name, base],
            capture_output=True, text=True, check=True, timeout=duration + 60,
        ).stdout
    finally:
        os.unlink(fh.name)
    return parse_wrk(out)


async def httpx_load(base: str, make_request, duration: float, concurrency: int) -> dict:
    """Fallback without wrk: `concurrency` workers in closed loop for `duration` seconds."""
    import httpx

    latencies: list[float] = []
    failures = 0
    deadline = time.perf_counter() + duration
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=10) as client:
        async def worker(rng: random.Random) -> None:
            nonlocal failures
            while time.perf_counter() < deadline:
                method, url, body = make_request(rng)
                t = time.perf_counter()
                r = await client.request(method, url, content=body, headers={"Content-Type": "application/json"})
                latencies.append(time.perf_counter() - t)
                failures += r.status_code >= 400

        started = time.perf_counter()
        await asyncio.gather(*(worker(random.Random(i)) for i in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e3, 3) if latencies else float("nan")

    return {"requests": len(latencies), "rps": round(len(latencies) / elapsed, 1), "p50_ms": pct(0.5),
            "p90_ms": pct(0.9), "p99_ms": pct(0.99), "non_2xx": failures, "socket_errors": None}


def drive(base: str, kind: str, args, *, n: int, drafts: list[str], concurrency: int) -> dict:
    if shutil.which("wrk") and not args.no_wrk:
        script = GET_LUA.format(n=n) if kind == "get" else POST_LUA.format(bodies=", ".join(map(lua_string, drafts)))
        return wrk(base, script, args.duration, concurrency, args.threads) | {"tool": "wrk"}

    def make(rng: random.Random):
        if kind == "get":
            return "GET", f"/v1/articles/syn-{rng.randrange(n)}/related?limit=10", None
        return "POST", "/v1/related", rng.choice(drafts).encode()

    return asyncio.run(httpx_load(base, make, args.duration, concurrency)) | {"tool": "httpx"}


def make_drafts(corpus: Path, count: int = 20, words: int = 500) -> list[str]:
    drafts = []
    with open(corpus, encoding="utf-8") as fh:
        for line in fh:
            record = json.loads(line)
            body = record["body"].split()
            if len(body) < words // 2:
                continue
            body = (body * (words // len(body) + 1))[:words]
            drafts.append(json.dumps(
                {"title": record["title"], "body": " ".join(body), "lang": record.get("lang"), "limit": 10}
            ))
            if len(drafts) == count:
                break
    return drafts


def median_run(runs: list[dict]) -> dict:
    """Per-field median over rounds (the tool and error counts from all of them)."""
    out = {key: round(statistics.median(r[key] for r in runs), 3) for key in ("rps", "p50_ms", "p90_ms", "p99_ms")}
    return out | {"non_2xx": sum(r["non_2xx"] for r in runs), "tool": runs[0]["tool"]}


# -- main -------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--articles", type=int, default=100_000, help="Synthetic corpus size (with --data-dir: its size).")
    parser.add_argument("--duration", type=float, default=15.0, help="Seconds per load phase (GET: over all rounds).")
    parser.add_argument("--rounds", type=int, default=3, help="Alternating GET rounds, ours vs bare.")
    parser.add_argument("--warmup", type=float, default=20.0, help="Seconds of uniform GETs before measuring (0: cold).")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers for both apps.")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-size", type=int, default=None, help="RELATED_RESPONSE_CACHE_SIZE (default: the service's).")
    parser.add_argument("--no-wrk", action="store_true", help="Use the httpx client even when wrk is available.")
    parser.add_argument("--out", type=Path, default=RESULTS / "api_throughput.json")
    parser.add_argument("--data-dir", type=Path, help="Serve this built index (ids syn-0 .. syn-N-1) instead of building one.")
    parser.add_argument("--corpus", type=Path, help="Its corpus, for the drafts (with --data-dir).")
    parser.add_argument("--cold", type=float, default=5.0, help="Seconds of uniform GETs from the moment of ready.")
    args = parser.parse_args()
    if args.duration <= 0 or args.duration > 600 or not 0 <= args.warmup <= 600 or not 1 <= args.concurrency <= 256:
        parser.error("--duration must be in (0, 600], --warmup in [0, 600] and --concurrency in [1, 256]")

    if args.data_dir is not None and args.corpus is None:
        parser.error("--data-dir needs --corpus (its drafts)")
    corpus, data_dir = (args.corpus, args.data_dir) if args.data_dir else ensure_index(args.articles, args.seed)
    if args.data_dir:  # GETs range over every id of the given index (syn-0 .. syn-N-1), not --articles
        manifest = json.loads(((data_dir / "current").resolve() / "manifest.json").read_text())
        args.articles = int(manifest["counts"]["articles"])
    drafts = make_drafts(corpus)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELATED_")}
    env["PYTHONPATH"] = str(ROOT)
    if args.cache_size is not None:
        env["RELATED_RESPONSE_CACHE_SIZE"] = str(args.cache_size)
    results: dict = {
        "articles": args.articles, "workers": args.workers, "duration_s": args.duration,
        "concurrency": args.concurrency, "cpus": os.cpu_count(), "load_average_before": os.getloadavg(),
    }

    port, bare_port = free_port(), free_port()
    serve = [related_bin(), "serve", "--data-dir", str(data_dir), "--host", HOST, "--port", str(port),
             "--workers", str(args.workers)]
    bare = [sys.executable, "-c",
            "import uvicorn; uvicorn.run('benchmarks.api_throughput:bare_app', factory=True, "
            f"host='{HOST}', port={bare_port}, workers={args.workers}, log_level='info', access_log=False)"]
    with running(serve, port, env) as base, running(bare, bare_port, env) as bare_base:
        if args.cold > 0:  # `running` returns at ready: nothing has touched the index yet
            first = argparse.Namespace(**{**vars(args), "duration": args.cold})
            results["cold"] = drive(base, "get", first, n=args.articles, drafts=drafts, concurrency=args.concurrency)
        for _ in range(200):  # touch the code paths once before measuring
            urllib.request.urlopen(f"{base}/v1/articles/syn-{random.randrange(args.articles)}/related").read()
        if args.warmup > 0:  # a running service has rendered most articles' items already (api/render.py)
            warm = argparse.Namespace(**{**vars(args), "duration": args.warmup})
            results["warmup"] = drive(base, "get", warm, n=args.articles, drafts=drafts, concurrency=args.concurrency)
        hot = min(HOT_IDS, args.articles)
        for i in range(hot):  # fill the response cache
            urllib.request.urlopen(f"{base}/v1/articles/syn-{i}/related?limit=10").read()
        # This box is shared and noisy: the GET phases alternate in short rounds, and each round
        # compares ours with the bare app measured right next to it.
        rounds = {"related": [], "bare": [], "related_hot": []}
        phase = argparse.Namespace(**{**vars(args), "duration": max(1.0, args.duration / args.rounds)})
        for _ in range(args.rounds):
            rounds["related"].append(drive(base, "get", phase, n=args.articles, drafts=drafts, concurrency=args.concurrency))
            rounds["bare"].append(drive(bare_base, "get", phase, n=args.articles, drafts=drafts, concurrency=args.concurrency))
            rounds["related_hot"].append(drive(base, "get", phase, n=hot, drafts=drafts, concurrency=args.concurrency))
        for name, runs in rounds.items():
            results[name] = median_run(runs) | {"rounds": runs}
        for name, ours in (("ratio", "related"), ("ratio_hot", "related_hot")):
            results[name] = round(statistics.median(
                a["rps"] / b["rps"] for a, b in zip(rounds[ours], rounds["bare"])
            ), 3)
        results["draft_c1"] = drive(base, "post", args, n=args.articles, drafts=drafts, concurrency=1)
        results["draft_c4"] = drive(base, "post", args, n=args.articles, drafts=drafts, concurrency=4)
        results["draft"] = drive(base, "post", args, n=args.articles, drafts=drafts, concurrency=args.concurrency)
        with urllib.request.urlopen(f"{base}/metrics") as r:
            metrics = r.read().decode()
        errors = [line for line in metrics.splitlines()
                  if line.startswith("related_http_requests_total") and 'status="5' in line and "/readyz" not in line]
        results["server_errors"] = sum(float(line.rsplit(" ", 1)[1]) for line in errors)
        results["server_error_series"] = errors

    results["load_average_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")

    def row(name: str, r: dict) -> str:
        return f"{name:<28} {r['rps']:>9.1f} {r['p50_ms']:>8.2f} {r['p90_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['non_2xx']:>6}"

    print(f"{args.articles} articles, {args.workers} worker(s), c={args.concurrency}, {args.duration:.0f}s, "
          f"load tool {results['related']['tool']}")
    print(f"{'':<28} {'req/s':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'errors':>6}")
    if "cold" in results:
        print(row(f"GET related, cold ({args.cold:.0f}s)", results["cold"]))
    if "warmup" in results:
        print(row(f"(warm-up {args.warmup:.0f}s, uniform ids)", results["warmup"]))
    print(row("GET related, uniform ids", results["related"]))
    print(row(f"GET related, {HOT_IDS} hot ids", results["related_hot"]))
    print(row("GET constant (bare FastAPI)", results["bare"]))
    print(row("POST draft 500 words, c=1", results["draft_c1"]))
    print(row("POST draft 500 words, c=4", results["draft_c4"]))
    print(row(f"POST draft 500 words, c={args.concurrency}", results["draft"]))
    print(f"ratio ours/bare: uniform {results['ratio']:.2f}, hot {results['ratio_hot']:.2f}   "
          f"5xx seen: {results['server_errors']:.0f}   -> {args.out}")


if __name__ == "__main__":
    main()
