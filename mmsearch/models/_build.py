"""One place that turns a config into networks: training, export and serving all call it, so a
network's constructor arguments are read from the config in exactly one spot."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import nn

from mmsearch.models._backbones import BACKBONES
from mmsearch.models._networks import CaptionNet, FusionNet, HeadNet, ImageNet

if TYPE_CHECKING:
    from mmsearch.config import ExperimentConfig


def _image(cfg: ExperimentConfig, *, pretrained: bool | None = None, head_only: bool = False, **_: Any) -> nn.Module:
    i = cfg.image
    if head_only:  # the head alone, trained on cached frozen-backbone features
        return HeadNet(BACKBONES.get(i.backbone).feature_dim)
    return ImageNet(i.backbone, i.pretrained if pretrained is None else pretrained, i.leaky_relu, i.leaky_slope,
                    i.freeze_backbone)


def _text(cfg: ExperimentConfig, *, vectors: np.ndarray | None = None, vocab_size: int | None = None,
          embedding_dim: int | None = None, **_: Any) -> nn.Module:
    t = cfg.text
    if vectors is None:  # weights come from a state dict: the initial vectors do not matter
        assert vocab_size is not None and embedding_dim is not None, "text network needs vectors or their shape"
        vectors = np.zeros((vocab_size, embedding_dim), np.float32)
    return CaptionNet(vectors, t.hidden_size, t.num_layers, t.dropout, t.pooling, t.trainable_embeddings,
                      t.word_dropout)


def _fusion(cfg: ExperimentConfig, *, fusion_inputs: int | None = None, **_: Any) -> nn.Module:
    f = cfg.fusion
    assert fusion_inputs is not None, "fusion network needs its input width"
    return FusionNet(fusion_inputs, f.hidden_size, f.hidden_layers, f.dropout_count, f.dropout_p)


_BUILDERS: dict[str, Callable[..., nn.Module]] = {"image": _image, "text": _text, "fusion": _fusion}


def build_networks(cfg: ExperimentConfig, stages: Sequence[str] = ("image", "text", "fusion"), **dims: Any
                   ) -> dict[str, nn.Module]:
    """The networks of ``stages`` as ``cfg`` describes them. ``dims`` are what the config cannot
    know: ``vectors`` (or ``vocab_size`` + ``embedding_dim``), ``fusion_inputs``, and for the image
    network ``pretrained`` (False when a state dict follows) or ``head_only``."""
    return {stage: _BUILDERS[stage](cfg, **dims) for stage in stages}
