import hashlib
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from mmsearch.data import AUGMENTATION_SETS, TRANSFORMS, Dataset, SynthSpec, build_transform, load_images, synthesize
from mmsearch.data._augment import IMAGENET_MEAN, IMAGENET_STD
from mmsearch.errors import UnknownNameError

from conftest import COCO_MINI, needs_real_data


def test_image_cache_decodes_once_and_invalidates_on_change(tmp_path: Path) -> None:
    root = synthesize(tmp_path / "d", SynthSpec(n_train=30, n_test=5, image_size=24, seed=3))
    events: Counter[str] = Counter()
    first = load_images(Dataset.open(root), 16, events)
    assert events["decode:images"] == 35 and events["build:images"] == 1
    again = load_images(Dataset.open(root), 16, events)  # a new Dataset object, as another run would have
    assert events["decode:images"] == 35 and events["hit:images"] == 1
    assert np.array_equal(np.asarray(first), np.asarray(again)) and first.shape == (35, 16, 16, 3)
    load_images(Dataset.open(root), 20, events)  # another size is another cache
    assert events["decode:images"] == 70
    shutil.copy(root / "data" / "1.jpg", root / "data" / "0.jpg")
    os.utime(root / "data" / "0.jpg", ns=(1, 1))
    load_images(Dataset.open(root), 16, events)  # a changed image invalidates the cache
    assert events["decode:images"] == 105


@needs_real_data
def test_real_coco_images_decode() -> None:
    pixels = load_images(Dataset.open(COCO_MINI), 32)
    assert pixels.shape == (97, 32, 32, 3) and pixels.std() > 10


