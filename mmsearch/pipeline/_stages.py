"""The pipeline's stages (image, text, fusion) and the caches that make repeated trials cheap.

One registered :class:`Stage` object per stage says what it trains on (``inputs``), what its
weights depend on (``settings``), how it builds and trains its network and what it adds to an
exported bundle. Everything else is written once, for every stage:

* a trained stage's weights are cached under a hash of everything it depends on (dataset
  fingerprint, split, its resolved settings, seed, its inputs' keys); its features for every
  row are extracted once, in eval mode, on first demand, and cached the same way;
* a frozen backbone with a deterministic augmentation set has its pooled features cached, so
  image trials train only the head and the fusion stage needs no image training at all;
* the fusion stage trains on cached features only: it never re-runs the upstream networks;
  they are concatenated and standardised once per (inputs, split), not once per trial;
* features are always extracted from the cached weights, and a pipeline that ships a network
  (export) loads that same cached network rather than training it again: on a GPU, whose
  kernels are not bit-reproducible, a retrained network would not be the one whose features the
  fusion head was trained on.
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
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
from mmsearch.data import ImageBatches, build_transform, is_deterministic
from mmsearch.models import build_networks, model_size
from mmsearch.pipeline._workspace import Workspace
from mmsearch.runtime import Runtime
from mmsearch.training import (
    Callback,
    EpochLog,
    FitResult,
    FitState,
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
            ws.runtime.prepare(model).eval()
            feats = self.extract(ws, model)
            ws.events[f"extract:{self.name}"] += 1
            return feats, {"feature_dim": int(feats.shape[1])}

        return _array_cache("features", f"{self.name}-{key}", build, f"{self.name} features", ws)

    def export(self, ws: Workspace, result: StageResult) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The state dict an exported bundle stores for this stage, and what it adds to bundle.json."""
        return result.model.state_dict(), {}


STAGES: Registry[Stage] = Registry("stage")


def precision_key(ws: Workspace) -> dict[str, str]:
    """The workspace's precision part of a stage key (``runtime.precision_key``: the runtime's
    decision, read from the config without building a device)."""
    from mmsearch.runtime import precision_key as key

    return key(ws.cfg.run.precision)


def stage_key(ws: Workspace, stage: Stage) -> str:
    parts = {"stage": stage.name, "split": ws.split_key(), "seed": ws.seed, "settings": stage.settings(ws),
             "inputs": [STAGES.get(s).features_key(ws.upstream()) for s in stage.inputs], "v": 2, **precision_key(ws)}
    return stable_hash(parts)


def run_stage(ws: Workspace, stage: str, callbacks: Sequence[Callback] = (), reuse: bool = False) -> StageResult:
    """Train a stage. With ``reuse``, a stage whose trained weights are cached is loaded instead
    (its recorded history is replayed to ``callbacks``): the network a pipeline ships is then the
    very one whose cached features its downstream stages were trained on."""
    owner = STAGES.get(stage)
    if reuse:
        result = cached_result(ws, owner)
        if result is not None:
            # The callbacks see the recorded fit as they would have seen it live: start, each epoch
            # with the best so far, end (where the MLflow logger writes what it still holds).
            state = FitState(result.model, replayed=True)
            for cb in callbacks:
                cb.on_fit_start(state)
            for entry in result.fit.history:
                state.history.append(entry)
                if entry.val_f1 > state.best_f1:
                    state.best_f1, state.best_epoch = entry.val_f1, entry.epoch
                for cb in callbacks:
                    cb.on_epoch_end(state, entry)
            for cb in callbacks:
                cb.on_fit_end(state)
            return result
    return owner.train(ws, callbacks)


def _fit(ws: Workspace, stage: Stage, model: nn.Module, train: Any, val: Any, callbacks: Sequence[Callback],
         params: tuple[int, float] | None = None, info: dict[str, Any] | None = None) -> StageResult:
    """Train with the stage's optim settings and wrap the outcome; the one call every stage makes."""
    split = ws.split
    result = fit(model, train, val, getattr(ws.cfg, stage.name).optim, train_targets=ws.targets[split.train],
                 val_targets=ws.targets[split.val], callbacks=[*callbacks, *ws.observers], runtime=ws.runtime,
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
    """Cache a trained stage: its weights and what its training recorded (the first to finish
    wins; a concurrent training of the same key keeps its own network out of the cache)."""
    f = result.fit

    def write(tmp: Path) -> None:
        # Plain Python numbers only (no numpy scalars): the cache is read back with weights_only=True.
        torch.save({"state_dict": {k: v.detach().cpu() for k, v in result.model.state_dict().items()},
                    "metrics": _plain(result.metrics), "history": [_plain(vars(e)) for e in f.history],
                    "best_epoch": int(f.best_epoch), "restored": bool(f.restored), "thresholds": torch.from_numpy(np.asarray(f.thresholds, np.float32)),
                    "val_probs": torch.from_numpy(np.asarray(f.val_probs, np.float32)), "seconds": float(f.seconds),
                    "params": int(result.params), "size_mb": float(result.size_mb),
                    "info": _plain({k: v for k, v in result.info.items() if isinstance(v, (int, float, str, bool))})},
                   tmp)

    path = _weights_path(result.stage, result.key)
    if not path.exists():
        cached(path, write, kind="stages", what=f"{result.stage} weights")


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v.item() if isinstance(v, np.generic) else v for k, v in values.items()}


