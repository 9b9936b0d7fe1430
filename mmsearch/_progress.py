"""Progress of long steps: a tqdm bar (rate, ETA) in a terminal, a timed log line otherwise.

Bars are shown only where a person watches (stderr is a terminal) and never in sweep worker
processes, whose trials the coordinator's progress line already reports; ``MMSEARCH_PROGRESS``
(0/1) overrides the choice.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")
PROGRESS_ENV = "MMSEARCH_PROGRESS"
log = logging.getLogger("mmsearch.progress")


def bars_enabled() -> bool:
    forced = os.environ.get(PROGRESS_ENV)
    if forced is not None:
        return forced.lower() in {"1", "true", "yes"}
    return sys.stderr.isatty()


def progress(items: Iterable[T], *, total: int | None, what: str, unit: str = "it") -> Iterator[T]:
    """Yield ``items`` while showing how far ``what`` got; logs the duration and rate at the end."""
    started = time.perf_counter()
    count = 0
    with tqdm(items, total=total, desc=what, unit=unit, disable=not bars_enabled(), mininterval=0.5,
              dynamic_ncols=True, leave=False) as bar:
        for item in bar:
            yield item
            count += 1
    seconds = time.perf_counter() - started
    if seconds >= 2:
        log.info("%s: %d %s in %.1f s (%.1f %s/s)", what, count, unit, seconds, count / seconds, unit)
