"""Augmentations of the paper's Table 1 as a registry of batched transforms and named sets.

Every transform works on a whole batch (N x C x H x W float tensor) where the batch already is
(the GPU in a GPU run) and draws its random parameters per image, from the generator it is
given: two copies of one image in a batch get different crops and flips, as per-image
torchvision transforms would give them, without a Python call per image. (torchvision's v2
transforms draw one set of parameters for a whole batched tensor.) Each transform is registered
with a factory of the image size; a set is an ordered list of transform names. Batches come in
as the uint8 pixels of the decoded-image cache and are converted to float in [0, 1] first.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from mmsearch._lazy import lazy_module
from mmsearch._registry import Registry

torch = lazy_module("torch")
F = lazy_module("torch.nn.functional")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Transform = Callable[[Any, Any], Any]  # (N x C x H x W float tensor, torch.Generator) -> same shape
TRANSFORMS: Registry[Callable[[int], Transform]] = Registry("augmentation transform")
AUGMENTATION_SETS: Registry[tuple[str, ...]] = Registry("augmentation set")

# Transforms that change nothing at random; a set made only of these is deterministic, which
# lets a frozen backbone's features be cached.
DETERMINISTIC = {"normalize"}


# -- per-image random draws ---------------------------------------------------------------------
def _uniform(x: Any, g: Any, low: float, high: float) -> Any:
    return torch.rand(len(x), generator=g, device=x.device) * (high - low) + low


def _coin(x: Any, g: Any, p: float = 0.5) -> Any:
    return torch.rand(len(x), generator=g, device=x.device) < p


def _boxes(x: Any, g: Any, scale: tuple[float, float], ratio: tuple[float, float], attempts: int = 10
           ) -> tuple[Any, Any, Any, Any, Any]:
    """torchvision's box sampling for RandomResizedCrop and RandomErasing, for every image at
    once: ``attempts`` (area, log-ratio) draws each, the first that fits is used. Returns top,
    left, height, width (pixels, float) and whether any draw fitted."""
    n, _, height, width = x.shape
    area = height * width * (torch.rand(n, attempts, generator=g, device=x.device) * (scale[1] - scale[0]) + scale[0])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(torch.rand(n, attempts, generator=g, device=x.device) * (log_hi - log_lo) + log_lo)
    w = torch.sqrt(area * aspect).round()
    h = torch.sqrt(area / aspect).round()
    fits = (w > 0) & (h > 0) & (w <= width) & (h <= height)
    first = torch.where(fits.any(1), fits.float().argmax(1), torch.zeros(n, dtype=torch.long, device=x.device))
    pick = first[:, None]
    h, w = h.gather(1, pick)[:, 0], w.gather(1, pick)[:, 0]
    found = fits.any(1)
    top = torch.floor(torch.rand(n, generator=g, device=x.device) * (height - h + 1))
    left = torch.floor(torch.rand(n, generator=g, device=x.device) * (width - w + 1))
    return top, left, h, w, found


def _sample(x: Any, theta: Any, mode: str = "bilinear") -> Any:
    """Resample every image through its own 2 x 3 affine map of output to input coordinates
    (normalised to [-1, 1]), filling outside pixels with 0 as torchvision's transforms do."""
    n, _, height, width = x.shape
    theta = theta.to(x.dtype)
    if not (theta[:, 0, 1].any() or theta[:, 1, 0].any()):
        # Crops and flips only (no rotation): the grid is an outer sum, a fraction of affine_grid's cost.
        cols = (torch.arange(width, device=x.device, dtype=x.dtype) * 2 + 1) / width - 1
        rows = (torch.arange(height, device=x.device, dtype=x.dtype) * 2 + 1) / height - 1
        gx = (theta[:, 0, 0, None] * cols + theta[:, 0, 2, None])[:, None, :].expand(n, height, width)
        gy = (theta[:, 1, 1, None] * rows + theta[:, 1, 2, None])[:, :, None].expand(n, height, width)
        grid = torch.stack([gx, gy], -1)
    else:
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)


class Geometric:
    """A transform that moves pixels by an affine map drawn per image (``draw``: x, generator ->
    N x 2 x 3 output-to-input maps). A run of them in a set is resampled once, through the
    composed map, instead of once per transform: one interpolation, a fraction of the work.
    ``mode`` is the interpolation it needs (None: exact under any, as flips are); ``exact``
    applies it alone without resampling where it can (flips)."""

    def __init__(self, draw: Callable[[Any, Any], Any], mode: str | None,
                 exact: Callable[[Any, Any], Any] | None = None) -> None:
        self.draw, self.mode, self.exact = draw, mode, exact

    def __call__(self, x: Any, g: Any) -> Any:
        return self.exact(x, g) if self.exact is not None else _sample(x, self.draw(x, g), self.mode or "bilinear")


