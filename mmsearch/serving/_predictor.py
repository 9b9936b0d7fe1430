"""Inference from an exported bundle, with no training code on the import path.

A bundle is a folder: ``bundle.json`` (stages, resolved config, preprocessing, vocabulary,
label order, thresholds, fusion feature scaling) and one state dict per network. An ensemble
bundle (format 2) holds one such folder per member under ``members/`` and the thresholds
tuned on the members' averaged validation probabilities. Images are decoded and resized
exactly as the training image cache does, so served and trained inputs are the same pixels.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mmsearch.config import ExperimentConfig, PreprocessConfig
from mmsearch.data import LABELS, MAX_CAPTION_CHARS, binarize, build_transform, decode_image, image_input
from mmsearch.errors import MmsearchError, Problem, ValidationError
from mmsearch.models import build_networks
from mmsearch.runtime import Runtime, runtime_for
from mmsearch.text import Preprocessor, Vocabulary

BUNDLE_FILE = "bundle.json"
IMAGE_COLUMN = "image_path"
IMAGE_DATA_COLUMN = "image_base64"  # the image file's bytes inline, base64: a client with no access to the server's disk
IMAGE_COLUMNS = (IMAGE_COLUMN, IMAGE_DATA_COLUMN)
NEEDS_IMAGES = "needs_images"  # key of the pyfunc model's metadata: does predict need IMAGE_COLUMN?


class InputError(ValidationError):
    """Rows a model cannot predict: every bad row is listed with its reason; ``rows`` holds each
    problem's row position in the input frame (a caller maps it to a file line)."""

    def __init__(self, title: str, problems: list[Problem], rows: list[int] | None = None) -> None:
        super().__init__(title, problems)
        self.rows = rows or []


@dataclass
class Bundle:
    folder: Path
    meta: dict[str, Any]

    @classmethod
    def load(cls, folder: str | Path) -> Bundle:
        folder = Path(folder)
        return cls(folder, json.loads((folder / BUNDLE_FILE).read_text()))

    @property
    def stages(self) -> list[str]:
        return list(self.meta["stages"])

    @property
    def needs_images(self) -> bool:
        return "image" in self.stages

    @property
    def members(self) -> list[Bundle]:
        """The pipelines whose probabilities are averaged: the bundle itself, or its members."""
        return [Bundle.load(self.folder / m) for m in self.meta["members"]] if "members" in self.meta else [self]


SERVE_IMAGE_ROOT_ENV = "MMSEARCH_SERVE_IMAGE_ROOT"


@dataclass(frozen=True)
class ImageFiles:
    """Which files ``image_path`` may name. On the machine of the user who runs ``mmsearch
    predict``, any of theirs (``local``). In a scoring server, a client's path is a request to
    read the server's disk: none by default (images come inline), else only regular files under
    ``root``, and every refusal reads the same whether or not the file exists (no oracle)."""

    local: bool = True
    root: Path | None = None

    @classmethod
    def served(cls, root: str | None) -> ImageFiles:
        return cls(local=False, root=Path(root).resolve() if root else None)

    def open(self, path: str) -> Path | str:
        """The file to read, or what is wrong (a string)."""
        if self.local:
            if Path(path).is_file():  # a FIFO or a device is not a file: refused, never opened
                return Path(path)
            return (f"{IMAGE_COLUMN}: image file {path!r} not found on the machine that predicts (send the image "
                    f"inline as {IMAGE_DATA_COLUMN} instead)")
        if self.root is None:
            return (f"{IMAGE_COLUMN}: this model is served without an image folder, so it reads no file a request "
                    f"names: send the image inline as {IMAGE_DATA_COLUMN} (the file's bytes, base64), or serve it with "
                    f"{SERVE_IMAGE_ROOT_ENV}=FOLDER to allow image_path under FOLDER")
        refused = (f"{IMAGE_COLUMN} {path!r}: not a file this server may read (it reads regular files under its "
                   f"image folder only); send the image inline as {IMAGE_DATA_COLUMN}")
        try:
            real = (self.root / path).resolve(strict=True)  # an absolute path stays itself; links are followed
            if not real.is_relative_to(self.root) or not stat.S_ISREG(real.stat().st_mode):
                return refused
        except (OSError, RuntimeError, ValueError):  # missing, unreadable, a link loop, a NUL byte
            return refused
        return real


