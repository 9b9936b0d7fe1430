"""Decoded-image cache: every image is decoded and resized once per (dataset, size).

The cache is one uint8 memory-mapped array (rows x size x size x 3) in combined row order,
shared read-only by every later run and worker process. Augmentation then runs on tensors.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from mmsearch._cache import cached, entry, stable_hash
from mmsearch.data._dataset import Dataset
from mmsearch.errors import DataError, Problem

log = logging.getLogger("mmsearch.data")
ARRAY_FILE = "pixels.u8"


def decode_image(path: Path, size: int) -> np.ndarray:
    """RGB uint8 size x size x 3, resized as the training cache and serving both do."""
    with Image.open(path) as img:
        img = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
        return np.array(img, dtype=np.uint8)  # a writable copy: torch refuses read-only arrays


def load_images(dataset: Dataset, size: int, events: Counter[str] | None = None) -> np.memmap:
    """The decoded images of every row (train.csv rows, then test.csv rows), read-only."""
    if not dataset.has_images:
        raise DataError(f"dataset {dataset.root}", [
            Problem(str(dataset.root / "data"), "no image folder: this is a caption-only dataset")])
    key = stable_hash({"images": dataset.images_fingerprint, "ids": dataset.image_ids, "size": size, "v": 2})
    shape = (len(dataset.image_ids), size, size, 3)

    def write(folder: Path) -> None:
        folder.mkdir()
        out = np.memmap(folder / ARRAY_FILE, dtype=np.uint8, mode="w+", shape=shape)
        problems = []
        log.info("decoding %d images at %dpx", shape[0], size)
        for row, image_id in enumerate(dataset.image_ids):
            file = dataset.image_path(image_id)
            try:
                out[row] = decode_image(file, size)
            except Exception as exc:  # PIL raises many types for corrupt files
                problems.append(Problem(dataset.where(row), f"ImageID: cannot decode {file} ({type(exc).__name__}: {exc})"))
        out.flush()
        del out
        if events is not None:
            events["decode:images"] += shape[0]
        if problems:
            raise DataError(f"dataset {dataset.root} has unreadable images", problems)
        (folder / "meta.json").write_text(json.dumps({"root": str(dataset.root), "rows": shape[0], "size": size}))

    folder = cached(entry("images", f"{key}-{size}px"), write, kind="images", what=f"decoded images at {size}px",
                    events=events)
    return np.memmap(folder / ARRAY_FILE, dtype=np.uint8, mode="r", shape=shape)
