"""Named stages: a build and an update are each a sequence of them, timed one by one into the
manifest's `stages` and the log, whichever executor does the work."""
from __future__ import annotations

import logging
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
        """Run the stage and record its seconds under its name."""
        began = time.perf_counter()
        self.run(run)
        timings[self.name] = round(time.perf_counter() - began, 3)
        log.info("%s: %.2fs", self.name, timings[self.name])
