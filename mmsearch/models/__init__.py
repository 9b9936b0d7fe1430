"""The paper's networks and the backbone registry."""

from mmsearch.models._backbones import BACKBONES, BackboneSpec, build_backbone, checkpoint_path, model_size, swap_relu
from mmsearch.models._networks import POOLINGS, CaptionNet, FusionNet, HeadNet, ImageNet

__all__ = ["BACKBONES", "BackboneSpec", "build_backbone", "checkpoint_path", "model_size", "swap_relu",
           "POOLINGS", "CaptionNet", "FusionNet", "HeadNet", "ImageNet"]
