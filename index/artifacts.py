"""Versioned artifact directories under DATA_DIR.

Layout::

    DATA_DIR/
      build.lock                    flock held by a build/update
      current -> versions/<name>    symlink, swapped atomically
      versions/
        <YYYYmmddTHHMMSSffffffZ>-<hash8>/   complete, immutable version
          manifest.json             sha256 + size of every other file; `segments`
                                    lists the parts of per-row artifacts (index.segments)
          ...
        .staging-<uuid>/            being written; never read

Why it is crash-safe: a version is written in a dot-prefixed staging dir,
fsynced, and only then renamed into place (rename is atomic), so a directory
with a visible name is always complete. `current` is switched with
os.replace of a fresh symlink, so readers always resolve it to either the old
or the new complete version. Deletion renames a version back to a dot name
first, so a half-deleted version is never listed either.

Concurrency: one writer at a time (build_lock); any number of readers, which
never take the lock. prune/rollback/publish do not take the lock themselves
(flock is not re-entrant across open() calls, and the CLI already holds it);
callers that change DATA_DIR should hold it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import IO, Any

import faiss
import numpy as np

from index import faiss_index, segments
from index.errors import ArtifactError, BuildLockedError, CorruptArtifactError, NoIndexError, StorageError

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST",
    "build_lock",
    "VersionWriter",
    "Manifest",
    "read_manifest",
    "verify_version",
    "Version",
    "publish",
    "current_version",
    "open_current",
    "list_versions",
    "prune",
    "rollback",
    "find_version_by_hash",
]

FORMAT_VERSION = 2  # 2: optional `segments` (per-row artifacts as base + appended parts)
_READABLE_FORMATS = (1, 2)
MANIFEST = "manifest.json"
VERSIONS = "versions"
CURRENT = "current"
LOCK = "build.lock"
_STAGING_PREFIX = ".staging-"
_DELETING_PREFIX = ".deleting-"
_CURRENT_TMP_PREFIX = ".current.tmp-"
_RESERVED_KEYS = frozenset({"format_version", "created", "content_hash", "files"})
_SEGMENTS = "segments"
_HASH_RE = re.compile(r"[0-9A-Za-z_-]+")
_CHUNK = 1 << 20


# --------------------------------------------------------------------------- helpers


def _fsync_dir(path: Path) -> None:
    """Persist directory entries (renames, new files) across power loss."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256_and_fsync(path: Path) -> tuple[str, int]:
    """Hash a file and flush it to disk in the same pass."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
        os.fsync(fh.fileno())
    return digest.hexdigest(), size


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _check_name(name: str) -> PurePosixPath:
    """Artifact names are relative POSIX paths inside a version dir."""
    p = PurePosixPath(name)
    if (
        not name
        or p.is_absolute()
        or name != p.as_posix()
        or any(part.startswith(".") for part in p.parts)  # also rules out '..'
    ):
        raise ValueError(f"invalid artifact file name {name!r}: use a relative path like 'idf.npy'")
    return p


def _versions_dir(data_dir: Path) -> Path:
    return Path(data_dir) / VERSIONS


def _utc_stamp(now: datetime) -> str:
    return now.strftime("%Y%m%dT%H%M%S%fZ")


def storage_error(err: OSError, data_dir: Path, doing: str, outcome: str = "") -> StorageError:
    """The file system's refusal as one line, with the room left there."""
    # numpy reports a short write on a full disk without an errno
    reason = err.strerror or f"short write ({err}): disk full?"
    room = ""
    if err.errno in (None, errno.ENOSPC, errno.EDQUOT):
        with contextlib.suppress(OSError):
            room = f" ({shutil.disk_usage(data_dir).free / (1 << 20):.1f} MiB free)"
    return StorageError(f"cannot {doing} in {data_dir}: {reason}{room}{outcome}", err.errno)


# --------------------------------------------------------------------------- lock


