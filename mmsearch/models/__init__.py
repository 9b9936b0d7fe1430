"""The paper's networks, the backbone and pooling registries, and ``build_networks``."""

from mmsearch._lazy import lazy_exports

__all__ = ["BACKBONES", "BackboneSpec", "backbone_asset", "build_backbone", "checkpoint_path", "model_size", "swap_relu", "POOLINGS",
           "CaptionNet", "FusionNet", "HeadNet", "ImageNet", "build_networks"]
__getattr__, __dir__ = lazy_exports(__name__, {
    **dict.fromkeys(["BACKBONES", "BackboneSpec", "backbone_asset", "build_backbone", "checkpoint_path", "model_size", "swap_relu"],
                    "._backbones"),
    "POOLINGS": "._pooling",
    **dict.fromkeys(["CaptionNet", "FusionNet", "HeadNet", "ImageNet"], "._networks"),
    "build_networks": "._build",
})
