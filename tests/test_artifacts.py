"""Tests for index.artifacts: versions, manifest, checksums, current, lock."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from index import artifacts
from index.artifacts import (
    FORMAT_VERSION,
    Version,
    VersionWriter,
    build_lock,
    current_version,
    find_version_by_hash,
    list_versions,
    open_current,
    prune,
    publish,
    read_manifest,
    rollback,
    verify_version,
)
from index.errors import (
    ArtifactError,
    BuildLockedError,
    CorruptArtifactError,
    NoIndexError,
)
from index.faiss_index import IndexParams, build_index, search

REPO = Path(__file__).resolve().parents[1]


def tag_hash(tag: str) -> str:
    return hashlib.sha256(tag.encode()).hexdigest()


def make_version(data_dir: Path, tag: str, *, n: int = 20) -> Path:
    """Commit a small but complete version; `tag` makes its content unique."""
    rng = np.random.default_rng(int(tag_hash(tag)[:8], 16))
    vecs = rng.standard_normal((n, 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    with VersionWriter(data_dir) as w:
        w.save_array("neighbours.npy", np.arange(n * 3, dtype=np.int32).reshape(n, 3))
        w.save_array("vectors.npy", vecs)
        w.save_json("vocabulary.json", {"tag": tag, "word": "naïve ünïcode"})
        w.save_jsonl("articles.jsonl", [{"id": f"{tag}-{i}", "title": "Ärger"} for i in range(n)])
        w.save_index("index.faiss", build_index(vecs, IndexParams()))
        return w.commit({"tag": tag, "article_count": n}, content_hash=tag_hash(tag))


def test_commit_publish_open_reads_everything(tmp_path: Path) -> None:
    assert current_version(tmp_path) is None
    with pytest.raises(NoIndexError):
        open_current(tmp_path)

    v = make_version(tmp_path, "a")
    assert v.parent == tmp_path / "versions"
    assert len(v.name.split("-")[0]) == len("20240101T000000000000Z")
    assert current_version(tmp_path) is None  # committed is not published
    publish(tmp_path, v)
    assert current_version(tmp_path) == v
    assert os.readlink(tmp_path / "current") == f"versions/{v.name}"  # relative target

    version = open_current(tmp_path)
    assert version.path == v and version.name == v.name
    m = version.manifest
    assert m.data["format_version"] == FORMAT_VERSION
    assert m.data["tag"] == "a" and m.data["article_count"] == 20
    assert m.content_hash == tag_hash("a")
    assert m.created.endswith("+00:00")
    assert set(m.data["files"]) == {
        "neighbours.npy",
        "vectors.npy",
        "vocabulary.json",
        "articles.jsonl",
        "index.faiss",
    }
    for entry in m.data["files"].values():
        assert len(entry["sha256"]) == 64 and entry["bytes"] > 0

    nb = version.array("neighbours.npy")
    assert isinstance(nb.base, np.memmap) and nb.dtype == np.int32 and nb.shape == (20, 3)
    assert not nb.flags.writeable
    assert not isinstance(version.array("neighbours.npy", mmap=False).base, np.memmap)
    assert version.json("vocabulary.json") == {"tag": "a", "word": "naïve ünïcode"}
    assert "naïve" in version.file("vocabulary.json").read_text(encoding="utf-8")  # not \u-escaped
    rows = version.jsonl("articles.jsonl")
    assert len(rows) == 20 and rows[3] == {"id": "a-3", "title": "Ärger"}
    vecs = version.array("vectors.npy")
    _, ids = search(version.index("index.faiss"), vecs, 1)
    assert np.array_equal(ids[:, 0], np.arange(20))
    assert version.has("index.faiss") and not version.has("nope.npy")
    with pytest.raises(CorruptArtifactError, match=r"no file nope\.npy"):
        version.file("nope.npy")


def test_corrupted_byte_detected_with_file_name(tmp_path: Path) -> None:
    v = make_version(tmp_path, "a")
    publish(tmp_path, v)
    target = v / "neighbours.npy"
    raw = bytearray(target.read_bytes())
    raw[-1] ^= 0xFF  # same size, different content
    target.write_bytes(bytes(raw))
    expected = rf"checksum mismatch for neighbours\.npy in version {v.name}"
    with pytest.raises(CorruptArtifactError, match=expected):
        Version.open(v)
    Version.open(v, verify=False)  # explicit opt-out still reads the manifest


def test_truncated_and_missing_files_detected(tmp_path: Path) -> None:
    v = make_version(tmp_path, "a")
    with open(v / "vectors.npy", "r+b") as fh:
        fh.truncate(10)
    with pytest.raises(CorruptArtifactError, match=r"size mismatch for vectors\.npy"):
        verify_version(v)
    (v / "vectors.npy").unlink()
    with pytest.raises(CorruptArtifactError, match=rf"missing file vectors\.npy in version {v.name}"):
        Version.open(v)
    with pytest.raises(CorruptArtifactError):
        publish(tmp_path, v)  # never publish a broken version
    assert current_version(tmp_path) is None


def test_bad_manifests(tmp_path: Path) -> None:
    v = make_version(tmp_path, "a")
    manifest = v / "manifest.json"
    good = json.loads(manifest.read_text())
    manifest.write_text("{not json")
    with pytest.raises(CorruptArtifactError, match=r"invalid manifest\.json"):
        verify_version(v)
    manifest.write_text(json.dumps({**good, "format_version": 99}))
    with pytest.raises(CorruptArtifactError, match="format_version 99"):
        verify_version(v)
    bad_files = {**good, "files": {"../escape": {"sha256": "0" * 64, "bytes": 1}}}
    manifest.write_text(json.dumps(bad_files))
    with pytest.raises(CorruptArtifactError, match="bad file name"):
        verify_version(v)
    manifest.unlink()
    with pytest.raises(CorruptArtifactError, match=rf"no manifest.json: version {v.name} is incomplete"):
        verify_version(v)
    with pytest.raises(CorruptArtifactError, match="does not exist"):
        verify_version(tmp_path / "versions" / "nope")


def test_uncommitted_staging_is_invisible(tmp_path: Path) -> None:
    v1 = make_version(tmp_path, "a")
    publish(tmp_path, v1)
    # Simulated crash: files written, commit never called, no cleanup.
    w = VersionWriter(tmp_path)
    w.save_array("neighbours.npy", np.zeros((3, 3), dtype=np.int32))
    w.save_json("vocabulary.json", {})
    assert w.staging.is_dir() and w.staging.name.startswith(".staging-")
    assert list_versions(tmp_path) == [v1]
    assert current_version(tmp_path) == v1
    Version.open(current_version(tmp_path))
    # prune (run under the lock) clears the dead writer's leftovers
    with build_lock(tmp_path):
        removed = prune(tmp_path, keep=3)
    assert removed == [w.staging] and not w.staging.exists()
    assert list_versions(tmp_path) == [v1]


def test_writer_context_manager_aborts(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with VersionWriter(tmp_path) as w:
            w.save_json("x.json", {"a": 1})
            raise RuntimeError("build failed")
    assert not w.staging.exists()
    with VersionWriter(tmp_path) as w2:
        w2.save_json("x.json", {"a": 1})  # ends without commit -> discarded too
    assert not w2.staging.exists()
    assert list_versions(tmp_path) == []
    assert sorted(os.listdir(tmp_path / "versions")) == []


def test_writer_rejects_bad_input(tmp_path: Path) -> None:
    with VersionWriter(tmp_path) as w:
        for bad in ("", "/abs.npy", "../x.npy", ".hidden", "a/../b", "manifest.json"):
            with pytest.raises(ValueError):
                w.path(bad)
        with pytest.raises(ValueError):
            w.save_array("objects.npy", np.array([{"a": 1}], dtype=object))  # no pickle
        w.save_json("sub/dir.json", [1])  # nested names are fine
        with pytest.raises(ValueError):
            w.commit({"files": {}}, "abcdef12")  # reserved key
        with pytest.raises(ValueError):
            w.commit({}, "bad/hash")
        with pytest.raises(TypeError):
            w.commit({"bad": object()}, "abcdef12")  # unserialisable meta; writer stays usable
        v = w.commit({}, "abcdef1234")
        with pytest.raises(ArtifactError):
            w.save_json("late.json", {})
    assert v.name.endswith("-abcdef12")
    assert Version.open(v).json("sub/dir.json") == [1]
    assert set(Version.open(v).manifest.data["files"]) == {"sub/dir.json"}  # no partial file


def test_publish_is_atomic_under_concurrent_readers(tmp_path: Path) -> None:
    versions = [make_version(tmp_path, "a"), make_version(tmp_path, "b")]
    publish(tmp_path, versions[0])
    done = threading.Event()
    failures: list[BaseException] = []
    reads = 0

    def reader() -> None:
        nonlocal reads
        while not done.is_set():
            try:
                cur = current_version(tmp_path)
                assert cur in versions, cur
                read_manifest(cur)
                # and through the symlink itself, as a naive reader would
                json.loads((tmp_path / "current" / "manifest.json").read_text())
                reads += 1
            except BaseException as exc:  # report any failure
                failures.append(exc)
                return

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for i in range(200):
            publish(tmp_path, versions[i % 2])
    finally:
        done.set()
        for t in threads:
            t.join()
    assert not failures, failures[0]
    assert reads > 0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".current")] == []


LOCK_HOLDER = textwrap.dedent(
    """
    import sys
    from index.artifacts import build_lock
    with build_lock(sys.argv[1]):
        print("locked", flush=True)
        sys.stdin.readline()
    """
)


def _child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def test_build_lock_excludes_other_process(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=_child_env(),
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(BuildLockedError, match=rf"build\.lock \(pid {child.pid}\)"):
            with build_lock(tmp_path):
                pass
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.wait(timeout=10) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    with build_lock(tmp_path):
        assert (tmp_path / "build.lock").read_text().strip() == str(os.getpid())
        # flock is per open file: a nested attempt in this process is refused too
        with pytest.raises(BuildLockedError):
            with build_lock(tmp_path):
                pass
    with build_lock(tmp_path):  # released again
        pass


def test_prune_keeps_newest_and_current(tmp_path: Path) -> None:
    vs = [make_version(tmp_path, f"v{i}") for i in range(6)]
    assert list_versions(tmp_path) == vs  # names sort oldest -> newest
    publish(tmp_path, vs[1])  # an old version is current (e.g. after rollback)
    removed = prune(tmp_path, keep=2)
    assert removed == [vs[0], vs[2], vs[3]]
    assert list_versions(tmp_path) == [vs[1], vs[4], vs[5]]
    assert current_version(tmp_path) == vs[1]
    assert prune(tmp_path, keep=2) == []
    publish(tmp_path, vs[5])
    assert prune(tmp_path, keep=0) == [vs[1], vs[4]]
    assert list_versions(tmp_path) == [vs[5]]
    with pytest.raises(ValueError):
        prune(tmp_path, keep=-1)


def test_rollback(tmp_path: Path) -> None:
    with pytest.raises(NoIndexError):
        rollback(tmp_path)
    a, b, c = (make_version(tmp_path, t) for t in "abc")
    publish(tmp_path, c)
    assert rollback(tmp_path) == b and current_version(tmp_path) == b
    assert rollback(tmp_path) == a and current_version(tmp_path) == a
    with pytest.raises(ArtifactError, match="no version older"):
        rollback(tmp_path)
    assert rollback(tmp_path, c.name) == c and current_version(tmp_path) == c
    with pytest.raises(ArtifactError, match="no committed version named"):
        rollback(tmp_path, "20000101T000000000000Z-deadbeef")
    # a corrupt target is refused and current is left alone
    (b / "vectors.npy").write_bytes(b"garbage")
    with pytest.raises(CorruptArtifactError, match=r"vectors\.npy"):
        rollback(tmp_path, b.name)
    assert current_version(tmp_path) == c


def test_find_version_by_hash(tmp_path: Path) -> None:
    a = make_version(tmp_path, "a")
    b = make_version(tmp_path, "b")
    assert find_version_by_hash(tmp_path, tag_hash("a")) == a
    assert find_version_by_hash(tmp_path, tag_hash("b")) == b
    assert find_version_by_hash(tmp_path, "0123456789abcdef") is None
    assert find_version_by_hash(tmp_path / "empty", "0123456789abcdef") is None


def test_dangling_current_is_none(tmp_path: Path) -> None:
    v = make_version(tmp_path, "a")
    publish(tmp_path, v)
    artifacts._remove_dir(v)
    assert current_version(tmp_path) is None
    with pytest.raises(NoIndexError):
        open_current(tmp_path)


def test_publish_refuses_foreign_dirs(tmp_path: Path) -> None:
    v = make_version(tmp_path / "one", "a")
    with pytest.raises(ArtifactError, match="not a version of"):
        publish(tmp_path / "two", v)


CRASHY_BUILDER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from pathlib import Path
    from index.artifacts import VersionWriter, build_lock, publish
    data_dir = Path(sys.argv[1])
    rng = np.random.default_rng()
    with build_lock(data_dir):
        print("ready", flush=True)
        i = 0
        while True:
            i += 1
            with VersionWriter(data_dir) as w:
                for j in range(4):
                    w.save_array(f"part{j}.npy", rng.random((20_000, 8), dtype=np.float32))
                w.save_jsonl("rows.jsonl", ({"i": i, "j": j} for j in range(2_000)))
                v = w.commit({"i": i}, content_hash=f"{i:08x}")
            publish(data_dir, v)
    """
)


