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


# Without a bar (output to a file, a pipe, CI), a long step still says how far it got this often:
# at the paper's 40,000 images a decode or a feature pass runs for minutes.
QUIET_LOG_EVERY_S = 20.0


def progress(items: Iterable[T], *, total: int | None, what: str, unit: str = "it") -> Iterator[T]:
    """Yield ``items`` while showing how far ``what`` got: a bar in a terminal, else a log line
    every ``QUIET_LOG_EVERY_S`` (count, rate, time left); logs the duration and rate at the end."""
    started = time.perf_counter()
    count = 0
    bars = bars_enabled()
    next_line = started + QUIET_LOG_EVERY_S
    with tqdm(items, total=total, desc=what, unit=unit, disable=not bars, mininterval=0.5,
              dynamic_ncols=True, leave=False) as bar:
        for item in bar:
            yield item
            count += 1
            if not bars and time.perf_counter() >= next_line:
                now = time.perf_counter()
                next_line = now + QUIET_LOG_EVERY_S
                rate = count / (now - started)
                left = f", about {(total - count) / rate:.0f} s left" if total and rate > 0 else ""
                of = f"/{total}" if total else ""
                log.info("%s: %d%s %s after %.0f s (%.1f %s/s%s)", what, count, of, unit, now - started, rate, unit, left)
    seconds = time.perf_counter() - started
    if seconds >= 2:
        log.info("%s: %d %s in %.1f s (%.1f %s/s)", what, count, unit, seconds, count / seconds, unit)