class Predictor:
    """Probabilities and label sets for a DataFrame of ImageID, Caption (and image paths),
    averaged over the bundle's members when it is an ensemble."""

    def __init__(self, bundle: Bundle, batch_size: int = 256, device: str = "cpu",
                 image_files: ImageFiles = ImageFiles()) -> None:
        self.image_files = image_files
        """``device``: where the networks run (a served model on CPU by default, whatever device
        trained it); the precision is the one the model was trained with."""
        self.bundle = bundle
        if tuple(bundle.meta["labels"]) != LABELS:
            raise MmsearchError(f"bundle label order {bundle.meta['labels']} differs from this mmsearch's {list(LABELS)}")
        self.batch_size = batch_size
        self.thresholds = np.asarray(bundle.meta["thresholds"], dtype=np.float32)
        self.pipelines = [_Pipeline(member, device) for member in bundle.members]

    # -- input checks ---------------------------------------------------------------------
    def check(self, frame: pd.DataFrame) -> list[Path | bytes | str]:
        """Every row the model cannot predict, at once. An image model takes each row's image as
        a file path on this machine (``image_path``) or inline (``image_base64``); a caption-only
        model needs neither. Returns each row's image (a file or its bytes; empty for a
        caption-only model), decoded from base64 once."""
        required = ["ImageID", "Caption"]
        missing = [c for c in required if c not in frame.columns]
        if self.bundle.needs_images and not any(c in frame.columns for c in IMAGE_COLUMNS):
            missing.append(f"{IMAGE_COLUMN} or {IMAGE_DATA_COLUMN}")
        if missing:
            need = required + ([f"{IMAGE_COLUMN} or {IMAGE_DATA_COLUMN}"] if self.bundle.needs_images else [])
            raise InputError("wrong input columns", [Problem(
                "input", f"missing column(s) {', '.join(missing)}; got {list(frame.columns)}, need {need}")])
        problems, rows = [], []  # rows: each problem's position, which a caller maps to a file line
        images = _image_sources(frame, self.image_files) if self.bundle.needs_images else []
        for pos, row in enumerate(frame.itertuples(index=False)):
            where = f"row {pos} (ImageID {row.ImageID!r})"
            caption = row.Caption
            if not isinstance(caption, str) or not caption.strip():
                problems.append(Problem(where, f"Caption: empty caption {caption!r}"))
                rows.append(pos)
            elif len(caption) > MAX_CAPTION_CHARS:
                problems.append(Problem(where, f"Caption: {len(caption):,} characters; a caption is at most "
                                               f"{MAX_CAPTION_CHARS:,}"))
                rows.append(pos)
            if images and isinstance(images[pos], str):
                problems.append(Problem(where, images[pos]))
                rows.append(pos)
        if problems:
            raise InputError("rows the model cannot predict", problems, rows)
        return images

    # -- prediction -------------------------------------------------------------------------
    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        images = self.check(frame)
        captions, ids = list(frame["Caption"]), list(frame["ImageID"])
        paths = images if self.bundle.needs_images else None
        out, problems = [], []
        for start in range(0, len(frame), self.batch_size):
            sl = slice(start, start + self.batch_size)
            batch = _Batch(captions[sl], paths[sl] if paths is not None else None)
            out.append(np.mean([p.predict_batch(batch) for p in self.pipelines], axis=0))
            problems += [(start + i, Problem(f"row {start + i} (ImageID {ids[start + i]!r})", message))
                         for i, message in batch.problems]
        if problems:  # every undecodable image at once, and no prediction for any row
            raise InputError("rows the model cannot predict", [p for _, p in problems], [row for row, _ in problems])
        return np.concatenate(out) if out else np.zeros((0, len(LABELS)), np.float32)

    def predict_labels(self, frame: pd.DataFrame) -> list[list[int]]:
        pred = binarize(self.predict_proba(frame), self.thresholds)  # every image gets at least one label
        return [[LABELS[j] for j in np.flatnonzero(row)] for row in pred]

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        labels = self.predict_labels(frame)
        return pd.DataFrame({"ImageID": list(frame["ImageID"]), "Labels": [" ".join(map(str, ls)) for ls in labels]})


def _image_sources(frame: pd.DataFrame, files: ImageFiles) -> list[Path | bytes | str]:
    """Each row's image: a file (``image_path``), its bytes (``image_base64``, which wins when a
    row has both) or, as a string, what is wrong with the row's image."""
    paths = frame[IMAGE_COLUMN] if IMAGE_COLUMN in frame.columns else [None] * len(frame)
    inline = frame[IMAGE_DATA_COLUMN] if IMAGE_DATA_COLUMN in frame.columns else [None] * len(frame)
    out: list[Path | bytes | str] = []
    for path, data in zip(paths, inline):
        if isinstance(data, str) and data.strip():
            try:
                out.append(base64.b64decode(data, validate=True))
            except (binascii.Error, ValueError) as exc:
                out.append(f"{IMAGE_DATA_COLUMN}: not base64 ({exc}); send the image file's bytes, e.g. "
                           "`base64 -w0 FILE`")
        elif isinstance(path, str) and path:
            out.append(files.open(path))
        else:
            out.append(f"no image: give {IMAGE_COLUMN} (a file on the machine that predicts) or {IMAGE_DATA_COLUMN}")
    return out