def test_sigkill_mid_write_never_breaks_current(tmp_path: Path) -> None:
    rnd = random.Random(1234)
    published_any = False
    for _ in range(6):
        child = subprocess.Popen(
            [sys.executable, "-c", CRASHY_BUILDER, str(tmp_path)],
            stdout=subprocess.PIPE,
            text=True,
            env=_child_env(),
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
            threading.Event().wait(rnd.uniform(0.02, 0.4))
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        cur = current_version(tmp_path)
        if cur is not None:
            published_any = True
            Version.open(cur)  # fully verified
        for v in list_versions(tmp_path):
            verify_version(v)  # every listed version is complete
        # the lock died with the process; clean up as the next build would
        with build_lock(tmp_path):
            prune(tmp_path, keep=2)
        assert not [p for p in (tmp_path / "versions").iterdir() if p.name.startswith(".")]
        if cur is not None:
            assert current_version(tmp_path) == cur
    assert published_any


def test_relative_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    v = make_version(Path("data"), "a")
    publish(Path("data"), v)
    cur = current_version(Path("data"))
    assert cur is not None and cur.is_absolute() and cur == v.resolve()
    assert find_version_by_hash(Path("data"), tag_hash("a")) == v
    assert rollback(Path("data"), v.name).resolve() == cur
