"""What needs no torch: the precision names a config may use, and the GPUs a coordinator can
hand to its workers. A coordinator never initialises CUDA (a CUDA context and its cached memory
would sit in it for the whole sweep), so GPUs are counted from the environment and the driver's
own files, not through torch."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from mmsearch._registry import Registry

log = logging.getLogger("mmsearch.runtime")

VISIBLE_ENV = "CUDA_VISIBLE_DEVICES"


@dataclass(frozen=True)
class PrecisionSpec:
    """How the forward pass runs: an autocast dtype (None: plain float32) and whether the loss
    is scaled (fp16's small range underflows small gradients without it)."""

    autocast: str | None
    grad_scaler: bool
    description: str


PRECISIONS: Registry[PrecisionSpec] = Registry("precision")
PRECISIONS.register("fp32", PrecisionSpec(None, False, "float32 everywhere (TF32 matmuls on CUDA)"))
PRECISIONS.register("bf16", PrecisionSpec("bfloat16", False, "bfloat16 autocast: float32 range, no loss scaling"))
PRECISIONS.register("fp16", PrecisionSpec("float16", True, "float16 autocast with a gradient scaler"))


def visible_gpus(environ: dict[str, str] | os._Environ[str] = os.environ) -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` entries: that variable's own
    list when it is set, else one entry per GPU the NVIDIA driver lists. Empty without GPUs."""
    if VISIBLE_ENV in environ:
        entries = [e.strip() for e in environ[VISIBLE_ENV].split(",") if e.strip()]
        # CUDA stops at the first invalid entry; "-1" is the usual way to hide every GPU.
        out = []
        for e in entries:
            if e.startswith("-"):
                break
            out.append(e)
        return out
    driver = Path("/proc/driver/nvidia/gpus")
    if driver.is_dir():
        return [str(i) for i in range(len(list(driver.iterdir())))]
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return []
        return [str(i) for i, line in enumerate(x for x in listing.splitlines() if x.startswith("GPU "))]
    return []



PROC_STAT = Path("/proc/stat")


def idle_cpu_threads(window_s: float = 0.5, stat: Path = PROC_STAT) -> tuple[int, int, float]:
    """(threads to train with, CPUs this process may use, CPUs busy now) for a process training
    in the foreground: the CPUs that other processes leave idle. torch's default takes every core
    even when a sweep already keeps them busy, and OpenMP threads competing for cores slow each
    epoch several times over. Busy is measured over ``window_s`` from /proc/stat, not read from
    the 1-minute load average: that lags by a minute both ways (after a sweep's workers exit it
    still says busy, and halved the threads of the final models trained right after them)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    busy = _busy_cpus(window_s, stat)
    if busy is None:
        try:
            busy = os.getloadavg()[0]
        except OSError:  # not available on this platform: assume idle
            busy = 0.0
    return max(1, min(cpus, cpus - int(busy + 0.5))), cpus, busy


def _busy_cpus(window_s: float, stat: Path = PROC_STAT) -> float | None:
    """CPUs busy over the next ``window_s`` (all of the machine's, as /proc/stat counts them,
    scaled to its CPU count), or None where /proc/stat is not there."""
    def sample() -> tuple[int, int] | None:
        try:
            fields = [int(x) for x in stat.read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields[:8]), idle  # guest time is already inside user

    first = sample()
    if first is None:
        return None
    time.sleep(window_s)
    second = sample()
    if second is None or second[0] <= first[0]:
        return None
    total, idle = second[0] - first[0], second[1] - first[1]
    return (total - idle) / total * (os.cpu_count() or 1)


def out_of_memory_advice(lower: str, on_gpu: bool | None = None, precision: str | None = None) -> str:
    """How out of an out-of-memory: ``lower`` (the setting to make smaller), and bf16 where it
    helps, a GPU running fp32 (``on_gpu``/``precision`` None: not known, so said as a condition).
    The one wording of this advice, wherever a run ran out of memory."""
    if on_gpu is False or precision not in (None, "fp32"):
        return lower
    return f"{lower} or use run.precision=bf16, which halves activation memory{'' if on_gpu else ' on a GPU'}"


def thread_budget(budget: int | None, share: int = 1, foreground: bool = False) -> int:
    """The CPU threads a process trains with, decided here only: its share of ``budget``
    (``run.threads``, a profile's budget for the machine; every CPU when unset) among ``share``
    sweep workers; in the ``foreground`` (``export``, ``train``), no more than the CPUs other
    processes leave idle, said when that is fewer: a foreground run that took every core of a
    machine a sweep keeps busy made OpenMP threads compete for cores and each epoch several
    times slower."""
    if not foreground:
        return max(1, (budget or os.cpu_count() or 1) // max(1, share))
    idle, cpus, busy = idle_cpu_threads()
    wanted = budget or cpus
    threads = max(1, min(wanted, idle))
    if threads < wanted:
        log.warning("other processes keep this machine busy (%.1f of %d CPUs busy just now): training with %d "
                    "thread(s) instead of %d", busy, cpus, threads, wanted)
    return threads


def precision_key(precision: str) -> dict[str, str]:
    """A precision's part of every stage cache key: it changes what a network learns and extracts;
    fp32 adds nothing, which keeps the keys of caches built before precision was a setting."""
    return {} if precision == "fp32" else {"precision": precision}
