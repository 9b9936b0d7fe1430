"""``mmsearch data inspect``: what a dataset holds, validated the way training reads it."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmsearch.charts import length_data
from mmsearch.data import Dataset, check_images, demo_dataset
from mmsearch.errors import DataError
from mmsearch.text import OovReport, PreprocessConfig, Preprocessor, oov_report


@dataclass
class DatasetReport:
    root: Path
    fingerprint: str
    n_train: int
    n_test: int
    labels_per_row: float
    rows_per_label: list[int]  # in the fixed label order
    lengths: dict[str, Any]  # of train.csv captions' tokens after the paper's preprocessing (charts.length_data)
    oov: list[OovReport]
    has_images: bool
    images_found: int
    images_missing: int


def inspect_dataset(path: str | Path | None = None, corpora: Sequence[str] = ()) -> DatasetReport:
    """Validate a dataset (every row, and every image decoded) and describe it; raises listing
    every problem, each with its file and line."""
    ds = Dataset.open(path or demo_dataset())
    if ds.has_images:
        problems = check_images(ds)
        if problems:
            raise DataError(f"dataset {ds.root} has unreadable images", problems)
    tokens = Preprocessor(PreprocessConfig()).many(ds.captions)
    oov = [oov_report(c, tokens, dim=100 if c == "captions-word2vec" else None, sentences_key={"data": ds.fingerprint})
           for c in corpora]
    found = len(set(os.listdir(ds.root / "data")) & set(ds.image_ids)) if ds.has_images else 0
    t = ds.targets
    return DatasetReport(ds.root, ds.fingerprint, ds.n_train, ds.n_test, float(t.sum(1).mean()),
                         [int(c) for c in t.sum(0)], length_data([len(t) for t in tokens[: ds.n_train]]), oov, ds.has_images, found,
                         len(ds.image_ids) - found)