def _resample(x: Any, run: list[Geometric], g: Any) -> Any:
    """Apply a run of geometric transforms in order, resampling at most once."""
    if len(run) == 1 or all(step.exact is not None for step in run):
        for step in run:
            x = step(x, g)
        return x
    total = None
    for step in run:  # out = T_k(...T_1(x)): its output->input map is M_1 @ ... @ M_k
        theta = step.draw(x, g)
        m = torch.cat([theta, torch.tensor([0.0, 0.0, 1.0], device=x.device).expand(len(x), 1, 3)], 1)
        total = m if total is None else total @ m
    mode = next((step.mode for step in run if step.mode), "bilinear")
    return _sample(x, total[:, :2], mode)


def _rotation_theta(angle_deg: Any, scale: Any, tx: Any, ty: Any) -> Any:
    """Output->input map of "rotate by angle, scale, then shift by (tx, ty)" (normalised units)."""
    a = angle_deg * (math.pi / 180)
    cos, sin = torch.cos(a) / scale, torch.sin(a) / scale
    # The inverse rotation/scale applied to (output - shift).
    theta = torch.stack([torch.stack([cos, sin, -(cos * tx + sin * ty)], 1),
                         torch.stack([-sin, cos, -(-sin * tx + cos * ty)], 1)], 1)
    return theta


