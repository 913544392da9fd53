"""Named stages: a build and an update are each a sequence of them, timed one by one into the
manifest's `stages` and the log, whichever executor does the work."""
from __future__ import annotations

import ctypes
import logging
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

Run = TypeVar("Run")


@dataclass(frozen=True)
class Stage(Generic[Run]):
    name: str
    run: Callable[[Run], None]

    def timed(self, run: Run, timings: dict[str, float], log: logging.Logger) -> None:
        """Run the stage and record its seconds under its name; the log also says the process's peak
        RSS so far, so the stage that set the peak is the first whose line shows it."""
        began = time.perf_counter()
        self.run(run)
        release_freed_heap()
        timings[self.name] = round(time.perf_counter() - began, 3)
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        log.info("%s: %.2fs, peak RSS %.0f MiB", self.name, timings[self.name], peak_mib)


# The running process's own symbols (as index/prefault.py reaches madvise): glibc's malloc_trim where
# there is one. Not ctypes.util.find_library, which runs ldconfig (15 ms on every import).
_MALLOC_TRIM = getattr(ctypes.CDLL(None), "malloc_trim", None) if os.name == "posix" else None


def release_freed_heap() -> None:
    """Hand the heap a stage freed back to the system (glibc's malloc_trim; a no-op elsewhere).

    A stage frees gigabytes of small and mid-sized objects at 1M articles (the articles' texts once
    they are vectors), which glibc keeps in its heap for reuse: without the trim the next stage's
    arrays come on top of it, and that was the build's peak RSS.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
