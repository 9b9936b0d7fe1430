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
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image

from mmsearch._cache import cached, entry, stable_hash
from mmsearch._progress import progress
from mmsearch.data._dataset import Dataset
from mmsearch.errors import DataError, Problem

log = logging.getLogger("mmsearch.data")
ARRAY_FILE = "pixels.u8"


def decode_image(path: Path | IO[bytes], size: int) -> np.ndarray:
    """RGB uint8 size x size x 3, resized as the training cache and serving both do (from a file,
    or an open binary stream: a served request's inline image). A JPEG is
    decoded in draft mode: its decoder scales by 1/2, 1/4 or 1/8 while decoding (never below
    ``size``), a fraction of the work of a full decode at COCO's ~640 px before the resize."""
    with Image.open(path) as img:
        img.draft("RGB", (size, size))
        img = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
        return np.array(img, dtype=np.uint8)  # a writable copy: torch refuses read-only arrays


def undecodable(path: Path, where: str) -> Problem | None:
    """The problem with an image file that cannot be decoded completely, or None."""
    try:
        with Image.open(path) as img:
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


def load_images(dataset: Dataset, size: int, events: Counter[str] | None = None) -> np.memmap:
    """The decoded images of every row (train.csv rows, then test.csv rows), read-only."""
    if not dataset.has_images:
        raise DataError(f"dataset {dataset.root}", [
            Problem(str(dataset.root / "data"), "missing image folder: the image and fusion stages need images "
                                                "(text runs work without)")])
    key = stable_hash({"images": dataset.images_fingerprint, "ids": dataset.image_ids, "size": size, "v": 3})
    shape = (len(dataset.image_ids), size, size, 3)

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

    folder = cached(entry("images", f"{key}-{size}px"), write, kind="images", what=f"decoded images at {size}px",
                    events=events)
    return np.memmap(folder / ARRAY_FILE, dtype=np.uint8, mode="r", shape=shape)
