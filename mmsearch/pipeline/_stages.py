"""The pipeline's stages (image, text, fusion) and the caches that make repeated trials cheap.

One registered :class:`Stage` object per stage says what it trains on (``inputs``), what its
weights depend on (``settings``), how it builds and trains its network and what it adds to an
exported bundle. Everything else is written once, for every stage:

* a trained stage's weights are cached under a hash of everything it depends on (dataset
  fingerprint, split, its resolved settings, seed, its inputs' keys); its features for every
  row are extracted once, in eval mode, on first demand, and cached the same way;
* a frozen backbone with a deterministic augmentation set has its pooled features cached, so
  image trials train only the head and the fusion stage needs no image training at all;
* the fusion stage trains on cached features only: it never re-runs the upstream networks.
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from mmsearch._cache import cached, entry, stable_hash
from mmsearch._progress import progress
from mmsearch._registry import Registry
from mmsearch.config import STAGE_INPUTS, STAGE_NAMES, ExperimentConfig
from mmsearch.data import NUM_LABELS, build_transform, is_deterministic
from mmsearch.models import build_networks, model_size
from mmsearch.pipeline._workspace import Workspace
from mmsearch.training import (
    Callback,
    FitResult,
    LoaderBatches,
    TensorBatches,
    fit,
    seed_everything,
)

log = logging.getLogger("mmsearch.stages")


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


class Stage(ABC):
    """How one stage of the pipeline trains, what its weights depend on, and what it exports."""

    name: ClassVar[str]

    @property
    def inputs(self) -> tuple[str, ...]:
        """Stages whose features this one trains on (declared by its config section)."""
        return STAGE_INPUTS[self.name]

    def settings(self, ws: Workspace) -> dict[str, Any]:
        """The settings this stage's trained weights depend on (its config section by default)."""
        return getattr(ws.cfg, self.name).model_dump()

    def network(self, ws: Workspace, **dims: Any) -> nn.Module:
        return build_networks(ws.cfg, [self.name], **dims)[self.name]

    @abstractmethod
    def train(self, ws: Workspace, callbacks: Sequence[Callback]) -> StageResult: ...

    def caches_weights(self, ws: Workspace) -> bool:
        """Whether a trained network's weights are kept: only when a later stage may need its
        features again (a fusion trial's weights would fill the disk for nothing)."""
        return any(self.name in other.inputs for _, other in STAGES.items())

    def fresh_network(self, ws: Workspace) -> nn.Module:
        """The untrained network with the shape the cached weights need (weights loaded after)."""
        return self.network(ws)

    def extract(self, ws: Workspace, model: nn.Module) -> np.ndarray:
        """Features of every row (train.csv then test.csv) from a trained network, in eval mode."""
        raise TypeError(f"no stage trains on the {self.name} stage's features")

    def features_key(self, ws: Workspace) -> str:
        """What this stage's features depend on, as a downstream stage sees it."""
        return stage_key(ws, self)

    def features(self, ws: Workspace) -> tuple[np.ndarray, dict[str, Any]]:
        """Features of every row, from the cache, else cached weights (extract only), else a
        fresh training run."""
        key = stage_key(ws, self)

        def build() -> tuple[np.ndarray, dict[str, Any]]:
            model = _load_or_train(ws, self)
            model.to(ws.device).eval()
            feats = self.extract(ws, model)
            ws.events[f"extract:{self.name}"] += 1
            return feats, {"feature_dim": int(feats.shape[1])}

        return _array_cache("features", f"{self.name}-{key}", build, f"{self.name} features", ws)

    def export(self, ws: Workspace, result: StageResult) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The state dict an exported bundle stores for this stage, and what it adds to bundle.json."""
        return result.model.state_dict(), {}


STAGES: Registry[Stage] = Registry("stage")


def stage_key(ws: Workspace, stage: Stage) -> str:
    parts = {"stage": stage.name, "split": ws.split_key(), "seed": ws.seed, "settings": stage.settings(ws),
             "inputs": [STAGES.get(s).features_key(ws.upstream()) for s in stage.inputs], "v": 2}
    return stable_hash(parts)


def run_stage(ws: Workspace, stage: str, callbacks: Sequence[Callback] = ()) -> StageResult:
    return STAGES.get(stage).train(ws, callbacks)


def _fit(ws: Workspace, stage: Stage, model: nn.Module, train: Any, val: Any, callbacks: Sequence[Callback],
         params: tuple[int, float] | None = None, info: dict[str, Any] | None = None) -> StageResult:
    """Train with the stage's optim settings and wrap the outcome; the one call every stage makes."""
    split = ws.split
    result = fit(model, train, val, getattr(ws.cfg, stage.name).optim, train_targets=ws.targets[split.train],
                 val_targets=ws.targets[split.val], callbacks=callbacks, device=ws.device,
                 tune=ws.cfg.run.tune_thresholds)
    ws.events[f"train:{stage.name}"] += 1
    count, size = params if params is not None else model_size(model)
    out = StageResult(stage.name, model, result, count, size, stage_key(ws, stage), info or {})
    if stage.caches_weights(ws):
        _save_weights(out)
    return out


