"""Typed experiment configuration. Defaults are the paper's Appendix 6.1.

Each field's docstring-like ``doc`` metadata is the reference documentation (``mmsearch
config`` prints it); ``check`` metadata holds the range rule applied by validation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mmsearch.text._preprocess import PreprocessConfig


def f(default: Any, doc: str, check: str | None = None, **kw: Any) -> Any:
    """A dataclass field with documentation and an optional range rule ('>0', '>=0', '0..1')."""
    meta = {"doc": doc, "check": check}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


@dataclass
class OptimConfig:
    """The shared engine's training settings for one stage."""

    epochs: int = f(15, "maximum epochs", ">0")
    batch_size: int = f(128, "mini-batch size", ">0")
    lr: float = f(1e-4, "Adam learning rate", ">0")
    weight_decay: float = f(0.0, "Adam weight decay", ">=0")
    scheduler: str = f("none", "learning-rate schedule: none, step (StepLR, gamma per epoch) or plateau (ReduceLROnPlateau on val loss)")
    step_gamma: float = f(0.95, "StepLR decay per epoch", "0..1")
    plateau_patience: int = f(2, "ReduceLROnPlateau patience in epochs", ">=0")
    plateau_factor: float = f(0.1, "ReduceLROnPlateau factor", "0..1")
    grad_clip: float | None = f(None, "clip gradients to this max-norm (null: no clipping)", ">0")
    early_stopping: int | None = f(5, "stop after this many epochs without a better val F1, restoring the best weights (null: off)", ">0")
    loss: str = f("bce", "loss: bce (per-class weights), bce_pos (positive-class weights), focal")
    class_weights: Any = f(None, "per-class loss weights: null, 'auto' (inverse frequency), a list of 18, or {label: weight} (paper: {1: 0.5})")


@dataclass
class DataConfig:
    path: str | None = f(None, "dataset folder (train.csv, test.csv, data/); null = the generated demo dataset")
    val_fraction: float = f(0.2, "share of train.csv held out for validation", "0..1")
    split_seed: int = f(42, "seed of the train/validation split (same seed, same split everywhere)")
    image_size: int = f(224, "images are decoded once and resized to this square size", ">0")
    limit: int | None = f(None, "use only the first N rows of train.csv (quick experiments)", ">0")


@dataclass
class ImageConfig:
    """First network (Appendix 6.1.1): a pretrained CNN fine-tuned with an 18-way head."""

    backbone: str = f("resnet50", "registered backbone (see `mmsearch models`)")
    pretrained: bool = f(True, "load the ImageNet weights through torchvision (TORCH_HOME cache)")
    leaky_relu: bool = f(True, "swap every ReLU for LeakyReLU, as the paper does")
    leaky_slope: float = f(0.01, "LeakyReLU negative slope", ">0")
    freeze_backbone: bool = f(False, "train the head only; with a deterministic augmentation set, backbone features are cached")
    augmentation: str = f("paper-final", "registered augmentation set (Table 1)")
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(epochs=15, batch_size=128, lr=1e-4, early_stopping=5),
                               metadata={"doc": "training of the image stage"})


@dataclass
class TextConfig:
    """Second network (Appendix 6.1.2): Bi-LSTM over word vectors."""

    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig, metadata={"doc": "caption cleaning steps"})
    corpus: str = f("glove-twitter-100", "word vectors: a gensim-data name, captions-word2vec, or file:PATH")
    embedding_dim: int | None = f(None, "vector size; must match a pretrained corpus (null = the corpus's); sets captions-word2vec's size", ">0")
    trainable_embeddings: bool = f(False, "fine-tune the embedding layer")
    seq_len: int = f(8, "captions are padded/truncated to this many tokens", ">0")
    hidden_size: int = f(50, "LSTM hidden units per direction (features = 2 x this)", ">0")
    num_layers: int = f(1, "stacked LSTM layers", ">0")
    dropout: float = f(0.1, "dropout on the LSTM output", "0..1")
    word_dropout: float = f(0.0, "training only: share of caption tokens replaced by <unk> at each step (not in the paper)", "0..1")
    pooling: str = f("last", "sentence feature: last (final states of both directions), mean or max over time")
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(epochs=100, batch_size=250, lr=0.02, weight_decay=1e-5, scheduler="step",
                                            step_gamma=0.95, grad_clip=0.5, early_stopping=10, class_weights={1: 0.4}),
        metadata={"doc": "training of the text stage"})


@dataclass
class FusionConfig:
    """Third network (Appendix 6.1.3): MLP on concatenated image and caption features."""

    hidden_size: int = f(2000, "units per hidden layer", ">0")
    hidden_layers: int = f(1, "number of hidden layers", ">=0")
    dropout_count: int = f(1, "number of dropout layers (0, 1 or 2): after the hidden layer(s), then on the input", ">=0")
    dropout_p: float = f(0.05, "dropout probability", "0..1")
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(epochs=80, batch_size=1000, lr=0.02, scheduler="plateau", plateau_patience=2,
                                            grad_clip=0.5, early_stopping=10, class_weights={1: 0.5}),
        metadata={"doc": "training of the fusion stage"})


@dataclass
class RunConfig:
    seed: int = f(0, "seed of weights, batches and augmentation; makes a CPU run reproducible")
    repeat: int = f(0, "repeat index of a sweep cell: offsets the seed of the stage being trained, not of cached upstream stages", ">=0")
    threads: int | None = f(None, "torch CPU threads (null: torch's default; workers split them)", ">0")
    device: str = f("auto", "auto, cpu or cuda")
    tune_thresholds: bool = f(False, "tune one decision threshold per class on the validation split")
    num_workers: int = f(0, "DataLoader worker processes for image batches", ">=0")


@dataclass
class ExperimentConfig:
    name: str = f("paper", "experiment name")
    data: DataConfig = field(default_factory=DataConfig, metadata={"doc": "dataset and split"})
    image: ImageConfig = field(default_factory=ImageConfig, metadata={"doc": "image network"})
    text: TextConfig = field(default_factory=TextConfig, metadata={"doc": "caption network"})
    fusion: FusionConfig = field(default_factory=FusionConfig, metadata={"doc": "fusion network"})
    run: RunConfig = field(default_factory=RunConfig, metadata={"doc": "reproducibility and resources"})
