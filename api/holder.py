"""The hot-reloading holder of the current RelatedIndex.

One reference (`holder.index`) is swapped when `DATA_DIR/current` points at a new version.
A request grabs the reference once (api.deps) and keeps using that object, so in-flight
requests finish on the version they started with while new ones see the new version.
A version that fails to load (checksum mismatch, missing file, anything) is refused: the
old one keeps serving, the error is logged and shown in /v1/index, and the same version
dir is not retried by the periodic check (only an explicit admin reload retries it).
At start-up there is no old one: the newest older version that verifies is served instead
(`fallback` says so), so a corrupt `current` does not take the service down.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
import gc
from typing import Any

from index.artifacts import Version, current_version, list_versions
from index.heap import release_freed_heap

log = logging.getLogger("related.api.reload")


def load_version(path: Path, prefault_bytes: int = 0) -> Any:
    """Open, verify and warm up one version dir (runs in a worker thread), with up to
    `prefault_bytes` of what GET related reads mapped in (Settings.prefault_bytes)."""
    from recommender.related import RelatedIndex

    index = RelatedIndex(Version.open(path, verify=True))
    done = index.warm_up(prefault_bytes)
    log.debug("version %s: %.1f MiB of its files prefaulted", index.name, done / (1 << 20))
    return index


SETTLE_SECONDS = 1.0  # after a swap, by when the requests still on the old version have finished


def settle_memory() -> None:
    """Once the old version is released: collect its cyclic garbage, then freeze what is loaded.

    What is loaded (the libraries, about 160k objects) lives as long as the process serves: frozen,
    it is out of the cyclic GC, whose full passes over it take over 100 ms, a pause for the requests
    in flight (the index holds no object per article to add). The collection before it scans only
    what is not frozen yet; freezing without it made each swap's cyclic garbage permanent (about
    400 objects per swap, found by the soak benchmark). Then the heap the old version and an update
    run in this worker (api/routes/admin.py) freed goes back to the system: glibc kept it, and it
    grew each worker's private memory by 100-150 MB over 10 posted updates at 1M articles.
    """
    gc.collect()
    release_freed_heap()
    gc.freeze()


@dataclass(frozen=True)
class ReloadOutcome:
    reloaded: bool
    version: str | None
    error: str | None = None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


class IndexHolder:
    """Holds the loaded index and the reload status; all swaps happen on the event loop."""

    def __init__(self, data_dir: Path, loader: Callable[[Path], Any] = load_version) -> None:
        self.data_dir = Path(data_dir)
        self.index: Any | None = None  # RelatedIndex; Any keeps the import lazy
        self.loaded_target: Path | None = None
        self.failed_target: Path | None = None
        self.last_reload_at: str | None = None
        self.last_reload_error: str | None = None
        self.last_check_at: str | None = None
        self.fallback: str | None = None  # why an older version than `current` is served
        self.reload_failures = 0
        self._loader = loader
        self._lock: asyncio.Lock | None = None
        self._listeners: list[Callable[[Any], None]] = []
        self._failure_listeners: list[Callable[[str], None]] = []

    # -- observers -------------------------------------------------------------------------
    def on_swap(self, listener: Callable[[Any], None]) -> None:
        """Call `listener(new_index)` after every successful swap (metrics, caches)."""
        self._listeners.append(listener)

    def on_failure(self, listener: Callable[[str], None]) -> None:
        """Call `listener(message)` when a version is refused."""
        self._failure_listeners.append(listener)

    def status(self) -> dict[str, Any]:
        return {
            "last_reload_at": self.last_reload_at,
            "last_reload_error": self.last_reload_error,
            "failed_version": self.failed_target.name if self.failed_target else None,
            "last_check_at": self.last_check_at,
            "fallback": self.fallback,
        }

    def unavailable(self) -> tuple[str, str]:
        """(code, reason) while no version is served: `loading` once `current` names a version
        that has not been loaded or refused yet (a first load verifies every checksum and warms
        up: seconds on a large index), else `no_index`."""
        target = current_version(self.data_dir)
        if target is not None and target != self.failed_target:
            return "loading", f"index version {target.name} is loading: retry in a few seconds"
        if self.last_reload_error:
            return "no_index", f"no index version is loaded: {self.last_reload_error}"
        return "no_index", "no index version is loaded yet: run `related build`"

    # -- reloading -------------------------------------------------------------------------
    async def refresh(self, *, retry_failed: bool = False) -> ReloadOutcome:
        """Load the version `current` points at if it is new. Never raises for a bad version."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            self.last_check_at = _now()
            target = current_version(self.data_dir)
            version = self.index.name if self.index is not None else None
            if target is None or target == self.loaded_target:
                return ReloadOutcome(False, version)
            if target == self.failed_target and not retry_failed:
                return ReloadOutcome(False, version, self.last_reload_error)
            started = time.perf_counter()
            try:
                new = await asyncio.to_thread(self._loader, target)
            except Exception as err:  # any failure refuses the version; the old one keeps serving
                self._refuse(target, err, version)
                if self.index is None:
                    fallback = await self._fall_back(target)
                    if fallback is not None:
                        return ReloadOutcome(True, fallback.name, self.last_reload_error)
                return ReloadOutcome(False, version, self.last_reload_error)
            self._swap(new, target, started)
            self.failed_target = None
            self.last_reload_error = None
            self.fallback = None
            return ReloadOutcome(True, new.name)

    def _refuse(self, target: Path, err: Exception, serving: str | None) -> None:
        self.failed_target = target
        self.reload_failures += 1
        self.last_reload_error = f"version {target.name} refused: {type(err).__name__}: {err}"
        log.error("%s (still serving %s)", self.last_reload_error, serving or "nothing")
        for failure_listener in self._failure_listeners:
            failure_listener(self.last_reload_error)

    async def _fall_back(self, refused: Path) -> Any | None:
        """Nothing served yet and `current` refused: load the newest older version that verifies."""
        problems = []
        for older in reversed([p for p in list_versions(self.data_dir) if p.name < refused.name]):
            started = time.perf_counter()
            try:
                new = await asyncio.to_thread(self._loader, older)
            except Exception as err:
                problems.append(f"{older.name}: {type(err).__name__}: {err}")
                continue
            self._swap(new, older, started)
            self.fallback = f"serving {older.name}, the newest older version that verifies: {self.last_reload_error}"
            log.warning("%s", self.fallback)
            return new
        self.last_reload_error += "; no older version verifies" + (f" ({'; '.join(problems)})" if problems else "")
        log.error("%s", self.last_reload_error)
        return None

    def _swap(self, new: Any, target: Path, started: float) -> None:
        previous = self.index.name if self.index is not None else None
        self.index = new  # the single swap; requests holding the old object keep it
        if previous is None:  # no request holds an old version: settle before the first request is answered
            settle_memory()
        else:
            asyncio.get_running_loop().call_later(SETTLE_SECONDS, settle_memory)
        self.loaded_target = target
        self.last_reload_at = _now()
        log.info(
            "serving index version %s (was %s), loaded in %.2fs",
            new.name, previous or "nothing", time.perf_counter() - started,
        )
        for listener in self._listeners:
            listener(new)

    async def watch(self, interval: float) -> None:
        """Check `current` now and then every `interval` seconds until cancelled."""
        while True:
            try:
                await self.refresh()
            except Exception:  # a bug in the check must not end the watcher
                log.exception("index reload check failed")
            await asyncio.sleep(interval)

    @contextlib.asynccontextmanager
    async def watching(self, interval: float, *, load_first: bool = False):
        """Watch `current` while the block runs. `load_first`: load it before the block (a worker
        among several then accepts connections only once it can answer them: one restarted after
        a crash takes none while it loads, its siblings do)."""
        if load_first:
            await self.refresh()
        task = asyncio.create_task(self.watch(interval), name="related-index-watch")
        try:
            yield task
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
