"""Image batches from the decoded-image cache, made ready on the device.

The one image path of training, feature extraction, export and serving: uint8 rows are sliced
from the memory-mapped cache a batch at a time (sorted, so the reads are sequential), pinned,
copied to the device as uint8 (a quarter of float32's bytes) without blocking, and only there
converted and augmented as a whole batch. A background thread can slice and pin the next
batches while the device trains on this one.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from mmsearch._lazy import lazy_module
from mmsearch.data._augment import ImageTransform
from mmsearch.data._labels import NUM_LABELS

if TYPE_CHECKING:
    from mmsearch.runtime import Runtime

torch = lazy_module("torch")
_DONE = object()


def image_input(pixels: Any, transform: ImageTransform, runtime: Runtime, generator: Any = None) -> Any:
    """Model input from uint8 N x H x W x 3 pixels (a host tensor, pinned or not): on the
    runtime's device, through ``transform``, channels-last where the runtime wants it."""
    x = transform(runtime.to_device(pixels).permute(0, 3, 1, 2), generator)
    return x.contiguous(memory_format=torch.channels_last) if runtime.channels_last else x


class ImageBatches:
    """Mini-batches ``((images,), targets)`` over ``rows`` of the decoded-image cache (targets
    are zeros where ``targets`` is None, as for test.csv rows)."""

    def __init__(self, images: np.ndarray, rows: np.ndarray, targets: np.ndarray | None, batch_size: int,
                 transform: ImageTransform, runtime: Runtime, *, shuffle: bool = False, seed: int = 0,
                 prefetch: int = 0) -> None:
        self.images, self.rows, self.targets = images, np.asarray(rows), targets
        self.batch_size, self.transform, self.runtime = batch_size, transform, runtime
        self.shuffle, self.prefetch = shuffle, prefetch
        self.order = torch.Generator().manual_seed(seed)
        # One stream of augmentation draws for the whole fit: epoch k+1 sees new crops.
        self.augment = runtime.generator(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.rows) / self.batch_size)

    def _host_batches(self) -> Iterator[tuple[Any, Any]]:
        n = len(self.rows)
        order = torch.randperm(n, generator=self.order).numpy() if self.shuffle else np.arange(n)
        for start in range(0, n, self.batch_size):
            idx = np.sort(self.rows[order[start : start + self.batch_size]])
            pixels = torch.from_numpy(np.ascontiguousarray(self.images[idx]))
            target = (torch.from_numpy(np.ascontiguousarray(self.targets[idx])) if self.targets is not None
                      else torch.zeros(len(idx), NUM_LABELS))
            yield self.runtime.host(pixels), self.runtime.host(target)

    def __iter__(self) -> Iterator[tuple[tuple[Any], Any]]:
        source = self._host_batches() if self.prefetch <= 0 else _prefetched(self._host_batches(), self.prefetch)
        for pixels, target in source:
            yield (image_input(pixels, self.transform, self.runtime, self.augment),), self.runtime.to_device(target)


def _prefetched(batches: Iterator[Any], depth: int) -> Iterator[Any]:
    """``batches`` produced by a background thread, at most ``depth`` ahead. The thread stops
    when the consumer stops early; its exception is raised in the consumer."""
    ready: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in batches:
                while not stop.is_set():
                    try:
                        ready.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ready.put(_DONE)
        except BaseException as exc:  # handed to the consumer, which raises it
            ready.put(exc)

    thread = threading.Thread(target=produce, daemon=True, name="mmsearch-image-prefetch")
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
