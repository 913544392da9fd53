"""Pre-faulting a version's memory-mapped files at load (index.prefault), measured on this process's own mappings."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from index.prefault import PAGE, prefault
from recommender.related import RelatedIndex
from tests.corpora import build_records, newsroom

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pre-faulting reads /proc/self/maps: Linux only")


def resident(path: Path) -> tuple[int, int]:
    """(bytes mapped, bytes resident) of this process's mappings of `path` (/proc/self/smaps)."""
    target, mapped, rss, inside = os.path.realpath(path), 0, 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and not fields[0].endswith(":"):
                inside = len(fields) > 5 and fields[5] == target
                if inside:
                    start, end = (int(x, 16) for x in fields[0].split("-"))
                    mapped += end - start
            elif inside and fields[0] == "Rss:":
                rss += int(fields[1]) * 1024
    return mapped, rss


def test_prefault_maps_the_pages_of_the_files_up_to_the_budget(tmp_path: Path) -> None:
    first, second = tmp_path / "first.npy", tmp_path / "second.npy"
    np.save(first, np.arange(256 * PAGE // 8, dtype=np.int64))
    np.save(second, np.arange(256 * PAGE // 8, dtype=np.int64))
    arrays = [np.load(p, mmap_mode="r") for p in (first, second)]
    assert resident(first)[1] == 0 and resident(second)[1] == 0  # mapped, never read

    assert prefault([first, second], 64 * PAGE) == 64 * PAGE
    assert 64 * PAGE <= resident(first)[1] < resident(first)[0] and resident(second)[1] == 0

    done = prefault([first, second], 1 << 30)
    assert done == resident(first)[0] + resident(second)[0]
    assert resident(first)[1] == resident(first)[0] and resident(second)[1] == resident(second)[0]
    assert prefault([first], 0) == 0
    assert int(arrays[1][-1]) == 256 * PAGE // 8 - 1  # the arrays read the same


def test_warm_up_prefaults_what_get_related_reads_within_the_budget(tmp_path: Path) -> None:
    data_dir, _ = build_records(tmp_path, newsroom())
    index = RelatedIndex.open(data_dir)
    files = index.serving_files()
    names = [p.name for p in files]
    assert names[:2] == ["served.npy", "served_scores.npy"] and {"neighbours.npy", "index.faiss", "dense.npy"} <= set(names)
    done = index.warm_up(prefault_bytes=1 << 30)
    mapped = [resident(p) for p in files]
    assert done == sum(m for m, _ in mapped) > 0
    assert all(rss == m for m, rss in mapped if m), list(zip(names, mapped))