@contextmanager
def build_lock(data_dir: Path) -> Iterator[None]:
    """Exclusive, non-blocking lock for builds and updates.

    flock is released by the kernel when the holder dies, so a crashed build
    never leaves a stale lock behind. Our pid is written into the file only
    so the refusal message can say who holds it.
    """
    data_dir = Path(data_dir)
    lock_path = data_dir / LOCK
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:  # read-only, permission denied, not a directory
        raise storage_error(err, data_dir, "take the build lock") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            raise BuildLockedError(
                f"another build or update holds the lock on {lock_path} (pid {holder})"
            ) from None
        os.ftruncate(fd, 0)
        with contextlib.suppress(OSError):  # the pid only names the holder in a refusal; a full disk is
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)  # reported by the version's own writes
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # no stale pid for the next reader of the file
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- manifest


@dataclass
class Manifest:
    """Parsed manifest.json of one version directory."""

    path: Path  # the version directory
    name: str  # its directory name
    data: dict[str, Any]  # the whole manifest

    @property
    def content_hash(self) -> str:
        return str(self.data["content_hash"])

    @property
    def created(self) -> str:
        """ISO-8601 UTC timestamp string, as stored."""
        return str(self.data["created"])

    @property
    def format_version(self) -> int:
        return int(self.data["format_version"])

    @property
    def files(self) -> dict[str, dict[str, Any]]:
        return dict(self.data["files"])

    def parts(self, name: str) -> list[str]:
        """Files holding artifact `name`, in row order: its segments, or just itself."""
        return list(self.data.get(_SEGMENTS, {}).get(name, [name]))


def read_manifest(version_dir: Path) -> Manifest:
    """Parse and structurally check manifest.json, without hashing files."""
    version_dir = Path(version_dir)
    name = version_dir.name
    if not version_dir.is_dir():
        raise CorruptArtifactError(f"version {name} does not exist at {version_dir}")
    mpath = version_dir / MANIFEST
    try:
        raw = mpath.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CorruptArtifactError(f"no {MANIFEST}: version {name} is incomplete") from None
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptArtifactError(f"invalid {MANIFEST} in version {name}: {exc}") from None
    if not isinstance(data, dict):
        raise CorruptArtifactError(f"invalid {MANIFEST} in version {name}: not a JSON object")
    missing = sorted(_RESERVED_KEYS - data.keys())
    if missing:
        raise CorruptArtifactError(f"invalid {MANIFEST} in version {name}: missing keys {missing}")
    if data["format_version"] not in _READABLE_FORMATS:
        raise CorruptArtifactError(
            f"version {name} has format_version {data['format_version']!r}; "
            f"this code reads {', '.join(map(str, _READABLE_FORMATS))}: rebuild it"
        )
    files = data["files"]
    if not isinstance(files, dict) or not all(
        isinstance(v, dict) and isinstance(v.get("sha256"), str) and isinstance(v.get("bytes"), int)
        for v in files.values()
    ):
        raise CorruptArtifactError(f"invalid {MANIFEST} in version {name}: bad 'files' table")
    for fname in files:
        try:
            _check_name(fname)
        except ValueError:
            raise CorruptArtifactError(
                f"invalid {MANIFEST} in version {name}: bad file name {fname!r}"
            ) from None
    parts = data.get(_SEGMENTS, {})
    if not isinstance(parts, dict) or not all(
        isinstance(v, list) and v and all(isinstance(f, str) and f in files for f in v) for v in parts.values()
    ):
        raise CorruptArtifactError(
            f"invalid {MANIFEST} in version {name}: 'segments' must list files of the 'files' table"
        )
    return Manifest(path=version_dir, name=name, data=data)


# Files this process already hashed, by identity: (device, inode, size, mtime_ns) -> sha256.
# Versions share unchanged files through hard links, so a reload after an update
# re-hashes only what the update wrote.
_VERIFIED: dict[tuple[int, int, int, int], str] = {}


