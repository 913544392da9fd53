"""What a worker does with its memory once a version is swapped in (api.holder.settle_memory)."""
from __future__ import annotations

import asyncio
import gc
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest

from api.holder import IndexHolder, settle_memory


@pytest.fixture
def unfrozen():
    """Each test starts and ends with nothing frozen (gc.freeze is process-wide)."""
    gc.unfreeze()
    yield
    gc.unfreeze()


def publish(data_dir: Path, name: str) -> None:
    (data_dir / "versions" / name).mkdir(parents=True)
    current = data_dir / "current"
    current.unlink(missing_ok=True)
    current.symlink_to(f"versions/{name}")


def test_the_first_load_settles_before_any_request_and_a_reload_after_the_old_version_is_released(
    tmp_path: Path, unfrozen
) -> None:
    """A first load has no request on an old version: its full collection (100-250 ms at 1M articles, a pause
    for every request in flight) and freeze happen before the worker answers; a reload's wait for the old
    version's requests to finish."""
    holder = IndexHolder(tmp_path, loader=lambda path: SimpleNamespace(name=path.name))

    async def serve() -> tuple[int, int]:
        publish(tmp_path, "v1")
        await holder.refresh()
        first = gc.get_freeze_count()
        gc.unfreeze()
        publish(tmp_path, "v2")
        await holder.refresh()
        return first, gc.get_freeze_count()

    with ThreadPoolExecutor(1) as thread:  # its own loop: some tests leave one running in the main thread
        first, right_after_reload = thread.submit(asyncio.run, serve()).result()
    assert first > 0 and right_after_reload == 0
    assert holder.index.name == "v2"


def anonymous_bytes() -> int:
    with open("/proc/self/smaps_rollup") as rollup:
        fields = dict(line.split(":", 1) for line in rollup.read().splitlines()[1:])
    return int(fields["Anonymous"].split()[0]) * 1024


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps_rollup; malloc_trim is glibc's")
def test_settling_hands_the_heap_freed_by_an_update_back_to_the_system(unfrozen) -> None:
    """Blocks of a few KiB come from glibc's heap, which keeps them once freed (here below one live block,
    so the heap's top cannot shrink): after settling, the worker's private memory is back near where it was."""
    before = anonymous_bytes()
    blocks = [bytearray(4000) for _ in range(25_000)]  # 100 MB
    kept = bytearray(4000)
    grown = anonymous_bytes() - before
    del blocks
    assert anonymous_bytes() - before > grown // 2  # freed, but still this process's
    settle_memory()
    assert anonymous_bytes() - before < grown // 4
    assert len(kept) == 4000
