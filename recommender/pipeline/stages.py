"""Named stages: a build and an update are each a sequence of them, timed one by one into the
manifest's `stages` and the log, whichever executor does the work."""
from __future__ import annotations

import logging
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from index.heap import release_freed_heap

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
        # A stage frees gigabytes at 1M articles: without this, the next stage's arrays came on top
        # of that heap, and that was the build's peak RSS.
        release_freed_heap()
        timings[self.name] = round(time.perf_counter() - began, 3)
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        log.info("%s: %.2fs, peak RSS %.0f MiB", self.name, timings[self.name], peak_mib)
