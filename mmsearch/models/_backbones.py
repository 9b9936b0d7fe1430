"""Backbone registry over torchvision's builders and weight enums.

Each entry says how to build the network, which ImageNet weights ``pretrained: true`` means,
and how to cut off the classifier so the backbone returns its pooled features.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmsearch._assets import Asset
from mmsearch._lazy import lazy_module
from mmsearch._net import can_reach
from mmsearch._registry import Registry
from mmsearch.errors import AssetMissingError

if TYPE_CHECKING:
    from torch import nn

torch = lazy_module("torch")
nn = lazy_module("torch.nn")
tv_models = lazy_module("torchvision.models")


@dataclass(frozen=True)
class BackboneSpec:
    builder: str  # torchvision.models.<builder>
    weights: str  # "<WeightsEnum>.<member>"
    classifier: str  # attribute path to replace with Identity
    feature_dim: int
    # The file torchvision downloads the weights to (the name in the enum's URL; a test keeps them
    # equal), so asking whether they are cached needs neither torch nor torchvision.
    checkpoint: str

    def weights_enum(self) -> Any:
        enum_name, member = self.weights.split(".")
        return getattr(getattr(tv_models, enum_name), member)


BACKBONES: Registry[BackboneSpec] = Registry("backbone")
# The paper's four (Fig. 1)
BACKBONES.register("resnet50", BackboneSpec("resnet50", "ResNet50_Weights.IMAGENET1K_V2", "fc", 2048,
                                                 "resnet50-11ad3fa6.pth"))
BACKBONES.register("resnet152", BackboneSpec("resnet152", "ResNet152_Weights.IMAGENET1K_V2", "fc", 2048,
                                                 "resnet152-f82ba261.pth"))
BACKBONES.register("wide_resnet101_2", BackboneSpec("wide_resnet101_2", "Wide_ResNet101_2_Weights.IMAGENET1K_V2", "fc", 2048,
                                                 "wide_resnet101_2-d733dc28.pth"))
BACKBONES.register("resnext101_32x8d", BackboneSpec("resnext101_32x8d", "ResNeXt101_32X8D_Weights.IMAGENET1K_V2", "fc", 2048,
                                                 "resnext101_32x8d-110c445d.pth"))
# CPU-sized
BACKBONES.register("resnet18", BackboneSpec("resnet18", "ResNet18_Weights.IMAGENET1K_V1", "fc", 512,
                                                 "resnet18-f37072fd.pth"))
BACKBONES.register("mobilenet_v2", BackboneSpec("mobilenet_v2", "MobileNet_V2_Weights.IMAGENET1K_V1", "classifier", 1280,
                                                 "mobilenet_v2-b0353104.pth"))
BACKBONES.register("mobilenet_v3_small", BackboneSpec("mobilenet_v3_small", "MobileNet_V3_Small_Weights.IMAGENET1K_V1", "classifier", 576,
                                                 "mobilenet_v3_small-047dcff4.pth"))


def hub_dir() -> Path:
    """``torch.hub.get_dir()`` without importing torch: $TORCH_HOME/hub, else the XDG cache's torch/hub."""
    home = os.environ.get("TORCH_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "torch")
    return Path(os.path.expanduser(home)) / "hub"


def checkpoint_path(name: str) -> Path:
    return hub_dir() / "checkpoints" / BACKBONES.get(name).checkpoint


def backbone_asset(name: str) -> Asset:
    """The backbone's ImageNet weights as an asset: cached, or how to get them offline."""
    path = checkpoint_path(name)
    return Asset("ImageNet weights", name, path.exists(), str(path),
                 f"copy {path.name} into {path.parent} from a connected machine, or --set image.pretrained=false")


def build_backbone(name: str, pretrained: bool) -> tuple[Any, int]:
    """The backbone with its classifier replaced by Identity, and its feature size."""
    spec = BACKBONES.get(name)
    weights = None
    if pretrained:
        weights = spec.weights_enum()
        ckpt = checkpoint_path(name)
        if not ckpt.exists() and not can_reach("download.pytorch.org"):
            raise AssetMissingError(
                f"ImageNet weights for {name} ({spec.weights}) are not cached and cannot be downloaded "
                f"(offline): expected {ckpt.name} in {ckpt.parent} (TORCH_HOME={ckpt.parent.parent.parent}). "
                f"Copy the file there from a connected machine, or set image.pretrained=false."
            )
    model = getattr(tv_models, spec.builder)(weights=weights)
    _set_attr(model, spec.classifier, nn.Identity())
    return model, spec.feature_dim


def _set_attr(module: nn.Module, path: str, value: Any) -> None:
    parts = path.split(".")
    for part in parts[:-1]:
        module = getattr(module, part)
    setattr(module, parts[-1], value)


def swap_relu(module: nn.Module, negative_slope: float = 0.01) -> int:
    """Replace every nn.ReLU by LeakyReLU in place (the paper's change); returns the count."""
    swapped = 0
    for name, child in module.named_children():
        if type(child) is nn.ReLU:
            setattr(module, name, nn.LeakyReLU(negative_slope, inplace=child.inplace))
            swapped += 1
        else:
            swapped += swap_relu(child, negative_slope)
    return swapped


def model_size(module: nn.Module) -> tuple[int, float]:
    """(parameter count, size in MB of parameters and buffers) — the bubble chart's axes."""
    params = sum(p.numel() for p in module.parameters())
    nbytes = sum(p.numel() * p.element_size() for p in module.parameters())
    nbytes += sum(b.numel() * b.element_size() for b in module.buffers())
    return params, nbytes / 2**20
