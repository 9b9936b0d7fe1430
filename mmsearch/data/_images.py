"""Decoded-image cache: every image is decoded and resized once per (dataset, size).

The cache is one uint8 memory-mapped array (rows x size x size x 3) in combined row order,
shared read-only by every later run and worker process. Augmentation then runs on tensors.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image

from mmsearch._cache import cached, entry, stable_hash
from mmsearch._disk import MIN_FREE_MB, check_free_space
from mmsearch._progress import progress
from mmsearch.data._dataset import Dataset
from mmsearch.errors import DataError, Problem

log = logging.getLogger("mmsearch.data")
ARRAY_FILE = "pixels.u8"


# The most pixels an image may have, checked from its header before any decoding: COCO's are
# 0.3 MP, a 48 MP camera photo fits; a decompression bomb (a few KB of PNG that inflate to
# gigapixels) is refused at once instead of eating the memory and minutes of every worker.
MAX_PIXELS = 64_000_000


class TooManyPixels(ValueError):
    pass


def _within_budget(img: Image.Image) -> None:
    width, height = img.size
    if width * height > MAX_PIXELS:
        raise TooManyPixels(f"{width} x {height} pixels ({width * height / 1e6:,.0f} MP) exceeds the "
                            f"{MAX_PIXELS / 1e6:.0f} MP an image may have; resize it first")


def decode_image(path: Path | IO[bytes], size: int) -> np.ndarray:
    """RGB uint8 size x size x 3, resized as the training cache and serving both do (from a file,
    or an open binary stream: a served request's inline image). A JPEG is
    decoded in draft mode: its decoder scales by 1/2, 1/4 or 1/8 while decoding (never below
    ``size``), a fraction of the work of a full decode at COCO's ~640 px before the resize."""
    with Image.open(path) as img:
        _within_budget(img)
        img.draft("RGB", (size, size))
        img = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
        return np.array(img, dtype=np.uint8)  # a writable copy: torch refuses read-only arrays


def undecodable(path: Path, where: str) -> Problem | None:
    """The problem with an image file that cannot be decoded completely, or None."""
    try:
        with Image.open(path) as img:
            _within_budget(img)
            img.load()  # decodes every byte: a truncated JPEG fails here, not only its header
        return None
    except Exception as exc:  # PIL raises many types for corrupt files
        return Problem(where, f"ImageID: cannot decode {path} ({type(exc).__name__}: {exc})")


def check_images(dataset: Dataset, events: Counter[str] | None = None) -> list[Problem]:
    """Decode every image of the dataset once, naming each one that fails with its CSV line."""
    problems = []
    rows = progress(enumerate(dataset.image_ids), total=len(dataset.image_ids), what="checking images", unit="img")
    for row, image_id in rows:
        problem = undecodable(dataset.image_path(image_id), dataset.where(row))
        if problem is not None:
            problems.append(problem)
    if events is not None:
        events["decode:images"] += len(dataset.image_ids)
    return problems


@dataclass(frozen=True)
class ImageCache:
    """Where a dataset's decoded images at one size live in the cache, and what they take."""

    path: Path
    rows: int
    size: int

    @property
    def bytes(self) -> int:
        return self.rows * self.size * self.size * 3

    @property
    def built(self) -> bool:
        return self.path.exists()

    def describe(self) -> str:
        """``decoded images at 64px: 40,000 rows, 491.5 MB (to build)``"""
        mb = self.bytes / 2**20
        amount = f"{mb / 1024:.1f} GB" if mb >= 1024 else f"{mb:.1f} MB"
        return f"decoded images at {self.size}px: {self.rows:,} rows, {amount} ({'built' if self.built else 'to build'})"


def image_cache(dataset: Dataset, size: int) -> ImageCache:
    key = stable_hash({"images": dataset.images_fingerprint, "ids": dataset.image_ids, "size": size, "v": 3})
    return ImageCache(entry("images", f"{key}-{size}px"), len(dataset.image_ids), size)


def check_room_for(caches: list[ImageCache]) -> None:
    """Every decoded-image cache still to build fits on its disk, with the margin a sweep keeps
    free; else one message with each size before any decoding starts (at the paper's size the
    224 px cache alone is 6 GB, and a disk that fills half-way through wastes the decode)."""
    need: dict[Path, float] = {}
    for cache in caches:
        if not cache.built:
            need[cache.path.parent] = need.get(cache.path.parent, 0.0) + cache.bytes / 2**20
    for folder, mb in need.items():
        check_free_space({"the decoded-image cache (" + "; ".join(c.describe() for c in caches if not c.built) + ")":
                          folder}, need_mb=mb + MIN_FREE_MB, needs="it needs")


def load_images(dataset: Dataset, size: int, events: Counter[str] | None = None) -> np.memmap:
    """The decoded images of every row (train.csv rows, then test.csv rows), read-only."""
    if not dataset.has_images:
        raise DataError(f"dataset {dataset.root}", [
            Problem(str(dataset.root / "data"), "missing image folder: the image and fusion stages need images "
                                                "(text runs work without)")])
    cache = image_cache(dataset, size)
    check_room_for([cache])
    shape = (cache.rows, size, size, 3)

    def write(folder: Path) -> None:
        folder.mkdir()
        out = np.memmap(folder / ARRAY_FILE, dtype=np.uint8, mode="w+", shape=shape)

        def decode(row: int) -> Problem | None:
            file = dataset.image_path(dataset.image_ids[row])
            try:
                out[row] = decode_image(file, size)
            except Exception as exc:  # PIL raises many types for corrupt files
                return Problem(dataset.where(row), f"ImageID: cannot decode {file} ({type(exc).__name__}: {exc})")
            return None

        # PIL releases the GIL while it decodes and resizes: threads use every core.
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            done = progress(pool.map(decode, range(shape[0]), chunksize=64), total=shape[0],
                            what=f"decoding images at {size}px", unit="img")
            problems = [p for p in done if p is not None]
        out.flush()
        if events is not None:
            events["decode:images"] += shape[0]
        if problems:
            raise DataError(f"dataset {dataset.root} has unreadable images", problems)
        (folder / "meta.json").write_text(json.dumps({"root": str(dataset.root), "rows": shape[0], "size": size}))

    folder = cached(cache.path, write, kind="images", what=f"decoded images at {size}px", events=events)
    return np.memmap(folder / ARRAY_FILE, dtype=np.uint8, mode="r", shape=shape)