# -- the transforms -------------------------------------------------------------------------
def _random_crop(size: int) -> Transform:
    pad = max(1, size // 8)

    def apply(x: Any, g: Any) -> Any:
        n, _, height, width = x.shape
        padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        top = torch.randint(0, 2 * pad + 1, (n,), generator=g, device=x.device)
        left = torch.randint(0, 2 * pad + 1, (n,), generator=g, device=x.device)
        rows = (top[:, None] + torch.arange(height, device=x.device))[:, :, None]
        cols = (left[:, None] + torch.arange(width, device=x.device))[:, None, :]
        picked = padded.permute(0, 2, 3, 1)[torch.arange(n, device=x.device)[:, None, None], rows, cols]
        return picked.permute(0, 3, 1, 2)

    return apply


def _random_resized_crop(size: int) -> Transform:
    # scale floor 0.5 rather than torchvision's 0.08: at the 64-224 px sizes used here a crop of 8%
    # of the area usually loses the labelled objects.
    def draw(x: Any, g: Any) -> Any:
        _, _, height, width = x.shape
        top, left, h, w, found = _boxes(x, g, (0.5, 1.0), (3 / 4, 4 / 3))
        # No draw fitted: the whole image (torchvision's fallback for a square image).
        top, left = torch.where(found, top, 0.0), torch.where(found, left, 0.0)
        h, w = torch.where(found, h, float(height)), torch.where(found, w, float(width))
        zero = torch.zeros_like(h)
        return torch.stack([torch.stack([w / width, zero, (2 * left + w) / width - 1], 1),
                            torch.stack([zero, h / height, (2 * top + h) / height - 1], 1)], 1)

    return Geometric(draw, "bilinear")


def _flip(dim: int) -> Transform:
    def exact(x: Any, g: Any) -> Any:
        flipped = _coin(x, g)
        out = x.clone()
        out[flipped] = x[flipped].flip(dim)
        return out

    def draw(x: Any, g: Any) -> Any:  # the same draw as ``exact``: one coin per image
        sign = 1.0 - 2.0 * _coin(x, g).to(x.dtype)
        one, zero = torch.ones_like(sign), torch.zeros_like(sign)
        sx, sy = (sign, one) if dim == 3 else (one, sign)
        return torch.stack([torch.stack([sx, zero, zero], 1), torch.stack([zero, sy, zero], 1)], 1)

    return Geometric(draw, None, exact)


def _normalize(size: int) -> Transform:
    def apply(x: Any, g: Any) -> Any:
        mean = torch.as_tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        std = torch.as_tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        return x.sub(mean).div_(std)  # torchvision's own order of operations: the same bits

    return apply


def _rotation(degrees: float) -> Transform:
    def draw(x: Any, g: Any) -> Any:
        one, zero = torch.ones(len(x), device=x.device), torch.zeros(len(x), device=x.device)
        return _rotation_theta(_uniform(x, g, -degrees, degrees), one, zero, zero)

    return Geometric(draw, "nearest")  # torchvision's RandomRotation default


def _affine(degrees: float, translate: float, scale: tuple[float, float]) -> Transform:
    def draw(x: Any, g: Any) -> Any:
        angle = _uniform(x, g, -degrees, degrees)
        tx, ty = _uniform(x, g, -2 * translate, 2 * translate), _uniform(x, g, -2 * translate, 2 * translate)
        return _rotation_theta(angle, _uniform(x, g, *scale), tx, ty)

    return Geometric(draw, "nearest")  # torchvision's RandomAffine default


def _erasing(p: float) -> Transform:
    def apply(x: Any, g: Any) -> Any:
        _, _, height, width = x.shape
        top, left, h, w, found = _boxes(x, g, (0.02, 0.33), (0.3, 3.3))
        erase = found & _coin(x, g, p)
        rows = torch.arange(height, device=x.device)[None, :]
        cols = torch.arange(width, device=x.device)[None, :]
        inside_r = (rows >= top[:, None]) & (rows < (top + h)[:, None])
        inside_c = (cols >= left[:, None]) & (cols < (left + w)[:, None])
        mask = (inside_r[:, :, None] & inside_c[:, None, :] & erase[:, None, None])[:, None]
        return x.masked_fill(mask, 0.0)

    return apply


def _gray(x: Any) -> Any:
    return (0.2989 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)


def _shift_hue(x: Any, shift: Any) -> Any:
    """Rotate each image's hue by its own shift (fraction of a turn), through HSV."""
    maxc, _ = x.max(1)
    minc, _ = x.min(1)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    r, g_, b = x[:, 0], x[:, 1], x[:, 2]
    hue = torch.where(maxc == r, ((g_ - b) / safe) % 6, torch.where(maxc == g_, (b - r) / safe + 2, (r - g_) / safe + 4))
    hue = torch.where(delta > 0, hue / 6, torch.zeros_like(hue))
    hue = (hue + shift[:, None, None]) % 1.0
    sat = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    k = (torch.stack([hue * 6 + 5, hue * 6 + 3, hue * 6 + 1], 1)) % 6
    return maxc[:, None] - maxc[:, None] * sat[:, None] * torch.clamp(torch.minimum(k, 4 - k), 0, 1)


def _color_jitter(brightness: float, contrast: float, saturation: float, hue: float) -> Transform:
    # torchvision's ColorJitter factors and [0, 1] clamping, in a fixed order (brightness,
    # contrast, saturation, hue) rather than a random order per image.
    def apply(x: Any, g: Any) -> Any:
        view = (-1, 1, 1, 1)
        x = (x * _uniform(x, g, 1 - brightness, 1 + brightness).view(view)).clamp(0, 1)
        c = _uniform(x, g, 1 - contrast, 1 + contrast).view(view)
        x = (c * x + (1 - c) * _gray(x).mean((1, 2, 3), keepdim=True)).clamp(0, 1)
        s = _uniform(x, g, 1 - saturation, 1 + saturation).view(view)
        x = (s * x + (1 - s) * _gray(x)).clamp(0, 1)
        return _shift_hue(x, _uniform(x, g, -hue, hue))

    return apply


TRANSFORMS.register("random_crop", _random_crop)
TRANSFORMS.register("random_resized_crop", _random_resized_crop)
TRANSFORMS.register("horizontal_flip", lambda size: _flip(3))
TRANSFORMS.register("vertical_flip", lambda size: _flip(2))
TRANSFORMS.register("normalize", _normalize)
TRANSFORMS.register("rotation", lambda size: _rotation(15))
TRANSFORMS.register("erasing", lambda size: _erasing(0.5))
TRANSFORMS.register("color_jitter", lambda size: _color_jitter(0.3, 0.3, 0.3, 0.05))
TRANSFORMS.register("affine", lambda size: _affine(10, 0.1, (0.9, 1.1)))

_FINAL = ("random_resized_crop", "horizontal_flip", "vertical_flip", "normalize")
AUGMENTATION_SETS.register("none", ())
AUGMENTATION_SETS.register("normalize", ("normalize",))
# Table 1's four tests; test 2 is the paper's final set (Appendix 6.1.1).
AUGMENTATION_SETS.register("table1-test1", ("random_crop",))
AUGMENTATION_SETS.register("paper-final", _FINAL)
AUGMENTATION_SETS.register("table1-test3", _FINAL + ("rotation", "erasing"))
AUGMENTATION_SETS.register("table1-test4", _FINAL + ("color_jitter", "affine"))
AUGMENTATION_SETS.register("flips", ("horizontal_flip", "vertical_flip", "normalize"))


class ImageTransform:
    """A set's training pipeline, or its evaluation pipeline (deterministic parts only), for
    uint8 N x C x H x W batches: the one image path of training, extraction, export and serving."""

    def __init__(self, set_name: str, size: int, train: bool) -> None:
        names = AUGMENTATION_SETS.get(set_name)
        self.names = names if train else tuple(n for n in names if n in DETERMINISTIC)
        self.steps = [TRANSFORMS.get(n)(size) for n in self.names]

    def __call__(self, pixels: Any, generator: Any = None) -> Any:
        if any(n not in DETERMINISTIC for n in self.names) and generator is None:
            raise ValueError(f"random transforms {self.names} need a generator")
        x = pixels.to(torch.float32).mul_(1.0 / 255)  # torchvision's ToDtype(scale=True): the same bits
        run: list[Geometric] = []
        for step in self.steps:
            if isinstance(step, Geometric):
                mode = next((s.mode for s in run if s.mode), None)
                if not run or step.mode is None or mode is None or step.mode == mode:
                    run.append(step)
                    continue
            if run:
                x, run = _resample(x, run, generator), []
            if isinstance(step, Geometric):
                run = [step]
            else:
                x = step(x, generator)
        return _resample(x, run, generator) if run else x


def build_transform(set_name: str, size: int, train: bool) -> ImageTransform:
    return ImageTransform(set_name, size, train)


def is_deterministic(set_name: str) -> bool:
    return all(n in DETERMINISTIC for n in AUGMENTATION_SETS.get(set_name))
