"""The runtime object: one per process, from ``run.device`` and ``run.precision``."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mmsearch.runtime._devices import PRECISIONS, VISIBLE_ENV, out_of_memory_advice, precision_key

if TYPE_CHECKING:
    from mmsearch.config import RunConfig

log = logging.getLogger("mmsearch.runtime")


class Stepper:
    """One optimisation step in a runtime's precision: the loss's backward (scaled in fp16), the
    gradients clipped (unscaled first), the optimizer stepped (skipped by the scaler when fp16
    overflowed), the scale updated. As Lightning Fabric's precision plugin, the training loop
    only says "step"."""

    def __init__(self, scaler: torch.amp.GradScaler) -> None:
        self._scaler = scaler

    def __call__(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter],
                 grad_clip: float | None) -> None:
        self._scaler.scale(loss).backward()
        if grad_clip is not None:
            self._scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        self._scaler.step(optimizer)
        self._scaler.update()


@dataclass(frozen=True)
class Runtime:
    """Device, precision and memory layout of everything that runs a network in this process.

    * ``autocast()`` wraps forward passes (bf16/fp16 autocast, or nothing in fp32); losses are
      computed in float32 on its output, as autocast itself would.
    * ``stepper()`` makes each optimisation step: backward, clipping and the optimizer's step,
      with fp16's loss scaling (a no-op in other precisions); the engine never scales itself.
    * host batches are pinned and copied with ``non_blocking`` on CUDA, so the copy of batch
      k+1 overlaps the step of batch k; models and image batches are channels-last.
    """

    device: torch.device
    precision: str = "fp32"

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def non_blocking(self) -> bool:
        return self.is_cuda

    @property
    def pin_memory(self) -> bool:
        return self.is_cuda

    @property
    def channels_last(self) -> bool:
        # Convolutions' fast layout on tensor cores and in oneDNN's CPU kernels alike (a CPU
        # training step of mobilenet_v3_small at 64 px: 0.38 s against 0.56 s contiguous).
        return True

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        name = PRECISIONS.get(self.precision).autocast
        return getattr(torch, name) if name else None

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        dtype = self.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def stepper(self) -> Stepper:
        """What one fit calls for each optimisation step (a fresh loss scale per fit)."""
        return Stepper(torch.amp.GradScaler(self.device.type, enabled=PRECISIONS.get(self.precision).grad_scaler))

    def cache_key(self) -> dict[str, str]:
        """This precision's part of every stage cache key (``precision_key``)."""
        return precision_key(self.precision)

    def out_of_memory_advice(self, lower: str) -> str:
        """How out of an out-of-memory here: ``lower`` (the setting to make smaller), and bf16 where it helps."""
        return out_of_memory_advice(lower, self.is_cuda, self.precision)

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(self.device, non_blocking=self.non_blocking)

    def host(self, tensor: torch.Tensor) -> torch.Tensor:
        """A host tensor ready for an asynchronous copy to the device (pinned on CUDA)."""
        return tensor.pin_memory() if self.pin_memory else tensor

    def prepare(self, model: nn.Module) -> nn.Module:
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)  # changes 4-d weights only (convolutions)
        return model

    def generator(self, seed: int) -> torch.Generator:
        """A random generator on the device: augmentation parameters are drawn where they are used."""
        return torch.Generator(device=self.device).manual_seed(seed)

    # -- memory ------------------------------------------------------------------------------
    def reset_peak_memory(self) -> None:
        if self.is_cuda:
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_memory_mb(self) -> float:
        """The most device memory tensors held since the last reset (0 off CUDA)."""
        return torch.cuda.max_memory_allocated(self.device) / 2**20 if self.is_cuda else 0.0

    def describe(self) -> str:
        """The device in words, e.g. ``cuda:0 (NVIDIA H200, 139.8 GiB, CUDA_VISIBLE_DEVICES=3)``."""
        if not self.is_cuda:
            return str(self.device)
        props = torch.cuda.get_device_properties(self.device)
        visible = os.environ.get(VISIBLE_ENV)
        where = f", {VISIBLE_ENV}={visible}" if visible is not None else ""
        return f"{self.device} ({props.name}, {props.total_memory / 2**30:.1f} GiB{where})"

    def memory_report(self) -> str:
        if not self.is_cuda:
            return f"{self.device}"
        try:
            free, total = torch.cuda.mem_get_info(self.device)
        except RuntimeError:  # a broken context cannot answer; say what is known
            return self.describe()
        return f"{self.describe()}: {free / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", 0)
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", 0)
    if device.type == "cuda" and not torch.cuda.is_available():
        from mmsearch.errors import MmsearchError

        raise MmsearchError(f"run.device {name!r}: this machine has no usable CUDA GPU "
                            f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); use run.device=cpu or auto")
    return device


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


@functools.cache
def _runtime(device: str, precision: str) -> Runtime:
    runtime = Runtime(resolve_device(device), precision)
    if runtime.is_cuda:
        torch.cuda.set_device(runtime.device)
        # TF32 tensor-core matmuls and convolutions in fp32, and cuDNN's autotuner: image batches
        # keep one shape a trial, so the tuned kernel is picked once.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
        log.info("runtime: %s, %s", runtime.describe(), precision)
    return runtime


def runtime_for(run: RunConfig) -> Runtime:
    """The process's runtime for a config's ``run`` section (built once per device and precision),
    its torch threads set to ``run.threads`` (the one place they are set)."""
    if run.threads and torch.get_num_threads() != run.threads:
        torch.set_num_threads(run.threads)
    return _runtime(str(run.device), str(run.precision))


def is_out_of_memory(exc: BaseException) -> bool:
    """A device or host allocation that failed (CUDA OOM, CPU allocator refused, MemoryError)."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text)


def is_cuda_error(exc: BaseException) -> bool:
    """An error after which this process's CUDA context cannot be trusted (OOM included: its
    allocator is fragmented and the failed step's tensors may be held by a traceback)."""
    accelerator_error = getattr(torch, "AcceleratorError", None)
    if accelerator_error is not None and isinstance(exc, accelerator_error):
        return True
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(s in text for s in ("CUDA error", "CUBLAS_STATUS", "cuDNN error",
                                                                     "CUDNN_STATUS"))
