"""Which downloadable assets a configuration trains with and this machine lacks: the one answer
the sweep's warning, the reproduction's plan and its schedule share."""

from __future__ import annotations

from mmsearch._assets import Asset, missing
from mmsearch.config import ExperimentConfig
from mmsearch.models import backbone_asset
from mmsearch.text import corpus_asset


def missing_assets(cfg: ExperimentConfig, images: bool) -> list[Asset]:
    """The word vectors ``cfg`` trains with, and its ImageNet weights when ``images`` and
    pretrained, that are neither cached nor downloadable here (offline)."""
    wanted: list[Asset | None] = [corpus_asset(cfg.text.corpus)]
    if images and cfg.image.pretrained:
        wanted.append(backbone_asset(cfg.image.backbone))
    return missing(wanted)
