"""Issue 11: with `related serve --workers 2`, /metrics shows the totals of all workers, whichever answers."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from prometheus_client import multiprocess
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from api.app import create_app
from api.metrics import MULTIPROC_ENV, forget_dead_workers, worker_metrics_dir
from api.settings import Settings
from tests.live_server import free_port, stop
from index.artifacts import current_version
from recommender.cli import main
from tests.corpora import DEMO_ARTICLES

REPO = Path(__file__).resolve().parents[1]
ARTICLE = "nk-ukraine-en-1"
ROUTE = "/v1/articles/{article_id}/related"
REQUESTS = 40


def build(data_dir: Path, *flags: str) -> str:
    result = CliRunner().invoke(main, ["build", "--source", str(DEMO_ARTICLES), "--data-dir", str(data_dir), *flags])
    assert result.exit_code == 0, result.output
    return current_version(data_dir).name


def scrape(base: str) -> list[Sample]:
    text = httpx.get(f"{base}/metrics").text
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float | None:
    found = [s.value for s in samples if s.name == name and labels.items() <= s.labels.items()]
    assert len(found) <= 1, found
    return found[0] if found else None


def versions(samples: list[Sample]) -> set[str]:
    return {s.labels["version"] for s in samples if s.name == "related_index_info"}


def wait_for_metrics(base: str, predicate, log: Path, timeout: float = 60.0) -> list[Sample]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            samples = scrape(base)
        except httpx.TransportError:  # not listening yet
            samples = []
        if samples and predicate(samples):
            return samples
        time.sleep(0.1)
    raise AssertionError(f"metrics condition not met in time; server log:\n{log.read_text()[-3000:]}")


def requests_by_worker(metrics_dir: Path) -> list[float]:
    """The 200s of the article route each worker counted, from its own file."""
    counts = []
    for path in sorted(metrics_dir.glob("counter_*.db")):
        merged = multiprocess.MultiProcessCollector.merge([str(path)], accumulate=False)
        samples = [sample for metric in merged for sample in metric.samples]
        counts.append(value(samples, "related_http_requests_total", route=ROUTE, method="GET", status="200") or 0.0)
    return counts


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[tuple[str, Path, Path]]:
    """`related serve --workers 2` over the demo index: (base URL, data dir, its TMPDIR)."""
    root = tmp_path_factory.mktemp("workers")
    data_dir, tmp, log = root / "data", root / "tmp", root / "serve.log"
    tmp.mkdir()
    build(data_dir)
    env = {k: v for k, v in os.environ.items() if k != MULTIPROC_ENV}
    env |= {
        "TMPDIR": str(tmp), "RELATED_RELOAD_CHECK_SECONDS": "0.2",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
    }
    port = free_port()
    command = [sys.executable, "-c", "from recommender.cli import main; main()", "serve", "--data-dir", str(data_dir),
               "--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        # related_index_ready is the minimum over workers: 1 once both have loaded the index
        wait_for_metrics(base, lambda samples: value(samples, "related_index_ready") == 1, log)
        yield base, data_dir, tmp
    finally:
        stop(process)


def test_scrapes_show_the_requests_of_both_workers(server):
    base, data_dir, tmp = server

    def get(_: int) -> int:
        return httpx.get(f"{base}/v1/articles/{ARTICLE}/related").status_code  # a new connection each

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(get, range(REQUESTS))) == [200] * REQUESTS
    (metrics_dir,) = tmp.glob("related-metrics-*")
    by_worker = requests_by_worker(metrics_dir)
    assert len(by_worker) == 2 and all(by_worker) and sum(by_worker) == REQUESTS, by_worker

    version = current_version(data_dir).name
    for _ in range(8):  # whichever worker answers
        samples = scrape(base)
        assert value(samples, "related_http_requests_total", route=ROUTE, method="GET", status="200") == REQUESTS
        assert value(samples, "related_http_request_duration_seconds_count", route=ROUTE, status="200") == REQUESTS
        assert value(samples, "related_index_ready") == 1
        assert value(samples, "related_index_articles") == 191
        assert versions(samples) == {version}


def test_a_new_version_replaces_the_old_one_in_index_info(server):
    base, data_dir, _ = server
    old = current_version(data_dir).name
    new = build(data_dir, "--force")
    assert new != old
    wait_for_metrics(base, lambda samples: versions(samples) == {new}, data_dir.parent / "serve.log", timeout=20)
    for _ in range(4):
        assert versions(scrape(base)) == {new}


def test_apps_in_one_process_keep_their_own_metrics_whatever_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))  # set after import, as a leaking test would
    settings = Settings(data_dir=tmp_path)
    with TestClient(create_app(settings)) as one, TestClient(create_app(settings)) as two:
        one.get("/healthz")
        healthz = 'related_http_requests_total{method="GET",route="/healthz",status="200"}'
        assert f"{healthz} 1.0" in one.get("/metrics").text
        assert healthz not in two.get("/metrics").text
    assert list(tmp_path.iterdir()) == []


def test_serve_gives_several_workers_a_fresh_private_dir_or_the_operators(tmp_path, monkeypatch):
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    with worker_metrics_dir(1):
        assert MULTIPROC_ENV not in os.environ
    with worker_metrics_dir(2):
        private = Path(os.environ[MULTIPROC_ENV])
        assert private.is_dir() and list(private.iterdir()) == []
    assert MULTIPROC_ENV not in os.environ and not private.exists()

    operators = tmp_path / "metrics"
    monkeypatch.setenv(MULTIPROC_ENV, str(operators))
    with worker_metrics_dir(2):
        assert os.environ[MULTIPROC_ENV] == str(operators) and operators.is_dir()
    assert operators.is_dir()


def test_live_gauges_of_killed_workers_are_forgotten(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", ""])
    dead.wait()
    files = [f"gauge_livemax_{dead.pid}.db", f"counter_{dead.pid}.db", f"gauge_livemin_{os.getpid()}.db"]
    for name in files:
        (tmp_path / name).touch()
    forget_dead_workers(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files[1:])  # counts of the dead stay in the totals