def _cached_network(ws: Workspace, stage: Stage, path: Path) -> tuple[nn.Module, dict[str, Any]]:
    # Tensors and plain containers only: whoever can write the cache folder cannot make this run code.
    saved = torch.load(path, map_location="cpu", weights_only=True)
    model = stage.fresh_network(ws)
    model.load_state_dict(saved["state_dict"])
    return model, saved


def cached_result(ws: Workspace, stage: Stage) -> StageResult | None:
    """The cached trained stage as a result (weights and recorded training), or None when its
    weights are not cached (or were cached before the training record was kept with them)."""
    key = stage_key(ws, stage)
    path = _weights_path(stage.name, key)
    if not path.exists():
        return None
    model, saved = _cached_network(ws, stage, path)
    if "history" not in saved:
        return None
    ws.events[f"hit:{stage.name}-weights"] += 1
    fitted = FitResult([EpochLog(**e) for e in saved["history"]], int(saved["best_epoch"]), bool(saved["restored"]),
                       dict(saved["metrics"]), saved["thresholds"].numpy(), saved["val_probs"].numpy(),
                       float(saved["seconds"]))
    return StageResult(stage.name, model, fitted, int(saved["params"]), float(saved["size_mb"]), key,
                       dict(saved["info"]))


def _load_or_train(ws: Workspace, stage: Stage) -> nn.Module:
    """The network a stage's features come from: the cached one, trained first when missing.
    Always the cached copy, even right after training it here: when two processes train the
    same key at once, only one network is cached, and features must come from that one."""
    path = _weights_path(stage.name, stage_key(ws, stage))
    if path.exists():
        log.info("cache hit: %s weights", stage.name)
        ws.events[f"hit:{stage.name}-weights"] += 1
        return _cached_network(ws, stage, path)[0]
    log.info("no cached %s stage for this config: training it first", stage.name)
    model = stage.train(ws, ()).model
    return _cached_network(ws, stage, path)[0] if path.exists() else model


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
def _extract(fn: Callable[..., torch.Tensor], batches: Any, runtime: Runtime, total: int, what: str,
             rows: int | None = None) -> np.ndarray:
    """Features in eval mode (BatchNorm running statistics, no dropout): the caller's module
    must already be in eval mode, which is asserted because batch statistics would make a
    row's features depend on its batch. On an accelerator they stay on the device until the
    last batch (no sync per batch); on the CPU, given ``rows``, each batch goes straight into one
    array, so the features are held once, not twice (at 40,000 images x 1,280 floats a
    concatenation at the end would hold 400 MB instead of 200)."""
    owner = getattr(fn, "__self__", None)
    assert owner is None or not owner.training, "feature extraction needs a module in eval mode"
    into: np.ndarray | None = None
    filled = 0
    out = []
    for inputs, _ in progress(batches, total=total, what=what, unit="batch"):
        with runtime.autocast():
            features = fn(*(runtime.to_device(t) for t in inputs)).float()
        if rows is None or runtime.device.type != "cpu":
            out.append(features)
            continue
        if into is None:
            into = np.empty((rows, features.shape[1]), np.float32)
        into[filled:filled + len(features)] = features.numpy()
        filled += len(features)
    if into is not None:
        assert filled == rows, (filled, rows)
        return into
    return torch.cat(out).cpu().numpy().astype(np.float32, copy=False)


