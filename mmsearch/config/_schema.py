"""Typed experiment configuration. Defaults are the paper's Appendix 6.1.

Each field's ``description`` is its reference documentation (``mmsearch config EXPERIMENT``
prints it beside the value). Validation is pydantic's, strict and closed (see ``_settings``):
types, ranges and registered names are checked together and every problem is reported at once.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, Field, model_validator

from mmsearch._settings import Settings
from mmsearch.data import AUGMENTATION_SETS, LABEL_INDEX, NUM_LABELS
from mmsearch.errors import MmsearchError
from mmsearch.models import BACKBONES, POOLINGS
from mmsearch.optim import LOSSES, SCHEDULERS
from mmsearch.runtime import PRECISIONS
from mmsearch.text import PreprocessConfig, resolve_corpus

Probability = Annotated[float, Field(ge=0, le=1)]


def _class_weights(value: Any) -> Any:
    """null, 'auto', a list of 18 non-negative numbers, or {label: weight} (keys may be text:
    a config read back from JSON has "1", not 1)."""
    if value is None or value == "auto":
        return value
    if isinstance(value, list):
        if len(value) != NUM_LABELS or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and x >= 0
                                                for x in value):
            raise ValueError(f"{value!r}: a list needs {NUM_LABELS} non-negative numbers, one per label 1..19 without 12")
        return [float(x) for x in value]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            label = int(k) if isinstance(k, str) and k.isdigit() else k
            if label not in LABEL_INDEX or not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{k!r}: {v!r}: keys are labels 1..19 without 12, values are weights >= 0")
            out[label] = float(v)
        return out
    raise ValueError(f"{value!r}: expected null, 'auto', a list of {NUM_LABELS} weights or {{label: weight}}")


def _corpus(name: str) -> str:
    try:
        resolve_corpus(name)
    except MmsearchError as exc:
        raise ValueError("; ".join(p.message for p in getattr(exc, "problems", [])) or str(exc)) from None
    return name


class OptimConfig(Settings):
    """The shared engine's training settings for one stage."""

    epochs: int = Field(15, gt=0, description="epochs to train (all of them unless early_stopping stops sooner)")
    batch_size: int = Field(128, gt=0, description="mini-batch size")
    lr: float = Field(1e-4, gt=0, description="Adam learning rate")
    weight_decay: float = Field(0.0, ge=0, description="Adam weight decay")
    scheduler: Annotated[str, SCHEDULERS.validator] = Field(
        "none", description="learning-rate schedule: none, step (StepLR, gamma per epoch) or plateau "
                            "(ReduceLROnPlateau on the validation loss)")
    step_gamma: Probability = Field(0.95, description="StepLR decay per epoch")
    plateau_patience: int = Field(2, ge=0, description="ReduceLROnPlateau patience in epochs")
    plateau_factor: Probability = Field(0.1, description="ReduceLROnPlateau factor")
    grad_clip: float | None = Field(None, gt=0, description="clip gradients to this max-norm (null: no clipping)")
    early_stopping: int | None = Field(
        5, gt=0, description="stop after this many epochs without a better validation F1 (null: train every epoch)")
    restore_best: bool = Field(
        True, description="end with the weights of the best validation epoch (the paper's conclusion 5); "
                          "false: the last epoch's")
    loss: Annotated[str, LOSSES.validator] = Field(
        "bce", description="loss: bce (per-class weights), bce_pos (positive-class weights), focal")
    class_weights: Annotated[Any, AfterValidator(_class_weights)] = Field(
        None, description="per-class loss weights: null, 'auto' (inverse frequency), a list of 18, or "
                          "{label: weight} (paper: {1: 0.5})")


class StageConfig(Settings):
    """A section that trains a network: a stage of the pipeline, with its own training settings."""

    # What the stage trains on, known here (not only in the pipeline) so that commands that train
    # nothing can check a dataset and plan upstream work without importing torch.
    inputs: ClassVar[tuple[str, ...]] = ()  # stages whose features this one trains on
    reads_images: ClassVar[bool] = False

    optim: OptimConfig = Field(default_factory=OptimConfig, description="training of this stage")