def _copies(n: int = 16, size: int = 32) -> torch.Tensor:
    """One random image, ``n`` times: a batch whose rows differ only by their augmentation."""
    img = torch.randint(0, 255, (1, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    return img.expand(n, -1, -1, -1).contiguous()


def test_every_set_runs_on_whole_batches_and_evaluation_is_torchvisions_normalisation() -> None:
    from torchvision.transforms import v2

    batch = _copies()
    for name in AUGMENTATION_SETS.names():
        out = build_transform(name, 32, train=True)(batch, torch.Generator().manual_seed(0))
        assert out.shape == (16, 3, 32, 32) and out.dtype == torch.float32 and torch.isfinite(out).all()
    final = AUGMENTATION_SETS.get("paper-final")
    assert final == ("random_resized_crop", "horizontal_flip", "vertical_flip", "normalize")
    evaluation = build_transform("paper-final", 32, train=False)(batch)
    per_image = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    # Bit for bit what the per-image torchvision path gave: cached features keep their meaning.
    assert torch.equal(evaluation, torch.stack([per_image(img) for img in batch]))


@pytest.mark.parametrize("transform", ["random_crop", "random_resized_crop", "horizontal_flip", "vertical_flip",
                                       "rotation", "erasing", "color_jitter", "affine"])
def test_each_image_of_a_batch_draws_its_own_parameters(transform: str) -> None:
    batch = _copies().float() / 255
    out = TRANSFORMS.get(transform)(32)(batch, torch.Generator().manual_seed(0))
    distinct = {tuple(row.flatten().tolist()) for row in out}
    assert len(distinct) >= 2, f"{transform}: 16 copies of one image all came out the same"
    again = TRANSFORMS.get(transform)(32)(batch, torch.Generator().manual_seed(0))
    assert torch.equal(out, again), "the same seed gives the same draws"


def test_flips_and_crops_move_pixels_without_changing_them() -> None:
    batch = _copies().float() / 255
    g = torch.Generator().manual_seed(3)
    flipped = TRANSFORMS.get("horizontal_flip")(32)(batch, g)
    mirrored = [torch.equal(row, batch[0].flip(-1)) for row in flipped]
    kept = [torch.equal(row, batch[0]) for row in flipped]
    assert all(m or k for m, k in zip(mirrored, kept)) and any(mirrored) and any(kept)
    cropped = TRANSFORMS.get("random_crop")(32)(batch, g)
    padded = torch.nn.functional.pad(batch[:1], (4, 4, 4, 4), mode="reflect")[0]
    windows = {(dy, dx) for dy in range(9) for dx in range(9)}
    for row in cropped:  # every crop is an exact 32 x 32 window of the reflect-padded image
        assert any(torch.equal(row, padded[:, dy:dy + 32, dx:dx + 32]) for dy, dx in windows)


def test_unknown_augmentation_lists_registered() -> None:
    try:
        AUGMENTATION_SETS.get("fancy")
    except UnknownNameError as exc:
        assert "paper-final" in str(exc) and "none" in str(exc)
    else:
        raise AssertionError("no error")


def _digest(path: Path) -> str:
    return hashlib.sha256(b"".join((path / n).read_bytes() for n in ("train.csv", "test.csv", "data/3.jpg"))).hexdigest()


def test_synth_is_deterministic_and_coco_like(tmp_path: Path) -> None:
    spec = SynthSpec(n_train=1500, n_test=10, image_size=32, seed=5)
    a, b = synthesize(tmp_path / "a", spec), synthesize(tmp_path / "b", spec)
    assert _digest(a) == _digest(b)
    assert _digest(synthesize(tmp_path / "c", SynthSpec(n_train=1500, n_test=10, image_size=32, seed=6))) != _digest(a)
    ds = Dataset.open(a)
    t = ds.targets
    assert 0.70 < t[:, 0].mean() < 0.80
    assert t.sum(1).min() >= 1 and t.sum(1).max() <= 4 and 1.4 < t.sum(1).mean() < 1.9
    caps = ds.train.captions
    assert any("," in c for c in caps) and any('"' in c for c in caps) and any(any(ch.isdigit() for ch in c) for c in caps)
    assert any(c[0].isupper() for c in caps) and any(c[0].islower() for c in caps)
    assert (a / "test_labels.csv").exists() and ds.n_test == 10


def test_coco_sized_synth_renders_photo_sized_jpegs_the_same_in_any_number_of_processes(tmp_path: Path) -> None:
    """The paper's scale needs photo-sized images fast: rows render in any process to the same
    bytes, at COCO's sizes and about its file size, and decode at 224 px like a real photo."""
    from PIL import Image

    from mmsearch.data._synth import COCO_SIZES

    one = synthesize(tmp_path / "one", SynthSpec(n_train=10, n_test=3, seed=3, coco=True, jobs=1))
    two = synthesize(tmp_path / "two", SynthSpec(n_train=10, n_test=3, seed=3, coco=True, jobs=2))
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert len(files) == 3 + 13 and all((one / f).read_bytes() == (two / f).read_bytes() for f in files)
    ds = Dataset.open(one)
    assert ds.n_train == 10 and ds.n_test == 3
    sizes = {(w, h) for w, h, _ in COCO_SIZES}
    for image_id in ds.image_ids:
        with Image.open(one / "data" / image_id) as img:
            assert img.format == "JPEG" and img.size in sizes, (image_id, img.size)
    mean_kb = np.mean([(one / "data" / i).stat().st_size for i in ds.image_ids]) / 1024
    assert 80 < mean_kb < 260, mean_kb  # COCO's JPEGs average ~160 KB: decoding costs what a photo's does
    pixels = load_images(ds, 224)
    assert pixels.shape == (13, 224, 224, 3) and pixels.std() > 20


def test_progress_without_a_terminal_says_how_far_it_got_while_it_runs(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Piped to a file (CI, a log), a long step still reports between its start and end."""
    import time

    from mmsearch import _progress

    monkeypatch.setenv(_progress.PROGRESS_ENV, "0")
    monkeypatch.setattr(_progress, "QUIET_LOG_EVERY_S", 0.05)
    caplog.set_level("INFO", logger="mmsearch.progress")
    for _ in _progress.progress(range(8), total=8, what="decoding images", unit="img"):
        time.sleep(0.03)
    lines = [r.getMessage() for r in caplog.records]
    during = [line for line in lines if "/8 img after" in line]
    assert during and all("left" in line for line in during), lines
    assert int(during[0].split(": ")[1].split("/")[0]) < 8


@needs_real_data
def test_synth_from_real_csv_keeps_captions(tmp_path: Path) -> None:
    out = synthesize(tmp_path / "m", SynthSpec(image_size=16), from_csv=COCO_MINI / "train.csv")
    ds, orig = Dataset.open(out), Dataset.open(COCO_MINI)
    assert ds.train.captions == orig.train.captions and ds.train.labels == orig.train.labels
    assert len(os.listdir(out / "data")) == 97


def test_holdout_keeps_every_row_once(demo_dir: Path, tmp_path: Path) -> None:
    from mmsearch.data import holdout, read_table

    kept, held = holdout(demo_dir, tmp_path / "h", fraction=0.2, seed=9)
    assert (kept, held) == (1200, 300)
    train = Dataset.open(tmp_path / "h")
    answers, problems = read_table(tmp_path / "h" / "test_labels.csv", ("ImageID", "Labels", "Caption"))
    assert not problems and answers.image_ids == train.test.image_ids and answers.captions == train.test.captions
    original = Dataset.open(demo_dir)
    by_id = dict(zip(original.train.image_ids, original.train.labels))
    assert sorted(train.train.image_ids + answers.image_ids) == sorted(original.train.image_ids)
    assert all(by_id[i] == labels for i, labels in zip(answers.image_ids, answers.labels))
    assert train.has_images  # images are linked, not copied