# -- image -----------------------------------------------------------------------------------
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
                "aug": i.augmentation, "v": 2, **precision_key(ws)}

    def batches(self, ws: Workspace, rows: np.ndarray, train: bool, batch_size: int) -> ImageBatches:
        """Image batches of ``rows`` on the workspace's device: augmented and shuffled for
        training, else through the deterministic part of the set, in row order."""
        cfg = ws.cfg
        transform = build_transform(cfg.image.augmentation, cfg.data.image_size, train=train)
        targets = ws.targets if rows.max(initial=-1) < ws.dataset.n_train else None
        return ImageBatches(ws.images(), rows, targets, batch_size, transform, ws.runtime, shuffle=train, seed=ws.seed,
                            prefetch=ws.prefetch)

    def backbone_features(self, ws: Workspace) -> tuple[np.ndarray, dict[str, Any]]:
        """Pooled features of the frozen backbone for every row, computed once and cached."""

        def build() -> tuple[np.ndarray, dict[str, Any]]:
            seed_everything(ws.seed)
            net = ws.runtime.prepare(self.network(ws, pretrained=ws.cfg.image.pretrained)).eval()
            params, size = model_size(net)
            rows = len(ws.images())
            batches = self.batches(ws, np.arange(rows), False, 128)
            feats = _extract(net.features, batches, ws.runtime, len(batches), f"{ws.cfg.image.backbone} features",
                             rows=rows)
            ws.events["extract:backbone"] += 1
            return feats, {"params": params, "size_mb": size, "feature_dim": net.feature_dim}

        return _array_cache("backbone", stable_hash(self._backbone_key(ws)), build,
                            f"{ws.cfg.image.backbone} backbone features", ws)

    def features(self, ws: Workspace) -> tuple[np.ndarray, dict[str, Any]]:
        return self.backbone_features(ws) if uses_backbone_cache(ws.cfg) else super().features(ws)

    def fresh_network(self, ws: Workspace) -> nn.Module:
        return self.network(ws, pretrained=False)  # every weight comes from the cached state dict

    def extract(self, ws: Workspace, model: nn.Module) -> np.ndarray:
        rows = len(ws.dataset.image_ids)
        batches = self.batches(ws, np.arange(rows), False, 128)
        return _extract(model.features, batches, ws.runtime, len(batches), "image features", rows=rows)

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
        train = self.batches(ws, split.train, True, o.batch_size)
        val = self.batches(ws, split.val, False, max(o.batch_size, 128))
        return _fit(ws, self, model, train, val, callbacks, info={"backbone_cache": False})

    def export(self, ws: Workspace, result: StageResult) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        if not uses_backbone_cache(ws.cfg):
            return result.model.state_dict(), {}
        # A head trained on cached frozen-backbone features becomes a whole image network again.
        net = self.network(ws, pretrained=ws.cfg.image.pretrained)
        net.head.load_state_dict(result.model.head.state_dict())
        return net.state_dict(), {}


# -- text ------------------------------------------------------------------------------------
class TextStage(Stage):
    name = "text"

    def fresh_network(self, ws: Workspace) -> nn.Module:
        return self.network(ws, vectors=ws.embeddings.vectors)

    def extract(self, ws: Workspace, model: nn.Module) -> np.ndarray:
        ids, lengths = ws.sequences()
        batches = TensorBatches([ids, lengths], torch.zeros(len(ids)), 2048)
        return _extract(model.features, batches, ws.runtime, len(batches), "caption features")

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

    def prepared_inputs(self, ws: Workspace) -> tuple[np.ndarray, dict[str, Any]]:
        """The upstream features of every row, concatenated and standardised with training-row
        statistics, built once per (upstream features, split) and memory-mapped by every trial
        (at the paper's scale a per-trial concatenation costs each worker about a gigabyte).
        CNN features are an order of magnitude larger than the Bi-LSTM's, and unscaled they drown
        the caption half at the paper's learning rate."""
        up = ws.upstream()
        key = stable_hash({"inputs": [STAGES.get(s).features_key(up) for s in self.inputs], "split": ws.split_key(),
                           "v": 1})

        def build() -> tuple[np.ndarray, dict[str, Any]]:
            x_all = self.inputs_of(ws).astype(np.float32, copy=False)
            train = x_all[: ws.dataset.n_train][ws.split.train]
            mean, std = train.mean(0), train.std(0) + 1e-6
            x_all -= mean
            x_all /= std
            return x_all, {"feature_mean": mean.tolist(), "feature_std": std.tolist()}

        return _array_cache("fusion-inputs", key, build, "standardised fusion inputs", ws)

    def train(self, ws: Workspace, callbacks: Sequence[Callback]) -> StageResult:
        f, split = ws.cfg.fusion, ws.split
        x_all, meta = self.prepared_inputs(ws)
        # Fancy indexing copies only the rows each split needs out of the memory map.
        x_train, x_val = torch.from_numpy(x_all[split.train]), torch.from_numpy(x_all[split.val])
        y = torch.from_numpy(ws.targets)
        seed_everything(ws.seed)
        model = self.network(ws, fusion_inputs=x_all.shape[1])
        train = TensorBatches([x_train], y[split.train], f.optim.batch_size, shuffle=True, seed=ws.seed)
        val = TensorBatches([x_val], y[split.val], 4096)
        info = {"input_dim": int(x_all.shape[1]), "feature_mean": np.asarray(meta["feature_mean"], np.float32),
                "feature_std": np.asarray(meta["feature_std"], np.float32)}
        return _fit(ws, self, model, train, val, callbacks, info=info)

    def export(self, ws: Workspace, result: StageResult) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return result.model.state_dict(), {"feature_mean": np.asarray(result.info["feature_mean"]).tolist(),
                                           "feature_std": np.asarray(result.info["feature_std"]).tolist()}


for _stage in (ImageStage(), TextStage(), FusionStage()):
    STAGES.register(_stage.name, _stage)
assert tuple(STAGES.names()) == STAGE_NAMES, "every config stage section has exactly one registered Stage"
