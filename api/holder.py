"""The hot-reloading holder of the current RelatedIndex.

One reference (`holder.index`) is swapped when `DATA_DIR/current` points at a new version.
A request grabs the reference once (api.deps) and keeps using that object, so in-flight
requests finish on the version they started with while new ones see the new version.
A version that fails to load (checksum mismatch, missing file, anything) is refused: the
old one keeps serving, the error is logged and shown in /v1/index, and the same version
dir is not retried by the periodic check (only an explicit admin reload retries it).
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

from index.artifacts import Version, current_version

log = logging.getLogger("related.api.reload")


def load_version(path: Path) -> Any:
    """Open, verify and warm up one version dir (runs in a worker thread)."""
    from recommender.related import RelatedIndex

    index = RelatedIndex(Version.open(path, verify=True))
    index.warm_up()
    return index


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
                self.failed_target = target
                self.reload_failures += 1
                self.last_reload_error = f"version {target.name} refused: {type(err).__name__}: {err}"
                log.error("%s (still serving %s)", self.last_reload_error, version or "nothing")
                for failure_listener in self._failure_listeners:
                    failure_listener(self.last_reload_error)
                return ReloadOutcome(False, version, self.last_reload_error)
            self.index = new  # the single swap; requests holding the old object keep it
            # What is loaded by now (the libraries, about 160k objects) lives as long as the process
            # serves: keep it out of the cyclic GC, whose full passes over it take over 100 ms, a
            # pause for the requests in flight. (The index holds no object per article to add.)
            gc.freeze()
            self.loaded_target = target
            self.failed_target = None
            self.last_reload_error = None
            self.last_reload_at = _now()
            log.info(
                "serving index version %s (was %s), loaded in %.2fs",
                new.name, version or "nothing", time.perf_counter() - started,
            )
            for listener in self._listeners:
                listener(new)
            return ReloadOutcome(True, new.name)

    async def watch(self, interval: float) -> None:
        """Check `current` now and then every `interval` seconds until cancelled."""
        while True:
            try:
                await self.refresh()
            except Exception:  # a bug in the check must not end the watcher
                log.exception("index reload check failed")
            await asyncio.sleep(interval)

    @contextlib.asynccontextmanager
    async def watching(self, interval: float):
        task = asyncio.create_task(self.watch(interval), name="related-index-watch")
        try:
            yield task
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