# -- the weight and array caches ------------------------------------------------------------------
def _weights_path(stage: str, key: str) -> Path:
    return entry("stages", f"{stage}-{key}", ".pt")


def _save_weights(result: StageResult) -> None:
    def write(tmp: Path) -> None:
        torch.save({"state_dict": result.model.state_dict(), "metrics": result.metrics}, tmp)

    path = _weights_path(result.stage, result.key)
    if not path.exists():
        cached(path, write, kind="stages", what=f"{result.stage} weights")


def _load_or_train(ws: Workspace, stage: Stage) -> nn.Module:
    path = _weights_path(stage.name, stage_key(ws, stage))
    if path.exists():
        log.info("cache hit: %s weights", stage.name)
        ws.events[f"hit:{stage.name}-weights"] += 1
        model = stage.fresh_network(ws)
        model.load_state_dict(torch.load(path, map_location="cpu")["state_dict"])
        return model
    log.info("no cached %s stage for this config: training it first", stage.name)
    return stage.train(ws, ()).model


def _array_cache(kind: str, key: str, build: Callable[[], tuple[np.ndarray, dict[str, Any]]], what: str,
                 ws: Workspace) -> tuple[np.ndarray, dict[str, Any]]:
    def write(folder: Path) -> None:
        array, meta = build()
        folder.mkdir()
        np.save(folder / "array.npy", array)
        (folder / "meta.json").write_text(json.dumps(meta))

    folder = cached(entry(kind, key), write, kind=kind, what=what, events=ws.events)
    return np.load(folder / "array.npy", mmap_mode="r"), json.loads((folder / "meta.json").read_text())


@torch.inference_mode()
def _extract(fn: Callable[..., torch.Tensor], batches: Any, device: torch.device, total: int, what: str) -> np.ndarray:
    """Features in eval mode (BatchNorm running statistics, no dropout): the caller's module
    must already be in eval mode, which is asserted because batch statistics would make a
    row's features depend on its batch."""
    owner = getattr(fn, "__self__", None)
    assert owner is None or not owner.training, "feature extraction needs a module in eval mode"
    out = [fn(*(t.to(device) for t in inputs)).float().cpu().numpy()
           for inputs, _ in progress(batches, total=total, what=what, unit="batch")]
    return np.concatenate(out).astype(np.float32)


# -- image -----------------------------------------------------------------------------------
class ImageRows(torch.utils.data.Dataset):
    """Rows of the decoded-image cache through a transform, with their targets (zeros for
    test.csv rows): what an image DataLoader iterates."""

    def __init__(self, images: np.ndarray, rows: np.ndarray, targets: np.ndarray | None, transform: Any) -> None:
        self.images, self.rows, self.targets, self.transform = images, rows, targets, transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        row = int(self.rows[i])
        pixels = torch.from_numpy(np.array(self.images[row])).permute(2, 0, 1)
        target = torch.from_numpy(self.targets[row]) if self.targets is not None else torch.zeros(NUM_LABELS)
        return self.transform(pixels), target


def uses_backbone_cache(cfg: ExperimentConfig) -> bool:
    return cfg.image.freeze_backbone and is_deterministic(cfg.image.augmentation)


