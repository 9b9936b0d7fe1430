"""Augmentations of the paper's Table 1 as a registry of transforms and named sets.

Transforms run on float tensors in [0, 1] (C x H x W) after the cached uint8 image is
converted, so the JPEG decode never repeats. Each transform is registered with a factory of
the image size; a set is an ordered list of transform names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mmsearch._lazy import lazy_module
from mmsearch._registry import Registry

torch = lazy_module("torch")
v2 = lazy_module("torchvision.transforms.v2")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

TRANSFORMS: Registry[Callable[[int], Any]] = Registry("augmentation transform")
AUGMENTATION_SETS: Registry[tuple[str, ...]] = Registry("augmentation set")

# Transforms that change nothing at random; a set made only of these is deterministic, which
# lets a frozen backbone's features be cached.
DETERMINISTIC = {"normalize"}

TRANSFORMS.register("random_crop", lambda size: v2.RandomCrop(size, padding=max(1, size // 8), padding_mode="reflect"))
# scale floor 0.5 rather than torchvision's 0.08: at the 64-224 px sizes used here a crop of 8%
# of the area usually loses the labelled objects.
TRANSFORMS.register("random_resized_crop", lambda size: v2.RandomResizedCrop(size, scale=(0.5, 1.0), antialias=True))
TRANSFORMS.register("horizontal_flip", lambda size: v2.RandomHorizontalFlip())
TRANSFORMS.register("vertical_flip", lambda size: v2.RandomVerticalFlip())
TRANSFORMS.register("normalize", lambda size: v2.Normalize(IMAGENET_MEAN, IMAGENET_STD))
TRANSFORMS.register("rotation", lambda size: v2.RandomRotation(15))
TRANSFORMS.register("erasing", lambda size: v2.RandomErasing(p=0.5))
TRANSFORMS.register("color_jitter", lambda size: v2.ColorJitter(0.3, 0.3, 0.3, 0.05))
TRANSFORMS.register("affine", lambda size: v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1)))

_FINAL = ("random_resized_crop", "horizontal_flip", "vertical_flip", "normalize")
AUGMENTATION_SETS.register("none", ())
AUGMENTATION_SETS.register("normalize", ("normalize",))
# Table 1's four tests; test 2 is the paper's final set (Appendix 6.1.1).
AUGMENTATION_SETS.register("table1-test1", ("random_crop",))
AUGMENTATION_SETS.register("paper-final", _FINAL)
AUGMENTATION_SETS.register("table1-test3", _FINAL + ("rotation", "erasing"))
AUGMENTATION_SETS.register("table1-test4", _FINAL + ("color_jitter", "affine"))
AUGMENTATION_SETS.register("flips", ("horizontal_flip", "vertical_flip", "normalize"))


def build_transform(set_name: str, size: int, train: bool) -> Any:
    """The training pipeline of a set, or its evaluation pipeline (deterministic parts only)."""
    names = AUGMENTATION_SETS.get(set_name)
    kept = names if train else tuple(n for n in names if n in DETERMINISTIC)
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), *(TRANSFORMS.get(n)(size) for n in kept)])


def is_deterministic(set_name: str) -> bool:
    return all(n in DETERMINISTIC for n in AUGMENTATION_SETS.get(set_name))