def verify_version(version_dir: Path, *, checksums: bool = True) -> Manifest:
    """Check the manifest and the size (and, unless told not to, sha256) of every file it lists.

    Files present but not listed are ignored. Cost is one sequential read of the
    files this process has not verified before; `checksums=False` is for a version
    this process has just committed (commit hashed what it wrote).
    """
    manifest = read_manifest(version_dir)
    name = manifest.name
    for fname, entry in manifest.files.items():
        fpath = manifest.path / fname
        try:
            stat = fpath.stat()
        except FileNotFoundError:
            raise CorruptArtifactError(f"missing file {fname} in version {name}") from None
        if stat.st_size != entry["bytes"]:
            raise CorruptArtifactError(
                f"size mismatch for {fname} in version {name}: "
                f"manifest says {entry['bytes']} bytes, found {stat.st_size}"
            )
        if not checksums:
            continue
        identity = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if _VERIFIED.get(identity) == entry["sha256"]:
            continue
        if _sha256(fpath) != entry["sha256"]:
            raise CorruptArtifactError(f"checksum mismatch for {fname} in version {name}")
        _VERIFIED[identity] = entry["sha256"]
    return manifest


# --------------------------------------------------------------------------- writing


class VersionWriter:
    """Writes one version into a staging dir; `commit` makes it visible.

    Until commit nothing is visible to readers or list_versions. Used as a
    context manager, it removes the staging dir if the block raises or ends
    without committing, and turns a file system error (disk full, read-only)
    into a StorageError that says so.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        versions = _versions_dir(self.data_dir)
        self.staging = versions / f"{_STAGING_PREFIX}{uuid.uuid4().hex}"
        try:
            versions.mkdir(parents=True, exist_ok=True)
            self.staging.mkdir()
        except OSError as err:
            raise storage_error(err, self.data_dir, "start a new version") from None
        self._final: Path | None = None
        self._aborted = False
        self._known: dict[str, dict[str, Any]] = {}  # linked files whose checksum is already known

    def __enter__(self) -> VersionWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._final is None:
            self.abort()
            if isinstance(exc, OSError):
                raise storage_error(
                    exc, self.data_dir, "write a new version", "; the partial version was removed, `current` is unchanged"
                ) from exc

    def _check_open(self) -> None:
        if self._final is not None:
            raise ArtifactError(f"version already committed as {self._final.name}")
        if self._aborted:
            raise ArtifactError("version writer was aborted")

    def path(self, name: str) -> Path:
        """Where to write artifact `name` yourself (parent dirs are created)."""
        self._check_open()
        rel = _check_name(name)
        if rel.as_posix() == MANIFEST:
            raise ValueError(f"{MANIFEST} is written by commit()")
        target = self.staging / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    @contextmanager
    def _writing(self, name: str, mode: str) -> Iterator[IO[Any]]:
        """Write to a temp name and rename on success, so a save that fails
        half-way (unserialisable row, object array) leaves no partial file
        that commit would otherwise checksum and ship."""
        final = self.path(name)
        tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            with open(tmp, mode, encoding=None if "b" in mode else "utf-8") as fh:
                yield fh
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)

    def save_array(self, name: str, array: np.ndarray, *, page_offset: int | None = None) -> None:
        """np.save without pickle (object arrays are refused). `page_offset`: where in a page the
        data must start, for a part appended to others (index.segments.append_offset)."""
        # Through a file object: np.save would append '.npy' to a bare path.
        with self._writing(name, "wb") as fh:
            segments.save(fh, array, page_offset)

    def save_json(self, name: str, obj: Any) -> None:
        with self._writing(name, "w") as fh:
            json.dump(obj, fh, ensure_ascii=False, separators=(",", ":"))

    def save_jsonl(self, name: str, rows: Iterable[dict[str, Any]]) -> int:
        """One JSON object per line; returns the number of rows written."""
        count = 0
        with self._writing(name, "w") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")))
                fh.write("\n")
                count += 1
        return count

    def link(self, name: str, source: Path, entry: dict[str, Any]) -> None:
        """Add an unchanged file of another version by hard link (copy where links fail),
        reusing its manifest entry instead of hashing it again."""
        target = self.path(name)
        try:
            os.link(source, target)
            self._known[name] = {"sha256": entry["sha256"], "bytes": entry["bytes"]}
        except OSError:
            shutil.copyfile(source, target)

    def save_index(self, name: str, index: faiss.Index) -> None:
        faiss_index.save_index(index, self.path(name))  # itself temp + rename

    def staged_bytes(self) -> int:
        """Bytes written so far (what `commit` will hash)."""
        return sum(f.stat().st_size for f in self.staging.rglob("*") if f.is_file())

    def commit(
        self, meta: dict[str, Any], content_hash: str, parts: dict[str, list[str]] | None = None,
        progress: Callable[[int], object] | None = None,
    ) -> Path:
        """Checksum and fsync everything, write the manifest, rename into place.

        `parts`: artifacts stored as segments (name -> its files in row order; index.segments).
        `progress`: advanced by the bytes of each file once it is hashed (`staged_bytes` in all).
        Returns the final version dir. Does not publish it.
        """
        self._check_open()
        if not _HASH_RE.fullmatch(content_hash or ""):
            raise ValueError(f"content_hash must be non-empty [0-9A-Za-z_-], got {content_hash!r}")
        clash = (_RESERVED_KEYS | {_SEGMENTS}) & meta.keys()
        if clash:
            raise ValueError(f"meta may not set reserved manifest keys {sorted(clash)}")

        files: dict[str, dict[str, Any]] = {}
        dirs = {self.staging}
        for fpath in sorted(self.staging.rglob("*")):
            if fpath.is_dir():
                dirs.add(fpath)
                continue
            rel = fpath.relative_to(self.staging).as_posix()
            if rel == MANIFEST or any(part.startswith(".") for part in PurePosixPath(rel).parts):
                fpath.unlink()  # temp file left by an interrupted save; never an artifact
                continue
            if rel in self._known and fpath.stat().st_size == self._known[rel]["bytes"]:
                files[rel] = self._known[rel]
                continue
            sha, size = _sha256_and_fsync(fpath)
            files[rel] = {"sha256": sha, "bytes": size}
            if progress is not None:
                progress(size)

        now = datetime.now(UTC)
        manifest = {
            "format_version": FORMAT_VERSION,
            "created": now.isoformat(),
            "content_hash": content_hash,
            "files": files,
            **({_SEGMENTS: parts} if parts else {}),
            **meta,
        }
        missing = sorted({f for names in (parts or {}).values() for f in names} - files.keys())
        if missing:
            raise ValueError(f"segments name files that were not written: {missing}")
        # Serialise first: unserialisable meta fails before anything is written.
        text = json.dumps(manifest, ensure_ascii=False, indent=2) + "\n"
        with open(self.staging / MANIFEST, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
            _fsync_dir(d)

        versions = self.staging.parent
        final = versions / f"{_utc_stamp(now)}-{content_hash[:8]}"
        # Same microsecond and hash is near impossible, but never clobber:
        # os.rename would silently replace an existing *empty* directory.
        while final.exists():
            final = versions / f"{_utc_stamp(datetime.now(UTC))}-{content_hash[:8]}"
        os.rename(self.staging, final)
        _fsync_dir(versions)
        self._final = final
        return final

    def abort(self) -> None:
        """Discard the staging dir (idempotent; no-op after commit)."""
        if self._final is None and not self._aborted:
            self._aborted = True
            shutil.rmtree(self.staging, ignore_errors=True)


# --------------------------------------------------------------------------- reading


class Version:
    """An opened (by default verified) version directory."""

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self.path = manifest.path

    @classmethod
    def open(cls, version_dir: Path, *, verify: bool = True) -> Version:
        """Open a version; verify=True checks every checksum first."""
        manifest = verify_version(version_dir) if verify else read_manifest(version_dir)
        return cls(manifest)

    @property
    def name(self) -> str:
        return self.manifest.name

    def has(self, name: str) -> bool:
        """Whether the manifest lists `name`, as a file or as segments (for optional artifacts)."""
        return name in self.manifest.data["files"] or name in self.manifest.data.get(_SEGMENTS, {})

    def paths(self, name: str) -> list[Path]:
        """The files holding artifact `name`, in row order (one unless it is stored as segments)."""
        return [self.file(part) for part in self.manifest.parts(name)]

    def file(self, name: str) -> Path:
        """Path of a listed artifact; refuses names the manifest does not list."""
        _check_name(name)
        if not self.has(name):
            raise CorruptArtifactError(
                f"version {self.name} has no file {name} "
                f"(manifest lists: {', '.join(sorted(self.manifest.data['files'])) or 'nothing'})"
            )
        path = self.path / name
        if not path.is_file():
            raise CorruptArtifactError(f"missing file {name} in version {self.name}")
        return path

    def array(self, name: str, *, mmap: bool = True) -> np.ndarray:
        """Load a .npy; memory-mapped read-only by default (shared page cache).

        An artifact stored as segments is their concatenation, mapped as well (see index.segments).
        A mapped array comes back as a plain ndarray view of the map: indexing an np.memmap
        wraps every result in a memmap object, which costs more than the indexing itself.
        """
        paths = self.paths(name)
        if len(paths) > 1:
            return segments.concatenate(paths)
        return np.asarray(np.load(paths[0], mmap_mode="r" if mmap else None, allow_pickle=False))

    def part_lengths(self, name: str) -> list[int]:
        """Rows of each part of a per-row .npy artifact (one part unless it is stored as segments)."""
        return segments.part_lengths(self.paths(name))

    def json(self, name: str) -> Any:
        return json.loads(self.file(name).read_text(encoding="utf-8"))

    def jsonl(self, name: str) -> list[dict[str, Any]]:
        """One dict per line, of every segment."""
        lines = [line for path in self.paths(name) for line in path.read_bytes().splitlines() if line.strip()]
        return json.loads(b"[" + b",".join(lines) + b"]")  # one call: twice as fast as one per line

    def index(
        self, name: str, *, mmap: bool = True, ef_search: int | None = None, nprobe: int | None = None
    ) -> faiss.Index:
        """A FAISS index; one stored as segments is searched as one (ids numbered on across parts)."""
        parts = [
            faiss_index.load_index(path, mmap=mmap, ef_search=ef_search, nprobe=nprobe) for path in self.paths(name)
        ]
        return parts[0] if len(parts) == 1 else faiss_index.stack(parts)

    def __repr__(self) -> str:
        return f"Version({self.name!r})"


# --------------------------------------------------------------------------- current


def _point_current(data_dir: Path, version_dir: Path) -> None:
    """Atomically replace DATA_DIR/current with a symlink to version_dir."""
    current = data_dir / CURRENT
    if current.exists() and not current.is_symlink():
        raise ArtifactError(f"{current} exists and is not a symlink; move it away")
    tmp = data_dir / f"{_CURRENT_TMP_PREFIX}{uuid.uuid4().hex}"
    os.symlink(f"{VERSIONS}/{version_dir.name}", tmp)
    try:
        os.replace(tmp, current)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(data_dir)


def _require_own_version(data_dir: Path, version_dir: Path) -> None:
    if os.path.realpath(version_dir.parent) != os.path.realpath(_versions_dir(data_dir)):
        raise ArtifactError(f"{version_dir} is not a version of {data_dir} (expected under {VERSIONS}/)")
    if version_dir.name.startswith("."):
        raise CorruptArtifactError(f"{version_dir.name} is a staging dir, not a committed version")


def publish(data_dir: Path, version_dir: Path, *, checksums: bool = True) -> None:
    """Verify a committed version, then make it `current` atomically.

    `checksums=False` only for a version this process committed a moment ago:
    commit hashed every file after writing it, so hashing again proves nothing new.
    """
    data_dir, version_dir = Path(data_dir), Path(version_dir)
    _require_own_version(data_dir, version_dir)
    verify_version(version_dir, checksums=checksums)
    _point_current(data_dir, version_dir)


def current_version(data_dir: Path) -> Path | None:
    """The resolved (absolute, symlink-free) version dir `current` points at,
    or None if there is no `current` or it dangles. Cheap (readlink + stat),
    so it suits polling for a new version. Compare it with other paths after
    .resolve(), or by .name."""
    link = Path(data_dir) / CURRENT
    try:
        target = os.readlink(link)
    except OSError:  # missing, or not a symlink
        return None
    path = (Path(data_dir) / target).resolve()
    return path if path.is_dir() else None


def open_current(data_dir: Path, *, verify: bool = True) -> Version:
    """Open the current version, or raise NoIndexError if there is none."""
    path = current_version(data_dir)
    if path is None:
        raise NoIndexError(f"no current version in {data_dir}: run a build first")
    return Version.open(path, verify=verify)


def list_versions(data_dir: Path) -> list[Path]:
    """Committed versions (with a manifest), oldest -> newest by name."""
    versions = _versions_dir(data_dir)
    if not versions.is_dir():
        return []
    return sorted(
        (p for p in versions.iterdir() if not p.name.startswith(".") and (p / MANIFEST).is_file()),
        key=lambda p: p.name,
    )


def _remove_dir(path: Path) -> None:
    """Rename to a dot name first so a half-deleted version is never listed."""
    doomed = path.with_name(f"{_DELETING_PREFIX}{path.name}-{uuid.uuid4().hex[:8]}")
    os.rename(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def prune(data_dir: Path, keep: int) -> list[Path]:
    """Delete committed versions older than the newest `keep`, never `current`;
    and all staging/deleting leftovers. Call only while holding build_lock:
    then every staging dir belongs to a dead writer. Returns what was removed.
    """
    if keep < 0:
        raise ValueError(f"keep must be >= 0, got {keep}")
    data_dir = Path(data_dir)
    removed: list[Path] = []
    versions = _versions_dir(data_dir)
    if versions.is_dir():
        for p in sorted(versions.iterdir()):
            if p.name.startswith((_STAGING_PREFIX, _DELETING_PREFIX)) and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    if data_dir.is_dir():
        for p in data_dir.iterdir():
            if p.name.startswith(_CURRENT_TMP_PREFIX) and p.is_symlink():
                p.unlink(missing_ok=True)

    current = current_version(data_dir)
    current_name = current.name if current is not None else None
    complete = list_versions(data_dir)
    old = complete[: max(len(complete) - keep, 0)]
    for p in old:
        if p.name == current_name:
            continue
        _remove_dir(p)
        removed.append(p)
    return removed


def rollback(data_dir: Path, version: str | None = None) -> Path:
    """Point `current` at a named version, or at the newest one older than
    `current`. The target is verified first. Returns the new current dir."""
    data_dir = Path(data_dir)
    if version is not None:
        target = _versions_dir(data_dir) / version
        if version.startswith(".") or "/" in version or target not in list_versions(data_dir):
            names = ", ".join(p.name for p in list_versions(data_dir)) or "none"
            raise ArtifactError(f"no committed version named {version!r} (available: {names})")
    else:
        current = current_version(data_dir)
        if current is None:
            raise NoIndexError(f"no current version in {data_dir}: nothing to roll back from")
        older = [p for p in list_versions(data_dir) if p.name < current.name]
        if not older:
            raise ArtifactError(f"no version older than {current.name} to roll back to")
        target = older[-1]
    publish(data_dir, target)
    return target


def find_version_by_hash(data_dir: Path, content_hash: str) -> Path | None:
    """Newest committed version built from this content (idempotent builds).

    Not verified: call verify_version / Version.open before trusting it.
    """
    for p in reversed(list_versions(data_dir)):
        if not p.name.endswith(f"-{content_hash[:8]}"):
            continue
        try:
            if read_manifest(p).content_hash == content_hash:
                return p
        except CorruptArtifactError:
            continue
    return None