class ImageStage(Stage):
    name = "image"

    def settings(self, ws: Workspace) -> dict[str, Any]:
        return {**super().settings(ws), "size": ws.cfg.data.image_size}

    def caches_weights(self, ws: Workspace) -> bool:
        return not uses_backbone_cache(ws.cfg) and super().caches_weights(ws)

    def features_key(self, ws: Workspace) -> str:
        if uses_backbone_cache(ws.cfg):
            return "backbone-" + stable_hash(self._backbone_key(ws))
        return super().features_key(ws)

    def _backbone_key(self, ws: Workspace) -> dict[str, Any]:
        i = ws.cfg.image
        return {"images": ws.dataset.images_fingerprint, "ids": stable_hash(ws.dataset.image_ids), "backbone": i.backbone,
                "pretrained": i.pretrained, "leaky": i.leaky_relu, "slope": i.leaky_slope, "size": ws.cfg.data.image_size,
                "aug": i.augmentation, "v": 2}

    def _loader(self, ws: Workspace, rows: np.ndarray, train: bool, batch_size: int) -> LoaderBatches:
        cfg = ws.cfg
        transform = build_transform(cfg.image.augmentation, cfg.data.image_size, train=train)
        targets = ws.targets if rows.max(initial=-1) < ws.dataset.n_train else None
        loader = torch.utils.data.DataLoader(ImageRows(ws.images(), rows, targets, transform), batch_size=batch_size,
                                             shuffle=train, generator=torch.Generator().manual_seed(ws.seed),
                                             num_workers=cfg.run.num_workers)
        return LoaderBatches(loader)

    def backbone_features(self, ws: Workspace) -> tuple[np.ndarray, dict[str, Any]]:
        """Pooled features of the frozen backbone for every row, computed once and cached."""

        def build() -> tuple[np.ndarray, dict[str, Any]]:
            seed_everything(ws.seed)
            net = self.network(ws, pretrained=ws.cfg.image.pretrained).to(ws.device).eval()
            params, size = model_size(net)
            images = ws.images()
            batches = eval_image_batches(ws.cfg, images, 128)
            feats = _extract(net.features, batches, ws.device, -(-len(images) // 128),
                             f"{ws.cfg.image.backbone} features")
            ws.events["extract:backbone"] += 1
            return feats, {"params": params, "size_mb": size, "feature_dim": net.feature_dim}

        return _array_cache("backbone", stable_hash(self._backbone_key(ws)), build,
                            f"{ws.cfg.image.backbone} backbone features", ws)

    def features(self, ws: Workspace) -> tuple[np.ndarray, dict[str, Any]]:
        return self.backbone_features(ws) if uses_backbone_cache(ws.cfg) else super().features(ws)

    def fresh_network(self, ws: Workspace) -> nn.Module:
        return self.network(ws, pretrained=False)  # every weight comes from the cached state dict

    def extract(self, ws: Workspace, model: nn.Module) -> np.ndarray:
        rows = np.arange(len(ws.dataset.image_ids))
        return _extract(model.features, self._loader(ws, rows, False, 128), ws.device, -(-len(rows) // 128),
                        "image features")

    def train(self, ws: Workspace, callbacks: Sequence[Callback]) -> StageResult:
        o, split = ws.cfg.image.optim, ws.split
        seed_everything(ws.seed)
        if uses_backbone_cache(ws.cfg):
            feats, meta = self.backbone_features(ws)
            seed_everything(ws.seed)
            x, y = torch.from_numpy(np.array(feats, dtype=np.float32)), torch.from_numpy(ws.targets)
            train = TensorBatches([x[split.train]], y[split.train], o.batch_size, shuffle=True, seed=ws.seed)
            val = TensorBatches([x[split.val]], y[split.val], 1024)
            return _fit(ws, self, self.network(ws, head_only=True), train, val, callbacks,
                        (meta["params"], meta["size_mb"]), {"backbone_cache": True})
        model = self.network(ws)
        train = self._loader(ws, split.train, True, o.batch_size)
        val = self._loader(ws, split.val, False, max(o.batch_size, 128))
        return _fit(ws, self, model, train, val, callbacks, info={"backbone_cache": False})

    def export(self, ws: Workspace, result: StageResult) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        if not uses_backbone_cache(ws.cfg):
            return result.model.state_dict(), {}
        # A head trained on cached frozen-backbone features becomes a whole image network again.
        net = self.network(ws, pretrained=ws.cfg.image.pretrained)
        net.head.load_state_dict(result.model.head.state_dict())
        return net.state_dict(), {}


def eval_image_batches(cfg: ExperimentConfig, images: np.ndarray, batch_size: int
                       ) -> Iterator[tuple[tuple[torch.Tensor], torch.Tensor]]:
    """Every row's image through the evaluation transform, a whole batch at a time: that
    transform is deterministic and batch-safe (dtype scaling, normalisation), so one slice of
    the cache per batch replaces per-image copies, calls and collation. The cache's HWC rows
    are viewed as NCHW (channels-last memory), as serving does, so both give the same features."""
    transform = build_transform(cfg.image.augmentation, cfg.data.image_size, train=False)
    for start in range(0, len(images), batch_size):
        pixels = torch.from_numpy(np.array(images[start : start + batch_size])).permute(0, 3, 1, 2)
        yield (transform(pixels),), torch.zeros(len(pixels), NUM_LABELS)


# -- text ------------------------------------------------------------------------------------
class TextStage(Stage):
    name = "text"

    def fresh_network(self, ws: Workspace) -> nn.Module:
        return self.network(ws, vectors=ws.embeddings.vectors)

    def extract(self, ws: Workspace, model: nn.Module) -> np.ndarray:
        ids, lengths = ws.sequences()
        batches = TensorBatches([ids, lengths], torch.zeros(len(ids)), 2048)
        return _extract(model.features, batches, ws.device, len(batches), "caption features")

    def train(self, ws: Workspace, callbacks: Sequence[Callback]) -> StageResult:
        t, split = ws.cfg.text, ws.split
        emb = ws.embeddings
        ids, lengths = ws.sequences()
        y = torch.from_numpy(ws.targets)
        seed_everything(ws.seed)
        model = self.network(ws, vectors=emb.vectors)
        n = ws.dataset.n_train
        ids, lengths = ids[:n], lengths[:n]
        tr, va = torch.from_numpy(split.train), torch.from_numpy(split.val)
        train = TensorBatches([ids[tr], lengths[tr]], y[tr], t.optim.batch_size, shuffle=True, seed=ws.seed)
        val = TensorBatches([ids[va], lengths[va]], y[va], 2048)
        info = {"oov_words": len(emb.oov_words), "vocab_size": len(ws.vocab), "embedding_dim": emb.dim}
        return _fit(ws, self, model, train, val, callbacks, info=info)

    def export(self, ws: Workspace, result: StageResult) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return result.model.state_dict(), {"vocab": ws.vocab.words, "embedding_dim": ws.embeddings.dim}


# -- fusion ------------------------------------------------------------------------------------
class FusionStage(Stage):
    name = "fusion"

    def inputs_of(self, ws: Workspace) -> np.ndarray:
        """Concatenated upstream features of every row."""
        up = ws.upstream()
        return np.concatenate([np.asarray(STAGES.get(s).features(up)[0]) for s in self.inputs], axis=1)

    def train(self, ws: Workspace, callbacks: Sequence[Callback]) -> StageResult:
        f, split = ws.cfg.fusion, ws.split
        x_all = np.asarray(self.inputs_of(ws)[: ws.dataset.n_train], dtype=np.float32)
        # Standardise with training-row statistics: CNN features are an order of magnitude larger
        # than the Bi-LSTM's, and unscaled they drown the caption half at the paper's learning rate.
        mean, std = x_all[split.train].mean(0), x_all[split.train].std(0) + 1e-6
        x, y = torch.from_numpy((x_all - mean) / std), torch.from_numpy(ws.targets)
        seed_everything(ws.seed)
        model = self.network(ws, fusion_inputs=x.shape[1])
        train = TensorBatches([x[split.train]], y[split.train], f.optim.batch_size, shuffle=True, seed=ws.seed)
        val = TensorBatches([x[split.val]], y[split.val], 4096)
        info = {"input_dim": int(x.shape[1]), "feature_mean": mean, "feature_std": std}
        return _fit(ws, self, model, train, val, callbacks, info=info)

    def export(self, ws: Workspace, result: StageResult) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return result.model.state_dict(), {"feature_mean": np.asarray(result.info["feature_mean"]).tolist(),
                                           "feature_std": np.asarray(result.info["feature_std"]).tolist()}


for _stage in (ImageStage(), TextStage(), FusionStage()):
    STAGES.register(_stage.name, _stage)
assert tuple(STAGES.names()) == STAGE_NAMES, "every config stage section has exactly one registered Stage"