class DataConfig(Settings):
    path: str | None = Field(None, description="dataset folder (train.csv, test.csv, data/); null = the demo dataset")
    val_fraction: float = Field(0.2, gt=0, lt=1, description="share of train.csv held out for validation")
    split_seed: int = Field(42, description="seed of the train/validation split (same seed, same split everywhere)")
    image_size: int = Field(224, gt=0, description="images are decoded once and resized to this square size")
    limit: int | None = Field(None, gt=0, description="use only the first N rows of train.csv (quick experiments)")


class ImageConfig(StageConfig):
    """First network (Appendix 6.1.1): a pretrained CNN fine-tuned with an 18-way head."""

    reads_images: ClassVar[bool] = True

    backbone: Annotated[str, BACKBONES.validator] = Field("resnet50", description="registered backbone (`mmsearch models`)")
    pretrained: bool = Field(True, description="load the ImageNet weights through torchvision (TORCH_HOME cache)")
    leaky_relu: bool = Field(True, description="swap every ReLU for LeakyReLU, as the paper does")
    leaky_slope: float = Field(0.01, gt=0, description="LeakyReLU negative slope (paper 3.7.2: 0.01)")
    freeze_backbone: bool = Field(
        False, description="train the head only; with a deterministic augmentation set, backbone features are cached")
    augmentation: Annotated[str, AUGMENTATION_SETS.validator] = Field(
        "paper-final", description="registered augmentation set (Table 1)")
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(epochs=15, batch_size=128, lr=1e-4, early_stopping=5),
                               description="training of the image stage")


class TextConfig(StageConfig):
    """Second network (Appendix 6.1.2): Bi-LSTM over word vectors."""

    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig, description="caption cleaning steps")
    corpus: Annotated[str, AfterValidator(_corpus)] = Field(
        "glove-twitter-100", description="word vectors: a gensim-data name, captions-word2vec, or file:PATH")
    embedding_dim: int | None = Field(
        None, gt=0, description="vector size; null = the corpus's own (filled in); sets captions-word2vec's size")
    trainable_embeddings: bool = Field(False, description="fine-tune the embedding layer")
    seq_len: int = Field(8, gt=0, description="captions are padded/truncated to this many tokens")
    hidden_size: int = Field(50, gt=0, description="LSTM hidden units per direction (features = 2 x this)")
    num_layers: int = Field(1, gt=0, description="stacked LSTM layers")
    dropout: Probability = Field(0.1, description="dropout on the LSTM output")
    word_dropout: Probability = Field(
        0.0, description="training only: share of caption tokens replaced by <unk> at each step (not in the paper)")
    pooling: Annotated[str, POOLINGS.validator] = Field(
        "last", description="sentence feature: last (final states of both directions), mean or max over time")
    optim: OptimConfig = Field(
        default_factory=lambda: OptimConfig(epochs=100, batch_size=250, lr=0.02, weight_decay=1e-5, scheduler="step",
                                            step_gamma=0.95, grad_clip=0.5, early_stopping=10, class_weights={1: 0.4}),
        description="training of the text stage")

    @model_validator(mode="after")
    def _dimension(self) -> TextConfig:
        spec = resolve_corpus(self.corpus)
        if spec.dim is not None and self.embedding_dim is not None and self.embedding_dim != spec.dim:
            raise ValueError(f"embedding_dim {self.embedding_dim} does not match {spec.name!r}, which has {spec.dim} "
                             f"dimensions (use null or {spec.dim})")
        if spec.kind == "captions" and self.embedding_dim is None:
            raise ValueError("captions-word2vec needs an embedding_dim (e.g. 100)")
        if self.embedding_dim is None and spec.dim is not None:
            self.embedding_dim = spec.dim  # one spelling per setting: "null" and the corpus's size are the same config
        return self


class FusionConfig(StageConfig):
    """Third network (Appendix 6.1.3): MLP on concatenated image and caption features."""

    inputs: ClassVar[tuple[str, ...]] = ("image", "text")

    hidden_size: int = Field(2000, gt=0, description="units per hidden layer")
    hidden_layers: int = Field(1, ge=0, description="number of hidden layers")
    dropout_count: int = Field(
        1, ge=0, description="number of dropout layers (0, 1 or 2): after the hidden layer(s), then on the input")
    dropout_p: Probability = Field(0.05, description="dropout probability")
    optim: OptimConfig = Field(
        default_factory=lambda: OptimConfig(epochs=80, batch_size=1000, lr=0.02, scheduler="plateau",
                                            plateau_patience=2, grad_clip=0.5, early_stopping=10,
                                            class_weights={1: 0.5}),
        description="training of the fusion stage")

    @model_validator(mode="after")
    def _dropout_places(self) -> FusionConfig:
        if self.dropout_count > self.hidden_layers + 1:
            raise ValueError(f"dropout_count {self.dropout_count}: only {self.hidden_layers + 1} places "
                             "(after each hidden layer, then the input)")
        return self


