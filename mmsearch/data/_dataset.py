"""A COMP5329-style dataset folder: ``train.csv``, optional ``test.csv``, optional ``data/`` images."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from mmsearch.data._csv import CsvTable, read_table
from mmsearch.data._labels import encode
from mmsearch.errors import DataError, Problem

TRAIN_COLUMNS = ("ImageID", "Labels", "Caption")
TEST_COLUMNS = ("ImageID", "Caption")


@dataclass
class Split:
    """Row indices into ``train.csv`` for training and validation."""

    train: np.ndarray
    val: np.ndarray


MIN_TRAIN_ROWS = 10


class Dataset:
    """A validated dataset folder.

    Rows of ``train.csv`` come first, then rows of ``test.csv``: image and caption caches are
    indexed by this combined row order, so features exist for both without a second pass.
    """

    def __init__(self, root: Path, train: CsvTable, test: CsvTable | None) -> None:
        self.root = root
        self.train = train
        self.test = test

    # -- loading -------------------------------------------------------------------------
    @classmethod
    def open(cls, root: str | Path, require_images: bool | None = None, check_images: bool = True) -> Dataset:
        """Read and validate a dataset, reporting every problem at once.

        ``require_images``: True demands a ``data/`` folder, False ignores images, None (the
        default) checks images only when ``data/`` exists (a caption-only dataset is valid).
        """
        root = Path(root)
        problems: list[Problem] = []
        if not root.is_dir():
            raise DataError(f"dataset {root}", [Problem(str(root), "not a folder; expected a folder with train.csv")])
        train_path = root / "train.csv"
        if not train_path.is_file():
            raise DataError(
                f"dataset {root}",
                [Problem(str(train_path), "missing; a dataset needs train.csv with columns ImageID,Labels,Caption")],
            )
        train, found = read_table(train_path, TRAIN_COLUMNS)
        problems += found
        if not found and not len(train):
            problems.append(Problem(f"{train_path}:1", "no data rows after the header; a dataset needs labelled rows"))
        elif not found and len(train) < MIN_TRAIN_ROWS:
            # Fewer rows leave a validation split of one row or none: every score 0, silently.
            problems.append(Problem(f"{train_path}:1", f"{len(train)} data row(s); a dataset needs at least "
                                                       f"{MIN_TRAIN_ROWS} (training plus a validation split)"))
        problems += [Problem(f"{train.path}:{line}", f"Caption: empty caption for {image_id!r}")
                     for image_id, caption, line in zip(train.image_ids, train.captions, train.lines) if not caption.strip()]
        test = None
        test_path = root / "test.csv"
        if test_path.is_file():
            test, found = read_table(test_path, TEST_COLUMNS)
            problems += found
        problems += _duplicate_ids(train, test)
        has_images = (root / "data").is_dir()
        if not has_images and os.path.lexists(root / "data") and require_images is not False:
            # A link to nowhere, a link loop, a file: not "a caption-only dataset", which has no data/ at all.
            problems.append(Problem(str(root / "data"), f"{_kind(root / 'data')}, not a folder of images; remove it "
                                                        "for a caption-only dataset, or point it at the images"))
        elif require_images and not has_images:
            problems.append(Problem(str(root / "data"), "missing image folder; this experiment needs images"))
        if has_images and require_images is not False and check_images:
            for table in (train, test):
                if table is not None:
                    problems += _missing_images(root / "data", table)
        if problems:
            raise DataError(f"dataset {root} is invalid", problems)
        return cls(root, train, test)

    # -- views ---------------------------------------------------------------------------
    @property
    def has_images(self) -> bool:
        return (self.root / "data").is_dir()

    @property
    def n_train(self) -> int:
        return len(self.train)

    @property
    def n_test(self) -> int:
        return len(self.test) if self.test is not None else 0

    @property
    def image_ids(self) -> list[str]:
        return self.train.image_ids + (self.test.image_ids if self.test is not None else [])

    @property
    def captions(self) -> list[str]:
        return self.train.captions + (self.test.captions if self.test is not None else [])

    def image_path(self, image_id: str) -> Path:
        return self.root / "data" / image_id

    def where(self, row: int) -> str:
        """file:line of a combined row index, for error messages."""
        if row < self.n_train:
            return f"{self.train.path}:{self.train.lines[row]}"
        assert self.test is not None
        return f"{self.test.path}:{self.test.lines[row - self.n_train]}"

    @cached_property
    def targets(self) -> np.ndarray:
        """Multi-hot labels of the train.csv rows (n_train x 18)."""
        assert self.train.labels is not None
        return encode(self.train.labels)

    @cached_property
    def fingerprint(self) -> str:
        """Changes whenever a CSV or an image file changes (content of CSVs, size+mtime of images)."""
        digest = hashlib.sha256()
        for name in ("train.csv", "test.csv"):
            path = self.root / name
            if path.is_file():
                digest.update(name.encode())
                digest.update(path.read_bytes())
        digest.update(self.images_fingerprint.encode())
        return digest.hexdigest()[:16]

    @cached_property
    def images_fingerprint(self) -> str:
        digest = hashlib.sha256()
        folder = self.root / "data"
        if folder.is_dir():
            for image_id in self.image_ids:
                try:
                    st = os.stat(folder / image_id)
                except FileNotFoundError:
                    digest.update(f"{image_id}:missing".encode())
                    continue
                digest.update(f"{image_id}:{st.st_size}:{st.st_mtime_ns}".encode())
        return digest.hexdigest()[:16]

    def split(self, val_fraction: float = 0.2, seed: int = 42) -> Split:
        """Deterministic split: rows are ranked by a hash of (seed, ImageID), so the same seed
        gives the same split in every process and on every machine, whatever the row order."""
        keys = np.array(
            [int.from_bytes(hashlib.blake2b(f"{seed}:{i}".encode(), digest_size=8).digest(), "big")
             for i in self.train.image_ids],
            dtype=np.uint64,
        )
        order = np.argsort(keys, kind="stable")
        n_val = int(round(len(order) * val_fraction))
        return Split(train=np.sort(order[n_val:]), val=np.sort(order[:n_val]))

    def __repr__(self) -> str:
        return f"Dataset({self.root}, train={self.n_train}, test={self.n_test}, images={self.has_images})"


def _duplicate_ids(train: CsvTable, test: CsvTable | None) -> list[Problem]:
    problems = []
    seen: dict[str, str] = {}
    for table in (train, test):
        if table is None:
            continue
        for image_id, line in zip(table.image_ids, table.lines):
            where = f"{table.path}:{line}"
            if image_id in seen:
                problems.append(Problem(where, f"ImageID: duplicate {image_id!r} (first at {seen[image_id]})"))
            else:
                seen[image_id] = where
    return problems


def _missing_images(folder: Path, table: CsvTable) -> list[Problem]:
    """Every image listed but absent, and every one that is not a regular file (a FIFO would
    block the reader for ever, a device never ends, a link loop cannot be opened): named before
    anything reads them. One stat per image: 40,000 images take a fraction of a second."""
    present = set(os.listdir(folder))
    problems = []
    for image_id, line in zip(table.image_ids, table.lines):
        path = folder / image_id
        if image_id not in present:
            problems.append(Problem(f"{table.path}:{line}", f"ImageID: image file {path} not found"))
            continue
        try:
            regular = stat.S_ISREG(os.stat(path).st_mode)
        except OSError:
            regular = False
        if not regular:
            problems.append(Problem(f"{table.path}:{line}", f"ImageID: {path} is {_kind(path)}, not an image file"))
    return problems


def _kind(path: Path) -> str:
    """What a path that is not a regular file is, in words."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if os.path.islink(path):
            return "a symbolic link loop" if exc.errno == errno.ELOOP else "a symbolic link to nothing"
        return f"unreadable ({exc.strerror})"
    for test, name in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISDIR, "a folder"), (stat.S_ISREG, "a file")):
        if test(mode):
            return name
    return "a special file"
