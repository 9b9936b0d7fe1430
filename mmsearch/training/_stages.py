"""The three stages (image, text, fusion) and the caches that make repeated trials cheap.

* Tokenised captions, vocabulary and the embedding matrix are cached per dataset + settings.
* A trained stage's weights are cached under a hash of everything it depends on (dataset
  fingerprint, split, the stage's resolved config, seed); its features for every row are
  extracted once, in eval mode, on first demand, and cached the same way.
* A frozen backbone with a deterministic augmentation set has its pooled features cached, so
  image trials train only the head and the fusion stage needs no image training at all.
* The fusion stage trains on cached features only: it never re-runs the upstream networks.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mmsearch._diskcache import atomic_path, cached_joblib, file_lock, stable_hash
from mmsearch._paths import cache_dir
from mmsearch._registry import Registry
from mmsearch.config._schema import ExperimentConfig
from mmsearch.data._augment import build_transform, is_deterministic
from mmsearch.data._dataset import Dataset, Split
from mmsearch.data._demo import demo_dataset
from mmsearch.data._images import load_images
from mmsearch.data._labels import NUM_LABELS
from mmsearch.errors import DataError, Problem
from mmsearch.models._backbones import model_size
from mmsearch.models._networks import CaptionNet, FusionNet, HeadNet, ImageNet
from mmsearch.text._preprocess import Preprocessor
from mmsearch.text._vectors import EmbeddingMatrix, embedding_matrix
from mmsearch.text._vocab import Vocabulary
from mmsearch.training._engine import (
    Callback, FitResult, LoaderBatches, TensorBatches, fit, resolve_device, seed_everything,
)

log = logging.getLogger("mmsearch.stages")

# How often each expensive step really ran in this process; tests read it to prove cache hits.
stats: Counter[str] = Counter()


@dataclass
class StageResult:
    stage: str
    model: nn.Module
    fit: FitResult
    params: int
    size_mb: float
    key: str
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def metrics(self) -> dict[str, float]:
        return self.fit.metrics


class Workspace:
    """A resolved experiment: its dataset, split and device, with lazily built shared inputs."""

    def __init__(self, cfg: ExperimentConfig, dataset: Dataset | None = None, refit: bool = False) -> None:
        """``refit``: train on the training and validation rows together (the final model, once
        early stopping has fixed the epochs); the validation rows are still scored each epoch,
        optimistically, so the engine keeps its curves."""
        self.cfg = cfg
        self.refit = refit
        if dataset is None:
            root = Path(cfg.data.path) if cfg.data.path else demo_dataset()
            dataset = Dataset.open(root)
        self.dataset = dataset
        self.device = resolve_device(cfg.run.device)
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)

    # -- rows ----------------------------------------------------------------------------
    @cached_property
    def split(self) -> Split:
        split = self.dataset.split(self.cfg.data.val_fraction, self.cfg.data.split_seed)
        if self.cfg.data.limit:
            keep = self.cfg.data.limit
            split = Split(split.train[split.train < keep], split.val[split.val < keep])
        if self.refit:
            split = Split(np.sort(np.concatenate([split.train, split.val])), split.val)
        return split

    @property
    def targets(self) -> np.ndarray:
        return self.dataset.targets

    @property
    def seed(self) -> int:
        return self.cfg.run.seed + self.cfg.run.repeat

    def upstream(self) -> Workspace:
        """This workspace as seen by a downstream stage: a sweep repeat re-seeds only the stage
        being swept, so upstream features stay shared across repeats."""
        if self.cfg.run.repeat == 0:
            return self
        return self._upstream

    @cached_property
    def _upstream(self) -> Workspace:
        cfg = copy.deepcopy(self.cfg)
        cfg.run.repeat = 0
        return Workspace(cfg, self.dataset, self.refit)

    def split_key(self) -> dict[str, Any]:
        d = self.cfg.data
        return {"data": self.dataset.fingerprint, "val": d.val_fraction, "split_seed": d.split_seed, "limit": d.limit,
                "refit": self.refit}

    # -- text inputs ------------------------------------------------------------------------
    @cached_property
    def tokens(self) -> list[list[str]]:
        pre = self.cfg.text.preprocess
        key = {"data": self.dataset.fingerprint, "preprocess": dataclasses.asdict(pre), "v": 1}
        return cached_joblib("tokens", key, lambda: Preprocessor(pre).many(self.dataset.captions), "tokenised captions")

    @cached_property
    def vocab(self) -> Vocabulary:
        # Built from every caption (train.csv and test.csv): it uses no labels, and test-only words
        # then get their pretrained vectors instead of <unk>.
        return Vocabulary.build(self.tokens)

    @cached_property
    def embeddings(self) -> EmbeddingMatrix:
        t = self.cfg.text
        sentences_key = {"data": self.dataset.fingerprint, "preprocess": dataclasses.asdict(t.preprocess)}
        return embedding_matrix(self.vocab, t.corpus, dim=t.embedding_dim, sentences=self.tokens,
                                sentences_key=sentences_key, seed=self.cfg.run.seed)

    def sequences(self) -> tuple[torch.Tensor, torch.Tensor]:
        ids, lengths = self.vocab.encode(self.tokens, self.cfg.text.seq_len)
        return torch.from_numpy(ids), torch.from_numpy(lengths)

    # -- image inputs ------------------------------------------------------------------------
    def images(self) -> np.memmap:
        if not self.dataset.has_images:
            raise DataError(f"dataset {self.dataset.root}", [Problem(str(self.dataset.root / "data"),
                            "missing image folder: the image and fusion stages need images (text runs work without)")])
        return load_images(self.dataset, self.cfg.data.image_size)


# -- image stage -----------------------------------------------------------------------------
class _ImageRows(torch.utils.data.Dataset):
    def __init__(self, images: np.ndarray, rows: np.ndarray, targets: np.ndarray | None, transform: Any) -> None:
        self.images, self.rows, self.targets, self.transform = images, rows, targets, transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        row = int(self.rows[i])
        pixels = torch.from_numpy(np.array(self.images[row])).permute(2, 0, 1)
        target = torch.from_numpy(self.targets[row]) if self.targets is not None else torch.zeros(NUM_LABELS)
        return self.transform(pixels), target


def _image_loader(ws: Workspace, rows: np.ndarray, train: bool, batch_size: int) -> LoaderBatches:
    cfg = ws.cfg
    transform = build_transform(cfg.image.augmentation, cfg.data.image_size, train=train)
    targets = ws.targets if rows.max(initial=-1) < ws.dataset.n_train else None
    dataset = _ImageRows(ws.images(), rows, targets, transform)
    generator = torch.Generator().manual_seed(ws.seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=train, generator=generator,
                                         num_workers=cfg.run.num_workers)
    return LoaderBatches(loader)


def _eval_image_batches(ws: Workspace, batch_size: int) -> Iterator[tuple[tuple[torch.Tensor], torch.Tensor]]:
    """Every row's image through the evaluation transform, a whole batch at a time: that
    transform is deterministic and batch-safe (dtype scaling, normalisation), so one slice of
    the cache per batch replaces per-image copies, calls and collation."""
    transform = build_transform(ws.cfg.image.augmentation, ws.cfg.data.image_size, train=False)
    images = ws.images()
    for start in range(0, len(images), batch_size):
        pixels = torch.from_numpy(np.array(images[start : start + batch_size])).permute(0, 3, 1, 2)
        yield (transform(pixels),), torch.zeros(len(pixels), NUM_LABELS)


def _backbone_key(ws: Workspace) -> dict[str, Any]:
    i = ws.cfg.image
    return {"images": ws.dataset.images_fingerprint, "ids": stable_hash(ws.dataset.image_ids), "backbone": i.backbone,
            "pretrained": i.pretrained, "leaky": i.leaky_relu, "slope": i.leaky_slope, "size": ws.cfg.data.image_size,
            "aug": i.augmentation, "v": 2}


def uses_backbone_cache(cfg: ExperimentConfig) -> bool:
    return cfg.image.freeze_backbone and is_deterministic(cfg.image.augmentation)


def backbone_features(ws: Workspace) -> tuple[np.ndarray, dict[str, Any]]:
    """Pooled features of the frozen backbone for every row, computed once and cached."""
    key = _backbone_key(ws)

    def build() -> tuple[np.ndarray, dict[str, Any]]:
        seed_everything(ws.seed)
        i = ws.cfg.image
        net = ImageNet(i.backbone, i.pretrained, i.leaky_relu, i.leaky_slope, freeze_backbone=True).to(ws.device).eval()
        params, size = model_size(net)
        feats = _extract(net.features, _eval_image_batches(ws, 128), ws.device)
        stats["extract:backbone"] += 1
        return feats, {"params": params, "size_mb": size, "feature_dim": net.feature_dim}

    return _array_cache("backbone", key, build, f"{ws.cfg.image.backbone} backbone features")


@torch.inference_mode()
def _extract(fn: Callable[..., torch.Tensor], batches: Any, device: torch.device) -> np.ndarray:
    """Features in eval mode (BatchNorm running statistics, no dropout): the caller's module
    must already be in eval mode, which is asserted because batch statistics would make a
    row's features depend on its batch."""
    owner = getattr(fn, "__self__", None)
    assert owner is None or not owner.training, "feature extraction needs a module in eval mode"
    out = []
    for inputs, _ in batches:
        out.append(fn(*(t.to(device) for t in inputs)).float().cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def stage_key(ws: Workspace, stage: str) -> str:
    cfg = ws.cfg
    parts: dict[str, Any] = {"stage": stage, "split": ws.split_key(), "seed": ws.seed, "v": 1}
    if stage == "image":
        parts["image"] = dataclasses.asdict(cfg.image)
        parts["size"] = cfg.data.image_size
    elif stage == "text":
        parts["text"] = dataclasses.asdict(cfg.text)
    else:
        parts["fusion"] = dataclasses.asdict(cfg.fusion)
        parts["upstream"] = [upstream_key(ws.upstream(), "image"), upstream_key(ws.upstream(), "text")]
    return stable_hash(parts)


def upstream_key(ws: Workspace, stage: str) -> str:
    if stage == "image" and uses_backbone_cache(ws.cfg):
        return "backbone-" + stable_hash(_backbone_key(ws))
    return stage_key(ws, stage)


def train_image(ws: Workspace, callbacks: Sequence[Callback] = ()) -> StageResult:
    cfg = ws.cfg
    o = cfg.image.optim
    split = ws.split
    targets = ws.targets
    seed_everything(ws.seed)
    if uses_backbone_cache(cfg):
        feats, meta = backbone_features(ws)
        seed_everything(ws.seed)
        model: nn.Module = HeadNet(meta["feature_dim"])
        x = torch.from_numpy(np.array(feats, dtype=np.float32))
        y = torch.from_numpy(targets)
        train = TensorBatches([x[split.train]], y[split.train], o.batch_size, shuffle=True, seed=ws.seed)
        val = TensorBatches([x[split.val]], y[split.val], 1024)
        params, size = meta["params"], meta["size_mb"]
        info = {"backbone_cache": True}
    else:
        i = cfg.image
        model = ImageNet(i.backbone, i.pretrained, i.leaky_relu, i.leaky_slope, i.freeze_backbone)
        params, size = model_size(model)
        train = _image_loader(ws, split.train, True, o.batch_size)
        val = _image_loader(ws, split.val, False, max(o.batch_size, 128))
        info = {"backbone_cache": False}
    result = fit(model, train, val, o, train_targets=targets[split.train], val_targets=targets[split.val],
                 callbacks=callbacks, device=ws.device, tune=cfg.run.tune_thresholds)
    stats["train:image"] += 1
    out = StageResult("image", model, result, params, size, stage_key(ws, "image"), info)
    if not uses_backbone_cache(cfg):
        _save_weights(out)
    return out


def train_text(ws: Workspace, callbacks: Sequence[Callback] = ()) -> StageResult:
    cfg = ws.cfg
    t = cfg.text
    split = ws.split
    emb = ws.embeddings
    ids, lengths = ws.sequences()
    y = torch.from_numpy(ws.targets)
    seed_everything(ws.seed)
    model = _build_model(ws, "text")
    n = ws.dataset.n_train
    ids, lengths = ids[:n], lengths[:n]
    tr, va = torch.from_numpy(split.train), torch.from_numpy(split.val)
    train = TensorBatches([ids[tr], lengths[tr]], y[tr], t.optim.batch_size, shuffle=True, seed=ws.seed)
    val = TensorBatches([ids[va], lengths[va]], y[va], 2048)
    result = fit(model, train, val, t.optim, train_targets=ws.targets[split.train], val_targets=ws.targets[split.val],
                 callbacks=callbacks, device=ws.device, tune=cfg.run.tune_thresholds)
    stats["train:text"] += 1
    params, size = model_size(model)
    info = {"oov_words": len(emb.oov_words), "vocab_size": len(ws.vocab), "embedding_dim": emb.dim}
    out = StageResult("text", model, result, params, size, stage_key(ws, "text"), info)
    _save_weights(out)
    return out


STAGES: Registry[Callable[..., StageResult]] = Registry("stage")
STAGES.register("image", train_image)
STAGES.register("text", train_text)


# -- stage weights and features ----------------------------------------------------------------
def _weights_path(stage: str, key: str) -> Path:
    return cache_dir("stages") / f"{stage}-{key}.pt"


def _save_weights(result: StageResult) -> None:
    path = _weights_path(result.stage, result.key)
    tmp = atomic_path(path)
    torch.save({"state_dict": result.model.state_dict(), "metrics": result.metrics}, tmp)
    os.replace(tmp, path)


def _array_cache(kind: str, key: Any, build: Callable[[], tuple[np.ndarray, dict[str, Any]]], what: str
                 ) -> tuple[np.ndarray, dict[str, Any]]:
    digest = key if isinstance(key, str) else stable_hash(key)
    folder = cache_dir(kind)
    final, meta_path = folder / f"{digest}.npy", folder / f"{digest}.json"
    if not final.exists():
        with file_lock(folder / f"{digest}.lock"):
            if not final.exists():
                log.info("cache miss: %s, computing", what)
                array, meta = build()
                tmp = atomic_path(final)
                with open(tmp, "wb") as handle:
                    np.save(handle, array)
                meta_path.write_text(json.dumps(meta))
                os.replace(tmp, final)
                return array, meta
    log.info("cache hit: %s", what)
    stats[f"hit:{kind}"] += 1
    return np.load(final, mmap_mode="r"), json.loads(meta_path.read_text())


def stage_features(ws: Workspace, stage: str, trained: StageResult | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Features of every row (train.csv then test.csv) from a trained upstream stage.

    Uses, in order: cached features; cached weights (extract only); a fresh training run.
    """
    if stage == "image" and uses_backbone_cache(ws.cfg):
        return backbone_features(ws)
    key = stage_key(ws, stage)

    def build() -> tuple[np.ndarray, dict[str, Any]]:
        result = trained if trained is not None and trained.key == key else None
        model = result.model if result is not None else _load_or_train(ws, stage)
        model.to(ws.device).eval()
        if stage == "image":
            rows = np.arange(len(ws.dataset.image_ids))
            feats = _extract(model.features, _image_loader(ws, rows, False, 128), ws.device)
        else:
            ids, lengths = ws.sequences()
            feats = _extract(model.features, TensorBatches([ids, lengths], torch.zeros(len(ids)), 2048), ws.device)
        stats[f"extract:{stage}"] += 1
        return feats, {"feature_dim": int(feats.shape[1])}

    return _array_cache("features", f"{stage}-{key}", build, f"{stage} features")


def _load_or_train(ws: Workspace, stage: str) -> nn.Module:
    path = _weights_path(stage, stage_key(ws, stage))
    if path.exists():
        log.info("cache hit: %s weights", stage)
        model = _build_model(ws, stage)
        model.load_state_dict(torch.load(path, map_location="cpu")["state_dict"])
        return model
    log.info("no cached %s stage for this config: training it first", stage)
    return STAGES.get(stage)(ws).model


def _build_model(ws: Workspace, stage: str) -> nn.Module:
    cfg = ws.cfg
    if stage == "image":
        i = cfg.image
        # Weights come from the cache file, so no pretrained download is needed here.
        return ImageNet(i.backbone, False, i.leaky_relu, i.leaky_slope, i.freeze_backbone)
    t = cfg.text
    return CaptionNet(ws.embeddings.vectors, t.hidden_size, t.num_layers, t.dropout, t.pooling, t.trainable_embeddings,
                      t.word_dropout)


def fusion_inputs(ws: Workspace) -> tuple[np.ndarray, dict[str, Any]]:
    """Concatenated image and caption features of every row."""
    up = ws.upstream()
    img, img_meta = stage_features(up, "image")
    txt, _ = stage_features(up, "text")
    return np.concatenate([np.asarray(img), np.asarray(txt)], axis=1), img_meta


def train_fusion(ws: Workspace, callbacks: Sequence[Callback] = ()) -> StageResult:
    cfg = ws.cfg
    f = cfg.fusion
    split = ws.split
    feats, _ = fusion_inputs(ws)
    x_all = np.asarray(feats[: ws.dataset.n_train], dtype=np.float32)
    # Standardise with training-row statistics: CNN features are an order of magnitude larger
    # than the Bi-LSTM's, and unscaled they drown the caption half at the paper's learning rate.
    mean, std = x_all[split.train].mean(0), x_all[split.train].std(0) + 1e-6
    x = torch.from_numpy((x_all - mean) / std)
    y = torch.from_numpy(ws.targets)
    seed_everything(ws.seed)
    model = FusionNet(x.shape[1], f.hidden_size, f.hidden_layers, f.dropout_count, f.dropout_p)
    train = TensorBatches([x[split.train]], y[split.train], f.optim.batch_size, shuffle=True, seed=ws.seed)
    val = TensorBatches([x[split.val]], y[split.val], 4096)
    result = fit(model, train, val, f.optim, train_targets=ws.targets[split.train], val_targets=ws.targets[split.val],
                 callbacks=callbacks, device=ws.device, tune=cfg.run.tune_thresholds)
    stats["train:fusion"] += 1
    params, size = model_size(model)
    info = {"input_dim": int(x.shape[1]), "feature_mean": mean, "feature_std": std}
    return StageResult("fusion", model, result, params, size, stage_key(ws, "fusion"), info)


STAGES.register("fusion", train_fusion)


def run_stage(ws: Workspace, stage: str, callbacks: Sequence[Callback] = ()) -> StageResult:
    return STAGES.get(stage)(ws, callbacks)