def _device(name: str) -> str:
    head, _, index = name.partition(":")
    if head in ("auto", "cpu", "mps") and not index or head == "cuda" and (not index or index.isdigit()):
        return name
    raise ValueError(f"{name!r}: expected auto, cpu, cuda, cuda:N or mps")


class RunConfig(Settings):
    """How a run is reproduced (seed, repeat, precision) and where it runs (device, threads,
    loader threads). Only the first kind is part of a study's identity and of the stage cache
    keys: a sweep started on a laptop resumes on a GPU box when its other settings are the same."""

    # Settings that say where a run happens, not what it computes (see search.study_name).
    placement: ClassVar[tuple[str, ...]] = ("threads", "device", "num_workers")

    seed: int = Field(0, description="seed of weights, batches and augmentation; makes a CPU run reproducible")
    repeat: int = Field(
        0, ge=0, description="repeat index of a sweep cell: offsets the seed of the stage being trained, "
                             "not of cached upstream stages")
    precision: Annotated[str, PRECISIONS.validator] = Field(
        "fp32", description="forward-pass precision: fp32, bf16 (autocast) or fp16 (autocast + gradient scaler); "
                            "it changes results, so it is part of a study's identity and the stage cache keys")
    threads: int | None = Field(None, gt=0, le=1024, description="torch CPU threads, 1..1024 (null: torch's default; workers "
                                                                 "split them)")
    device: Annotated[str, AfterValidator(_device)] = Field(
        "auto", description="auto (the GPU a sweep worker was given, else cpu), cpu, cuda, cuda:N or mps")
    tune_thresholds: bool = Field(False, description="tune one decision threshold per class on the validation split")
    num_workers: int | None = Field(
        None, ge=0, description="background threads slicing and pinning the next image batches from the decoded "
                                "cache while the device trains (null: 1 on a GPU, 0 on cpu)")


class StatsConfig(Settings):
    """How an ablation's comparisons are judged (``mmsearch.stats``). Not part of a study's
    identity: the same trials are judged again under other settings, nothing reruns."""

    alpha: float = Field(0.05, gt=0, lt=0.5, description="error rate of each family of comparisons: family-wise "
                                                          "within a sweep, false-discovery rate across a report")
    margin: float | None = Field(
        None, ge=0, description="margin of practical equivalence in the metric's units (null: the sweep file's "
                                "margin, else 0.005 for F1 metrics); differences inside it are 'equivalent'")


class ExperimentConfig(Settings):
    name: str = Field("paper", description="experiment name")
    data: DataConfig = Field(default_factory=DataConfig, description="dataset and split")
    image: ImageConfig = Field(default_factory=ImageConfig, description="image network")
    text: TextConfig = Field(default_factory=TextConfig, description="caption network")
    fusion: FusionConfig = Field(default_factory=FusionConfig, description="fusion network")
    run: RunConfig = Field(default_factory=RunConfig, description="reproducibility and resources")
    stats: StatsConfig = Field(default_factory=StatsConfig, description="how comparisons are judged")


# The pipeline's stages are the sections that train a network, in the order they run.
_STAGE_SECTIONS: dict[str, type[StageConfig]] = {
    name: f.annotation for name, f in ExperimentConfig.model_fields.items()
    if isinstance(f.annotation, type) and issubclass(f.annotation, StageConfig)}
STAGE_NAMES: tuple[str, ...] = tuple(_STAGE_SECTIONS)
STAGE_INPUTS: dict[str, tuple[str, ...]] = {name: section.inputs for name, section in _STAGE_SECTIONS.items()}


def stage_needs_images(stage: str) -> bool:
    """Whether the stage, or a stage it trains on, reads the images."""
    section = _STAGE_SECTIONS[stage]
    return section.reads_images or any(stage_needs_images(s) for s in section.inputs)