class _Batch:
    """One batch of checked input. Its captions are tokenised and its images decoded once, however
    many ensemble members ask (members share their preprocessing and image size). An image that
    cannot be decoded is recorded in ``problems`` (its pixels stay zero)."""

    def __init__(self, captions: list[str], paths: list[Path | bytes | str] | None) -> None:
        self.captions, self.paths = captions, paths
        self.problems: list[tuple[int, str]] = []
        self._tokens: dict[PreprocessConfig, list[list[str]]] = {}
        self._pixels: dict[int, np.ndarray] = {}

    def tokens(self, preprocessor: Preprocessor) -> list[list[str]]:
        if preprocessor.config not in self._tokens:
            self._tokens[preprocessor.config] = preprocessor.many(self.captions)
        return self._tokens[preprocessor.config]

    def pixels(self, size: int) -> np.ndarray:
        """uint8 N x H x W x 3, decoded and resized as the training image cache does."""
        assert self.paths is not None
        if size not in self._pixels:
            out = np.zeros((len(self.paths), size, size, 3), np.uint8)
            for i, source in enumerate(self.paths):
                try:
                    out[i] = decode_image(io.BytesIO(source) if isinstance(source, bytes) else Path(source), size)
                except Exception as exc:  # PIL raises many types for corrupt files
                    what = (f"{IMAGE_DATA_COLUMN}: cannot decode its {len(source):,} bytes" if isinstance(source, bytes)
                            else f"{IMAGE_COLUMN}: cannot decode {source}")
                    if not any(row == i for row, _ in self.problems):
                        self.problems.append((i, f"{what} ({type(exc).__name__}: {exc})"))
            self._pixels[size] = out
        return self._pixels[size]


class _Pipeline:
    """One trained set of networks (a format-1 bundle): a checked batch in, probabilities out."""

    def __init__(self, bundle: Bundle, device: str = "cpu") -> None:
        self.bundle = bundle
        meta = bundle.meta
        cfg = ExperimentConfig.model_validate(meta["config"])
        self.runtime: Runtime = runtime_for(cfg.run.model_copy(update={"device": device}))
        self.preprocessor = Preprocessor(cfg.text.preprocess)
        self.vocab = Vocabulary(meta["vocab"])
        self.seq_len = cfg.text.seq_len
        self.image_size = cfg.data.image_size
        mean = np.asarray(meta.get("feature_mean", []), np.float32)
        # pretrained=False: the exported state dicts hold every weight, nothing is downloaded.
        nets = build_networks(cfg, bundle.stages, vocab_size=len(self.vocab), embedding_dim=int(meta["embedding_dim"]),
                              fusion_inputs=len(mean), pretrained=False)
        for stage, net in nets.items():
            net.load_state_dict(torch.load(bundle.folder / f"{stage}.pt", map_location="cpu", weights_only=True))
            self.runtime.prepare(net).eval()
        self.text, self.image, self.fusion = nets["text"], nets.get("image"), nets.get("fusion")
        if self.image is not None:
            self.transform = build_transform(cfg.image.augmentation, self.image_size, train=False)
        if self.fusion is not None:
            self.mean, self.std = mean, np.asarray(meta["feature_std"], np.float32)

    @torch.inference_mode()
    def predict_batch(self, batch: _Batch) -> np.ndarray:
        run = self.runtime
        ids, lengths = self.vocab.encode(batch.tokens(self.preprocessor), self.seq_len)
        ids_t, len_t = run.to_device(torch.from_numpy(ids)), torch.from_numpy(lengths)
        with run.autocast():
            if self.image is None:
                return torch.sigmoid(self.text(ids_t, len_t).float()).cpu().numpy()
            # The image path of training's feature extraction (the same function), so served
            # features equal the cached ones bit for bit on the same device and precision.
            pixels = image_input(torch.from_numpy(batch.pixels(self.image_size)), self.transform, run)
            if self.fusion is None:
                return torch.sigmoid(self.image(pixels).float()).cpu().numpy()
            feats = torch.cat([self.image.features(pixels).float(), self.text.features(ids_t, len_t).float()], 1)
            scaled = (feats - run.to_device(torch.from_numpy(self.mean))) / run.to_device(torch.from_numpy(self.std))
            return torch.sigmoid(self.fusion(scaled).float()).cpu().numpy()
