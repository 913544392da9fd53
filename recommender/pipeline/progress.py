"""Progress bars for the long stages of builds and updates: one bar per stage, with a rate and
an ETA, on stderr; disabled for cron (`--no-progress`), where the one-line summary is the log.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from functools import partial
from typing import Protocol

from tqdm import tqdm

Advance = Callable[[float], object]  # called with how much more is done


class Bars(Protocol):
    """Opens one stage's bar; the context yields its `advance`."""

    def __call__(
        self, desc: str, total: float | None, unit: str = "art", unit_scale: bool = False
    ) -> AbstractContextManager[Advance]: ...


@contextmanager
def stage_bar(
    desc: str, total: float | None, unit: str = "art", unit_scale: bool = False, *, enabled: bool
) -> Iterator[Advance]:
    with tqdm(
        total=total, desc=f"{desc:<10}", unit=unit, unit_scale=unit_scale, disable=not enabled, leave=False,
        dynamic_ncols=True, mininterval=0.5,
    ) as bar:
        yield bar.update


def bars(enabled: bool) -> Bars:
    return partial(stage_bar, enabled=enabled)


NO_BARS = bars(False)
