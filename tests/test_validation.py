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


# A train.csv body (and the images present, if any) -> what the one error must say.
BAD_DATASETS = {
    "unknown label": ("0.jpg,1 12,a cat\n", None, ["train.csv:2", "unknown label 12", "1..19 without 12"]),
    "non-integer label": ("0.jpg,1 x,a cat\n", None, ["train.csv:2", "'x' is not an integer"]),
    "empty label list": ("0.jpg,1,ok\n1.jpg,,a cat\n", None, ["train.csv:3", "empty label list"]),
    "duplicate ImageID": ("0.jpg,1,a\n0.jpg,2,b\n", None, ["train.csv:3", "duplicate '0.jpg'", "train.csv:2"]),
    "missing image file": ("0.jpg,1,a\n1.jpg,2,b\n", ["0.jpg"], ["train.csv:3", "1.jpg", "not found"]),
}


@pytest.mark.parametrize("name", list(BAD_DATASETS))
def test_a_bad_dataset_names_the_line_and_the_problem(name: str, tmp_path: Path) -> None:
    body, images, needles = BAD_DATASETS[name]
    with pytest.raises(DataError) as err:
        Dataset.open(_dataset(tmp_path, body, images))
    assert all(needle in str(err.value) for needle in needles), str(err.value)


def test_missing_column(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        Dataset.open(_dataset(tmp_path, "0.jpg,a cat\n", header="ImageID,Caption"))
    assert "train.csv:1" in str(err.value) and "missing column(s) Labels" in str(err.value)


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        Dataset.open(_dataset(tmp_path, "0.jpg,1 12,a\n0.jpg,,b\n2.jpg,z,c\n"))
    assert len(err.value.problems) == 4


def _rows(n: int) -> str:
    return "".join(f"{i}.jpg,{1 + i % 2},caption {i}\n" for i in range(n))  # the 10 rows a dataset needs at least


def test_corrupt_image_reported_with_line(tmp_path: Path) -> None:
    _dataset(tmp_path, _rows(10), images=[f"{i}.jpg" for i in range(10)])
    (tmp_path / "data" / "1.jpg").write_bytes(b"not a jpeg at all")
    ds = Dataset.open(tmp_path)
    with pytest.raises(DataError) as err:
        load_images(ds, 16)
    assert "train.csv:3" in str(err.value) and "cannot decode" in str(err.value) and "1.jpg" in str(err.value)


def test_caption_only_dataset_is_valid(tmp_path: Path) -> None:
    ds = Dataset.open(_dataset(tmp_path, _rows(10)))
    assert not ds.has_images and ds.n_train == 10
