from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmsearch.data import Dataset, load_images
from mmsearch.errors import DataError


def _dataset(tmp_path: Path, body: str, images: list[str] | None = None, header: str = "ImageID,Labels,Caption") -> Path:
    (tmp_path / "train.csv").write_text(header + "\n" + body)
    if images is not None:
        (tmp_path / "data").mkdir()
        for name in images:
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "data" / name)
    return tmp_path


def _message(tmp_path: Path) -> str:
    with pytest.raises(DataError) as err:
        Dataset.open(tmp_path)
    return str(err.value)


def test_unknown_label(tmp_path: Path) -> None:
    msg = _message(_dataset(tmp_path, "0.jpg,1 12,a cat\n"))
    assert "train.csv:2" in msg and "unknown label 12" in msg and "1..19 without 12" in msg


def test_non_integer_label(tmp_path: Path) -> None:
    msg = _message(_dataset(tmp_path, "0.jpg,1 x,a cat\n"))
    assert "train.csv:2" in msg and "'x' is not an integer" in msg


def test_empty_label_list(tmp_path: Path) -> None:
    msg = _message(_dataset(tmp_path, "0.jpg,1,ok\n1.jpg,,a cat\n"))
    assert "train.csv:3" in msg and "empty label list" in msg


def test_duplicate_image_id(tmp_path: Path) -> None:
    msg = _message(_dataset(tmp_path, "0.jpg,1,a\n0.jpg,2,b\n"))
    assert "train.csv:3" in msg and "duplicate '0.jpg'" in msg and "train.csv:2" in msg


def test_missing_image_file(tmp_path: Path) -> None:
    msg = _message(_dataset(tmp_path, "0.jpg,1,a\n1.jpg,2,b\n", images=["0.jpg"]))
    assert "train.csv:3" in msg and "1.jpg" in msg and "not found" in msg


def test_missing_column(tmp_path: Path) -> None:
    msg = _message(_dataset(tmp_path, "0.jpg,a cat\n", header="ImageID,Caption"))
    assert "train.csv:1" in msg and "missing column(s) Labels" in msg


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        Dataset.open(_dataset(tmp_path, "0.jpg,1 12,a\n0.jpg,,b\n2.jpg,z,c\n"))
    assert len(err.value.problems) == 4


def test_corrupt_image_reported_with_line(tmp_path: Path) -> None:
    _dataset(tmp_path, "0.jpg,1,a\n1.jpg,2,b\n", images=["0.jpg", "1.jpg"])
    (tmp_path / "data" / "1.jpg").write_bytes(b"not a jpeg at all")
    ds = Dataset.open(tmp_path)
    with pytest.raises(DataError) as err:
        load_images(ds, 16)
    assert "train.csv:3" in str(err.value) and "cannot decode" in str(err.value) and "1.jpg" in str(err.value)


def test_caption_only_dataset_is_valid(tmp_path: Path) -> None:
    ds = Dataset.open(_dataset(tmp_path, "0.jpg,1,a cat\n"))
    assert not ds.has_images and ds.n_train == 1
