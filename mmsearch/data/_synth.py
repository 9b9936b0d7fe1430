"""Demo dataset generator: a fair, fast, deterministic stand-in for COMP5329.

Design goals (each is what makes the demo a useful test bed for ablations):

* COCO-like label statistics: label 1 (person) in ~75% of rows, 1-4 labels per row, a long
  tail over the other 17 labels.
* A learnable visual signature per label (a coloured shape), drawn small, partly occluded or
  left out now and then, on a noisy background: images alone are informative but not enough.
* Captions built from per-label vocabularies with synonyms that mention only some labels and
  sometimes a wrong one, with the real file's quirks (commas, quotes, digits, punctuation, stop
  words, mixed case): captions alone are informative but not enough.

So image-only and caption-only models both beat the always-label-1 baseline and a fused model
beats both.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mmsearch._progress import progress
from mmsearch.data._csv import read_table, write_table
from mmsearch.data._labels import LABELS
from mmsearch.errors import DataError

VOCAB: dict[int, list[str]] = {
    1: ["person", "man", "woman", "boy", "girl", "child", "people", "guy", "lady", "player"],
    2: ["bicycle", "bike", "cyclist", "bicycles"],
    3: ["car", "sedan", "vehicle", "cars", "taxi"],
    4: ["motorcycle", "motorbike", "scooter", "motorcycles"],
    5: ["airplane", "plane", "jet", "aircraft", "airliner"],
    6: ["bus", "buses", "coach", "shuttle"],
    7: ["train", "locomotive", "railway", "trains", "tram"],
    8: ["truck", "lorry", "pickup", "trucks"],
    9: ["boat", "ship", "sailboat", "canoe", "boats"],
    10: ["traffic light", "stoplight", "signal", "traffic lights"],
    11: ["fire hydrant", "hydrant"],
    13: ["stop sign", "sign"],
    14: ["parking meter", "meter", "meters"],
    15: ["bench", "benches", "park bench", "seat"],
    16: ["bird", "birds", "pigeon", "seagull", "duck"],
    17: ["cat", "kitten", "cats", "kitty"],
    18: ["dog", "puppy", "dogs", "lab", "pup"],
    19: ["horse", "horses", "pony", "foal"],
}
ADJECTIVES = ["small", "large", "red", "white", "black", "old", "busy", "quiet", "sunny", "young", "big"]
VERBS = ["sitting", "standing", "walking", "parked", "waiting", "riding", "resting", "looking"]
PLACES = ["street", "park", "field", "beach", "city", "road", "yard", "station", "kitchen", "market"]
PREPOSITIONS = ["on", "in", "near", "next to", "by", "at", "across"]
NUMBERS = ["two", "three", "2", "3", "4", "a couple of"]

# label -> (shape, rgb); 6 shapes x 3 colour families give 18 distinct signatures.
SHAPES = ["disk", "square", "triangle", "ring", "cross", "bar"]
COLOURS = [(220, 40, 40), (40, 180, 60), (40, 80, 220)]
SIGNATURES = {label: (SHAPES[i % 6], COLOURS[i // 6]) for i, label in enumerate(LABELS)}

# Probability that a row has k labels (k = 1..4): mean ~1.6, close to the real 1.55.
N_LABELS_P = np.array([0.55, 0.30, 0.11, 0.04])
PERSON_P = 0.75
# Long tail over the other labels (Zipf-like, shuffled once so the tail isn't the id order).
_OTHER = [label for label in LABELS if label != 1]
_TAIL = 1.0 / np.arange(1, len(_OTHER) + 1) ** 0.9
_TAIL_P = _TAIL / _TAIL.sum()


@dataclass(frozen=True)
class SynthSpec:
    n_train: int = 2000
    n_test: int = 500
    image_size: int = 64
    seed: int = 0
    mention_p: float = 0.55  # a true label is named in the caption with this probability
    wrong_p: float = 0.12  # a wrong label is named with this probability
    draw_p: float = 0.85  # a true label's shape is drawn with this probability
    coco: bool = False  # photo-sized images (COCO_SIZES, ~160 KB JPEG) instead of small squares
    jobs: int | None = None  # processes rendering coco-sized images (None: every core)


# COCO's train2014 sizes, roughly: 640 px on the long side; landscape 4:3 most often, then
# 3:2 and 16:9, portraits, a few squares (weights sum to 1).
COCO_SIZES = ((640, 480, 0.50), (640, 427, 0.20), (640, 360, 0.05), (480, 640, 0.15), (427, 640, 0.05),
              (640, 640, 0.05))
COCO_QUALITY = 90
# Luminance grain: with the smooth background it puts a JPEG at ~160 KB, COCO's mean file size,
# so decoding costs what a real photo's does (a flat image decodes several times faster).
COCO_GRAIN = 30


def sample_labels(rng: np.random.Generator) -> list[int]:
    k = int(rng.choice(4, p=N_LABELS_P)) + 1
    labels: set[int] = set()
    if rng.random() < PERSON_P:
        labels.add(1)
    while len(labels) < k:
        labels.add(int(rng.choice(_OTHER, p=_TAIL_P)))
    return sorted(labels, key=LABELS.index)


def render_image(labels: list[int], size: int, rng: np.random.Generator, draw_p: float) -> np.ndarray:
    """Noisy background plus one coloured shape per (drawn) label."""
    base = rng.integers(60, 200, size=3)
    img = base + rng.normal(0, 28, size=(size, size, 3))
    yy, xx = np.mgrid[0:size, 0:size]
    for label in labels:
        if rng.random() > draw_p:
            continue
        shape, colour = SIGNATURES[label]
        r = rng.uniform(0.14, 0.26) * size
        cy, cx = rng.uniform(r, size - r, size=2)
        dy, dx = yy - cy, xx - cx
        jitter = rng.normal(0, 18, size=3)
        img[_shape_mask(shape, dy, dx, r)] = np.asarray(colour) + jitter
    return np.clip(img, 0, 255).astype(np.uint8)


def make_caption(labels: list[int], rng: np.random.Generator, mention_p: float, wrong_p: float) -> str:
    """A caption naming some true labels (and sometimes a wrong one), with real-file quirks."""
    named = [label for label in labels if rng.random() < mention_p]
    if rng.random() < wrong_p:
        named.append(int(rng.choice([label for label in LABELS if label not in labels])))
    rng.shuffle(named)
    words = [str(rng.choice(VOCAB[label])) for label in named]
    place = str(rng.choice(PLACES))
    adj = str(rng.choice(ADJECTIVES))
    if not words:
        parts = [f"a {adj} {place}", f"with {rng.choice(['nothing', 'something', 'lots'])} going on"]
    else:
        subject = words[0]
        if rng.random() < 0.2:
            subject = f"{rng.choice(NUMBERS)} {subject}"
        parts = [f"a {adj} {subject} {rng.choice(VERBS)} {rng.choice(PREPOSITIONS)} the {place}"]
        parts += [f"{rng.choice(['and', 'with', 'beside'])} a {w}" for w in words[1:]]
    caption = " ".join(parts)
    roll = rng.random()
    if roll < 0.15:
        caption = caption.replace(" the ", ", the ", 1)
    elif roll < 0.22:
        caption = f'"{caption}" she said'
    elif roll < 0.28:
        caption = caption + f" at {rng.integers(1, 12)} o'clock"
    caption = caption[0].upper() + caption[1:] if rng.random() < 0.7 else caption
    return caption + str(rng.choice([".", ".", "", "!", " ."]))


def _shape_mask(shape: str, dy: np.ndarray, dx: np.ndarray, r: float) -> np.ndarray:
    if shape == "disk":
        return dy**2 + dx**2 <= r**2
    if shape == "square":
        return (np.abs(dy) <= r * 0.8) & (np.abs(dx) <= r * 0.8)
    if shape == "triangle":
        return (dy <= r * 0.8) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.55)
    if shape == "ring":
        return (dy**2 + dx**2 <= r**2) & (dy**2 + dx**2 >= (0.55 * r) ** 2)
    if shape == "cross":
        return ((np.abs(dy) <= r * 0.3) | (np.abs(dx) <= r * 0.3)) & (np.abs(dy) <= r) & (np.abs(dx) <= r)
    return (np.abs(dy) <= r * 0.35) & (np.abs(dx) <= r * 1.2)  # bar


def render_photo(labels: list[int], seed: int, index: int, draw_p: float) -> bytes:
    """A COCO-sized JPEG for one row: a smooth colour field, one shape per drawn label (the same
    signatures as the demo's), luminance grain. Seeded by (seed, row), so rows render in any
    process, in any order, to the same bytes."""
    rng = np.random.default_rng([seed, index])
    sizes = np.array([p for _, _, p in COCO_SIZES])
    w, h, _ = COCO_SIZES[int(rng.choice(len(COCO_SIZES), p=sizes / sizes.sum()))]
    low = rng.integers(40, 220, size=(h // 32 + 1, w // 32 + 1, 3)).astype(np.uint8)
    img = np.asarray(Image.fromarray(low).resize((w, h), Image.Resampling.BICUBIC), dtype=np.int16)
    side = min(w, h)
    for label in labels:
        if rng.random() > draw_p:
            continue
        shape, colour = SIGNATURES[label]
        r = rng.uniform(0.14, 0.26) * side
        reach = int(r * 1.2) + 1
        cy, cx = rng.uniform(reach, h - reach), rng.uniform(reach, w - reach)
        y0, x0 = int(cy) - reach, int(cx) - reach
        yy, xx = np.mgrid[y0:y0 + 2 * reach, x0:x0 + 2 * reach]
        mask = _shape_mask(shape, yy - cy, xx - cx, r)
        img[y0:y0 + 2 * reach, x0:x0 + 2 * reach][mask] = np.asarray(colour) + rng.normal(0, 18, size=3).astype(np.int16)
    img += rng.integers(-COCO_GRAIN, COCO_GRAIN + 1, size=(h, w, 1), dtype=np.int16)
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=COCO_QUALITY)
    return buf.getvalue()


def _render_photos(folder: str, rows: list[tuple[str, list[int], int]], seed: int, draw_p: float) -> int:
    """One process's share: render and write these rows' images; bytes written."""
    written = 0
    for image_id, labels, index in rows:
        data = render_photo(labels, seed, index, draw_p)
        (Path(folder) / image_id).write_bytes(data)
        written += len(data)
    return written


def _write_photos(folder: Path, images: Sequence[tuple[str, list[int]]], spec: SynthSpec) -> None:
    """Every core renders: rows go out in chunks of 64, so the progress bar moves and a slow
    chunk does not hold the rest."""
    from concurrent.futures import ProcessPoolExecutor

    rows = [(image_id, labels, i) for i, (image_id, labels) in enumerate(images)]
    chunks = [rows[i:i + 64] for i in range(0, len(rows), 64)]
    jobs = spec.jobs or len(os.sched_getaffinity(0))
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_render_photos, str(folder), chunk, spec.seed, spec.draw_p) for chunk in chunks]
        done = progress((f.result() for f in futures), total=len(futures),
                        what=f"rendering {len(rows)} COCO-sized images ({jobs} processes, 64 a chunk)", unit="chunk")
        for _ in done:
            pass


def synthesize(out: Path, spec: SynthSpec = SynthSpec(), from_csv: Path | None = None) -> Path:
    """Write a dataset folder; with ``from_csv`` the rows' labels and captions are kept and only
    images are rendered for them (a multimodal dataset with real captions)."""
    rng = np.random.default_rng(spec.seed)
    out.mkdir(parents=True, exist_ok=True)
    (out / "data").mkdir(exist_ok=True)
    if from_csv is not None:
        table, problems = read_table(Path(from_csv), ("ImageID", "Labels", "Caption"))
        if problems:
            raise DataError(f"--from-csv {from_csv} is invalid", problems)
        assert table.labels is not None
        train_ids, train_labels, train_captions = table.image_ids, table.labels, table.captions
        test_rows: list[tuple[str, list[int], str]] = []
    else:
        train_labels = [sample_labels(rng) for _ in range(spec.n_train)]
        train_ids = [f"{i}.jpg" for i in range(spec.n_train)]
        train_captions = [make_caption(ls, rng, spec.mention_p, spec.wrong_p) for ls in train_labels]
        test_rows = []
        for j in range(spec.n_test):
            labels = sample_labels(rng)
            test_rows.append((f"{spec.n_train + j}.jpg", labels, make_caption(labels, rng, spec.mention_p, spec.wrong_p)))
    images = [*zip(train_ids, train_labels), *((image_id, labels) for image_id, labels, _ in test_rows)]
    if spec.coco:
        _write_photos(out / "data", images, spec)
    else:
        for image_id, labels in progress(images, total=len(images), what="rendering demo images", unit="img"):
            _save(out / "data" / image_id, render_image(labels, spec.image_size, rng, spec.draw_p))
    _write_csvs(out, list(zip(train_ids, train_labels, train_captions)), test_rows)
    return out


def _save(path: Path, pixels: np.ndarray) -> None:
    Image.fromarray(pixels).save(path, format="JPEG", quality=90)


def _write_csvs(out: Path, train: Sequence[tuple[str, list[int], str]], test: Sequence[tuple[str, list[int], str]]
                ) -> None:
    """train.csv, and test.csv with its answers in test_labels.csv: Kaggle keeps them hidden;
    here they let a final model's predictions be scored. Rows are (ImageID, labels, caption)."""
    write_table(out / "train.csv", [r[0] for r in train], [r[2] for r in train], [r[1] for r in train])
    if test:
        write_table(out / "test.csv", [r[0] for r in test], [r[2] for r in test])
        write_table(out / "test_labels.csv", [r[0] for r in test], [r[2] for r in test], [r[1] for r in test])


def holdout(source: Path, out: Path, fraction: float = 0.2, seed: int = 2026) -> tuple[int, int]:
    """Split a labelled train.csv into train.csv + test.csv + test_labels.csv (the answers), so a
    final model can be scored on rows no sweep or early stopping has seen. Images are linked."""
    from mmsearch.data._dataset import Dataset

    ds = Dataset.open(source, require_images=False)
    split = ds.split(fraction, seed)
    out.mkdir(parents=True, exist_ok=True)
    t = ds.train
    assert t.labels is not None
    rows = list(zip(t.image_ids, t.labels, t.captions))
    _write_csvs(out, [rows[i] for i in split.train], [rows[i] for i in split.val])
    if ds.has_images and not (out / "data").exists():
        (out / "data").symlink_to((Path(source) / "data").resolve())
    return len(split.train), len(split.val)
