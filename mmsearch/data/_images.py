"""Decoded-image cache: every image is decoded and resized once per (dataset, size).

The cache is one uint8 memory-mapped array (rows x size x size x 3) in combined row order,
shared read-only by every later run and worker process. Augmentation then runs on tensors.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image

from mmsearch._diskcache import atomic_path, file_lock, stable_hash
from mmsearch._paths import cache_dir
from mmsearch.data._dataset import Dataset
from mmsearch.errors import DataError, Problem

log = logging.getLogger("mmsearch.data")

# Incremented per decoded file; tests read it to prove the cache is reused (counts, not time).
decode_count = 0


def decode_image(path: Path, size: int) -> np.ndarray:
    global decode_count
    decode_count += 1
    with Image.open(path) as img:
        img = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
        return np.array(img, dtype=np.uint8)  # a writable copy: torch refuses read-only arrays


def image_cache_path(dataset: Dataset, size: int) -> Path:
    key = stable_hash({"images": dataset.images_fingerprint, "ids": dataset.image_ids, "size": size, "v": 1})
    return cache_dir("images") / f"{key}-{size}px.u8"


def load_images(dataset: Dataset, size: int) -> np.memmap:
    """The decoded images of every row (train.csv rows, then test.csv rows), read-only."""
    if not dataset.has_images:
        raise DataError(
            f"dataset {dataset.root}",
            [Problem(str(dataset.root / "data"), "no image folder: this is a caption-only dataset")],
        )
    path = image_cache_path(dataset, size)
    shape = (len(dataset.image_ids), size, size, 3)
    if not path.exists():
        with file_lock(path.with_suffix(".lock")):
            if not path.exists():
                _build(dataset, size, path, shape)
    else:
        log.info("cache hit: decoded images %s", path.name)
    return np.memmap(path, dtype=np.uint8, mode="r", shape=shape)


def _build(dataset: Dataset, size: int, path: Path, shape: tuple[int, ...]) -> None:
    log.info("decoding %d images at %dpx into %s", shape[0], size, path)
    tmp = atomic_path(path)
    out = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=shape)
    problems = []
    for row, image_id in enumerate(dataset.image_ids):
        file = dataset.image_path(image_id)
        try:
            out[row] = decode_image(file, size)
        except Exception as exc:  # PIL raises many types for corrupt files
            problems.append(Problem(dataset.where(row), f"ImageID: cannot decode {file} ({type(exc).__name__}: {exc})"))
    out.flush()
    del out
    if problems:
        os.unlink(tmp)
        raise DataError(f"dataset {dataset.root} has unreadable images", problems)
    os.replace(tmp, path)
    path.with_suffix(".json").write_text(json.dumps({"root": str(dataset.root), "rows": shape[0], "size": size}))
