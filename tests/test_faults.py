"""Fault injection: a full disk mid-build, a corrupt current version at start-up, an unreadable source or a
read-only data dir, a worker killed with SIGKILL under load. Each fault is made real (a small tmpfs or loop
file system, flipped bytes, dropped file permissions, a signal), never mocked."""
from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest

warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
from fastapi.testclient import TestClient  # noqa: E402

from api.app import create_app  # noqa: E402
from api.settings import Settings  # noqa: E402
from index.artifacts import current_version, list_versions  # noqa: E402
from recommender.config import PipelineConfig  # noqa: E402
from recommender.pipeline.build import build  # noqa: E402
from tests.news_corpus import CONFIG, corpus, write_config, write_jsonl  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from serving import all_ready, free_port, started, workers  # noqa: E402  (starting and watching `related serve`)

RELATED = str(Path(sys.executable).with_name("related"))
REPO = Path(__file__).resolve().parents[1]
TOKEN = "faults-token"


def cli(*args: str, preexec_fn=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([RELATED, *args], capture_output=True, text=True, env=env, timeout=180, preexec_fn=preexec_fn)


def failed_line(result: subprocess.CompletedProcess, command: str) -> str:
    """The run failed with exit 1 and no traceback; returns its `status=failed` line."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert 1 <= len(lines) <= 2, lines  # the status line (+ the same error for people, until the CLI merges them)
    status = [line for line in lines if line.startswith(f"related {command}: status=failed")]
    assert len(status) == 1, lines
    return status[0]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """A small built data dir (read-only for the tests: they copy it) and its source."""
    root = tmp_path_factory.mktemp("faults")
    source = write_jsonl(root / "corpus.jsonl", corpus())
    data = root / "data"
    build(source, data, PipelineConfig.from_dict(CONFIG))
    return data, source


def data_copy(built: tuple[Path, Path], into: Path, names: list[str] | None = None) -> tuple[Path, list[Path]]:
    """A data dir holding the built version under each of `names` (default: its own), `current` -> the last."""
    version = current_version(built[0])
    data = into / "data"
    copies = [data / "versions" / name for name in names or [version.name]]
    for copy in copies:
        shutil.copytree(version, copy)
    point_current(data, copies[-1])
    return data, copies


def corrupt(version: Path) -> None:
    """Flip bytes in the middle of the neighbour lists: same size, wrong checksum."""
    path = version / "neighbours.npy"
    raw = bytearray(path.read_bytes())
    for i in range(len(raw) // 2, len(raw) // 2 + 8):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


def point_current(data: Path, version: Path) -> None:
    """Switch `current` as a build does (no verification: the tests publish corrupt versions too)."""
    os.symlink(f"versions/{version.name}", data / "next")
    os.replace(data / "next", data / "current")


def wait_for(predicate, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def is_ready(client: TestClient) -> bool:
    return client.get("/readyz").status_code == 200


def gave_up(client: TestClient) -> bool:
    return "no older version verifies" in (client.get("/readyz").json().get("reason") or "")


@contextlib.contextmanager
def serving(data: Path, until=is_ready) -> Iterator[TestClient]:
    """The app over `data` (its lifespan loading the index), once `until(client)` holds."""
    settings = Settings(data_dir=data, admin_token=TOKEN, reload_check_seconds=3600)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        wait_for(lambda: until(client))
        yield client


# -- a corrupt current version at start-up -----------------------------------------------------------------
OLDEST, OLDER, NEWEST = "20200101T000000000000Z-0000000a", "20200102T000000000000Z-0000000b", "20200103T000000000000Z-0000000c"


def test_corrupt_current_at_startup_serves_newest_older_version_that_verifies(built, tmp_path: Path) -> None:
    data, (oldest, older, newest) = data_copy(built, tmp_path, [OLDEST, OLDER, NEWEST])
    corrupt(newest)
    corrupt(older)
    with serving(data) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["version"] == OLDEST
        assert f"version {NEWEST} refused" in ready.json()["reason"] and "checksum mismatch" in ready.json()["reason"]
        info = client.get("/v1/index").json()
        assert info["version"] == OLDEST and info["failed_version"] == NEWEST
        assert info["fallback"].startswith(f"serving {OLDEST}, the newest older version that verifies")
        assert "neighbours.npy" in info["last_reload_error"]
        related = client.get("/v1/articles/flood-0/related")
        assert related.status_code == 200 and related.json()["index_version"] == OLDEST
        # A new good version published: served, and the fallback note is gone.
        fixed = shutil.copytree(oldest, data / "versions" / "20200104T000000000000Z-0000000d")
        point_current(data, fixed)
        reload = client.post("/v1/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
        assert reload.status_code == 200 and reload.json() == {"reloaded": True, "version": fixed.name}
        assert "reason" not in client.get("/readyz").json() and client.get("/v1/index").json()["fallback"] is None


def test_no_version_verifies_answers_503_with_the_reason(built, tmp_path: Path) -> None:
    data, copies = data_copy(built, tmp_path, [OLDER, NEWEST])
    for copy in copies:
        corrupt(copy)
    with serving(data, until=gave_up) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["ready"] is False
        reason = ready.json()["reason"]
        assert f"version {NEWEST} refused" in reason and f"no older version verifies ({OLDER}: " in reason
        related = client.get("/v1/articles/flood-0/related")
        assert related.status_code == 503
        assert related.json()["error"]["code"] == "no_index" and NEWEST in related.json()["error"]["message"]
        assert client.get("/v1/index").json()["last_reload_error"] in reason


def test_a_corrupt_new_version_never_replaces_a_served_one(built, tmp_path: Path) -> None:
    """The fallback is for start-up only: once serving, a refused version leaves the served one in place."""
    data, (older, newest) = data_copy(built, tmp_path, [OLDER, NEWEST])
    with serving(data) as client:
        assert client.get("/readyz").json()["version"] == NEWEST
        newer = shutil.copytree(newest, data / "versions" / "20200104T000000000000Z-0000000d")
        corrupt(newer)
        point_current(data, newer)
        assert client.post("/v1/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 409
        ready = client.get("/readyz").json()
        assert ready["version"] == NEWEST and "reason" not in ready
        assert client.get("/v1/index").json()["failed_version"] == newer.name


# -- a full disk mid-build ---------------------------------------------------------------------------------
@contextlib.contextmanager
def small_file_system(where: Path, size_mb: int) -> Iterator[Path]:
    """A tmpfs of `size_mb` at `where`, or an ext4 loop file where tmpfs is not allowed; skips when neither mounts."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system (tmpfs or loop file) needs root")
    where.mkdir()
    image = where.with_suffix(".img")
    attempts = {
        "tmpfs": [["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(where)]],
        "loop file": [["truncate", "-s", f"{size_mb}M", str(image)], ["mkfs.ext4", "-q", "-F", str(image)],
                      ["mount", "-o", "loop", str(image), str(where)]],
    }
    failures = []
    for kind, steps in attempts.items():
        for step in steps:
            try:
                done = subprocess.run(step, capture_output=True, text=True, timeout=60)
            except OSError as err:
                done = subprocess.CompletedProcess(step, 1, "", str(err))
            if done.returncode:
                failures.append(f"{kind}: {(done.stderr or done.stdout).strip() or done.returncode}")
                break
        else:
            break
    else:
        pytest.skip(f"cannot mount a small file system here ({'; '.join(failures)})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)
        image.unlink(missing_ok=True)


def test_disk_full_mid_build_fails_in_one_line_and_serving_goes_on(built, tmp_path: Path) -> None:
    with small_file_system(tmp_path / "mnt", 16) as mnt:
        source = built[1]
        data = mnt / "data"
        first = build(source, data, PipelineConfig.from_dict(CONFIG)).version
        size = sum(f.stat().st_size for f in first.rglob("*") if f.is_file())
        with serving(data) as client:
            assert client.get("/readyz").json()["version"] == first.name
            # Leave room for half a version: the forced rebuild runs out of space while writing it.
            filler = mnt / "filler"
            with open(filler, "wb") as fh:
                os.posix_fallocate(fh.fileno(), 0, shutil.disk_usage(mnt).free - size // 2)
            result = cli("build", "--source", str(source), "--data-dir", str(data), "--force",
                         "--config", str(write_config(tmp_path / "c.toml")))
            line = failed_line(result, "build")
            assert f"cannot write a new version in {data}" in line and "the partial version was removed" in line
            assert current_version(data) == first.resolve()
            assert sorted(p.name for p in (data / "versions").iterdir()) == [first.name]  # no staging left over
            related = client.get("/v1/articles/flood-0/related")
            assert related.status_code == 200 and related.json()["index_version"] == first.name
            filler.unlink()


def test_full_or_read_only_disk_on_the_publish_hook_answers_507(built, tmp_path: Path) -> None:
    """A posted update that cannot be stored: 507 with one line saying why, nothing left behind, serving goes on."""
    with small_file_system(tmp_path / "mnt", 16) as mnt:
        data = mnt / "data"
        first = build(built[1], data, PipelineConfig.from_dict(CONFIG)).version
        article = {"id": "flood-new", "title": "Harbour reopens after the flood", "body": "The harbour reopened.",
                   "lang": "en", "published": "2026-01-02T08:00:00Z"}
        post = {"json": article, "headers": {"Authorization": f"Bearer {TOKEN}"}}
        with serving(data) as client:
            filler = mnt / "filler"
            with open(filler, "wb") as fh:
                os.posix_fallocate(fh.fileno(), 0, shutil.disk_usage(mnt).free)
            full = client.post("/v1/admin/articles", **post)
            assert full.status_code == 507, full.text
            error = full.json()["error"]
            assert error["code"] == "insufficient_storage"
            assert f"cannot write a new version in {data}" in error["message"] and "current` is unchanged" in error["message"]
            filler.unlink()
            subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True, capture_output=True)
            read_only = client.post("/v1/admin/articles", **post)
            assert read_only.status_code == 507, read_only.text
            assert read_only.json()["error"]["code"] == "storage_not_writable"
            assert "Read-only file system" in read_only.json()["error"]["message"]
            assert current_version(data) == first.resolve()
            assert sorted(p.name for p in (data / "versions").iterdir()) == [first.name]  # no staging left over
            related = client.get("/v1/articles/flood-0/related")
            assert related.status_code == 200 and related.json()["index_version"] == first.name


# -- an unreadable source, a read-only data dir ------------------------------------------------------------
def without_permission_override() -> None:
    """In the child, before exec: root loses the capabilities that ignore file permissions."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


@pytest.fixture()
def as_user(tmp_path: Path):
    """How to run the CLI so that file permissions apply (root normally ignores them)."""
    if os.geteuid() != 0:
        return None
    probe = tmp_path / "probe"
    probe.write_text("x")
    probe.chmod(0)
    try:
        done = subprocess.run([sys.executable, "-c", f"open({str(probe)!r})"], preexec_fn=without_permission_override,
                              capture_output=True)
    except subprocess.SubprocessError as err:
        pytest.skip(f"running as root and cannot drop CAP_DAC_OVERRIDE to make permissions apply: {err}")
    if done.returncode == 0:
        pytest.skip("running as root and permissions do not apply even without CAP_DAC_OVERRIDE")
    return without_permission_override


def read_only(path: Path) -> None:
    for item in [path, *path.rglob("*")]:
        if not item.is_symlink():
            item.chmod(item.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def test_unreadable_source_and_read_only_data_dir_fail_in_one_line(built, tmp_path: Path, as_user) -> None:
    data, _ = data_copy(built, tmp_path)
    before = current_version(data)
    unreadable = tmp_path / "secret.jsonl"
    shutil.copyfile(built[1], unreadable)
    unreadable.chmod(0)
    config = str(write_config(tmp_path / "c.toml"))
    for command in ("build", "update"):
        line = failed_line(cli(command, "--source", str(unreadable), "--data-dir", str(data), "--config", config,
                               preexec_fn=as_user), command)
        assert f"cannot read source file {unreadable}: Permission denied" in line, line
    read_only(data)
    try:
        for command, *extra in (("build", "--force"), ("update",)):
            line = failed_line(cli(command, "--source", str(built[1]), "--data-dir", str(data), "--config", config,
                                   *extra, preexec_fn=as_user), command)
            assert f"cannot take the build lock in {data}: Permission denied" in line, line
    finally:
        for item in [data, *data.rglob("*")]:
            if not item.is_symlink():
                item.chmod(item.stat().st_mode | stat.S_IWUSR)
    assert current_version(data) == before and list_versions(data) == [before]


# -- a worker killed with SIGKILL under load ---------------------------------------------------------------
async def load_and_kill(base: str, server: psutil.Process, ids: list[str], connections: int) -> dict:
    """Closed-loop GETs on `connections` connections; one worker SIGKILLed after 2 s; 3 s of load
    after its replacement is ready. Records every failure (status or transport error) and when it happened."""
    failures: list[tuple[float, str]] = []
    done = 0
    stop = asyncio.Event()

    async def connection(seed: int) -> None:
        nonlocal done
        rng = random.Random(seed)
        # Half the connections are new for every request, so the replacement worker is offered some at once.
        headers = {"Connection": "close"} if seed % 2 else {}
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
            while not stop.is_set():
                try:
                    response = await client.get(f"/v1/articles/{rng.choice(ids)}/related", headers=headers)
                    if response.status_code != 200:
                        failures.append((time.monotonic(), f"{response.status_code} {response.text[:100]}"))
                except httpx.TransportError as err:
                    failures.append((time.monotonic(), type(err).__name__))
                done += 1

    async def kill() -> dict:
        await asyncio.sleep(2)
        victim = workers(server)[0]
        before = done
        killed_at = time.monotonic()
        os.kill(victim.pid, signal.SIGKILL)
        await asyncio.to_thread(victim.wait, 30)  # reaped by uvicorn's supervisor, which then starts a replacement
        while not await asyncio.to_thread(all_ready, base, server, 2):
            assert time.monotonic() - killed_at < 120, "the killed worker was not replaced in 2 minutes"
            await asyncio.sleep(0.2)
        restarted = time.monotonic() - killed_at
        replacement = [p.pid for p in workers(server) if p.pid != victim.pid]
        await asyncio.sleep(3)
        stop.set()
        return {"victim": victim.pid, "workers_after": replacement, "killed_at": killed_at,
                "restart_seconds": restarted, "requests_before_kill": before}

    tasks = [asyncio.create_task(connection(seed)) for seed in range(connections)]
    outcome = await kill()
    await asyncio.gather(*tasks)
    return outcome | {"failures": failures, "requests": done}


def test_worker_killed_under_load_is_restarted_and_only_in_flight_requests_fail(built, tmp_path: Path) -> None:
    data, _ = data_copy(built, tmp_path)
    port, connections = free_port(), 16
    env = dict(os.environ, PYTHONPATH=str(REPO), RELATED_ADMIN_TOKEN="")
    cmd = [RELATED, "serve", "--data-dir", str(data), "--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
    with started(cmd, port, env, timeout=120) as (base, process):
        server = psutil.Process(process.pid)
        wait_for(lambda: all_ready(base, server, 2), timeout=120)
        ids = [f"{story}-{i}" for story in ("flood", "budget", "cup") for i in range(6)]
        # A loop of its own, on a thread of its own: earlier tests (Dask's) may leave one set on this thread.
        with ThreadPoolExecutor(1) as thread:
            run = thread.submit(asyncio.run, load_and_kill(base, server, ids, connections)).result()
    failed = run["failures"]
    print(f"\nSIGKILL of worker {run['victim']} under {connections} connections: {len(failed)} of {run['requests']} "
          f"requests failed ({sorted({kind for _, kind in failed})}); replaced by {run['workers_after']} and "
          f"ready in {run['restart_seconds']:.1f} s")
    assert run["victim"] not in run["workers_after"] and len(run["workers_after"]) == 2
    # Only requests in flight on the killed worker fail: at most one per connection, transport errors only
    # (no 503 from a replacement still loading), all at the moment of the kill.
    assert len(failed) <= connections
    assert all(kind in ("RemoteProtocolError", "ReadError", "WriteError", "ConnectError") for _, kind in failed), failed
    assert all(at - run["killed_at"] < 5 for at, _ in failed), failed
    assert run["requests"] > run["requests_before_kill"] + 10 * connections  # the load went on
