"""GPU cases of the image pipeline: ``python -m benchmarks.gpu`` (or ``--only G1 G2`` in the harness).

G1: images/s of the image stage's training epoch (ResNet50 at 224 px, paper-final, bf16 +
channels-last, the engine's own loop over the decoded-image cache) against the same model's bare
step loop on batches already on the device (the limit any input pipeline can approach), and
against the per-image path mmsearch had before (a DataLoader calling torchvision per image).
G2: trials per hour and peak GPU memory per worker of a 4-trial ``cnn-lr`` sweep with 1 and 2
workers on one GPU, and one worker per GPU where there are several.

Random initial weights (``image.pretrained=false``) and random pixels: neither changes the speed,
and a GPU machine without a network has no ImageNet weights. Needs torch, torchvision, numpy and
mmsearch's own dependencies; prints one line and exits 0 where no CUDA GPU is visible.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._harness import Row


def cuda_or_none() -> str | None:
    """Why the GPU cases cannot run here, or None when they can."""
    import torch

    if not torch.cuda.is_available():
        return f"no CUDA GPU visible (torch {torch.__version__}, CUDA build {torch.version.cuda})"
    return None


def _images(n: int, size: int, folder: Path) -> np.ndarray:
    """A decoded-image cache of ``n`` random images, memory-mapped as the real one is."""
    pixels = np.memmap(folder / "pixels.u8", dtype=np.uint8, mode="w+", shape=(n, size, size, 3))
    rng = np.random.default_rng(0)
    for start in range(0, n, 256):
        pixels[start : start + 256] = rng.integers(0, 256, (min(256, n - start), size, size, 3), dtype=np.uint8)
    pixels.flush()
    return np.memmap(folder / "pixels.u8", dtype=np.uint8, mode="r", shape=(n, size, size, 3))


def g1_input_pipeline(n: int = 3072, size: int = 224, batch: int = 128, backbone: str = "resnet50",
                      device: str = "cuda", precision: str = "bf16") -> list[Row]:
    import torch

    from mmsearch.config import load_experiment
    from mmsearch.data import ImageBatches, build_transform
    from mmsearch.models import ImageNet
    from mmsearch.runtime import Runtime
    from mmsearch.training import LoaderBatches, fit

    from benchmarks._cases import PerImageRows, per_image_transform

    runtime = Runtime(torch.device(device), precision)
    folder = Path(tempfile.mkdtemp(prefix="g1-"))
    images = _images(n, size, folder)
    targets = (np.random.default_rng(1).random((n, 18)) < 0.15).astype(np.float32)
    rows, val_rows = np.arange(n), np.arange(batch)
    cfg = load_experiment("paper").image.optim.model_copy(update={"epochs": 1, "early_stopping": None,
                                                                  "batch_size": batch, "restore_best": False})

    def model() -> Any:
        torch.manual_seed(0)
        return ImageNet(backbone, pretrained=False)

    def epoch(train: Any) -> float:
        net = model()
        val = ImageBatches(images, val_rows, targets, batch, build_transform("paper-final", size, False), runtime)
        warm = ImageBatches(images, rows[: 2 * batch], targets, batch, build_transform("paper-final", size, True), runtime)
        fit(net, warm, val, cfg, train_targets=targets, val_targets=targets[val_rows], runtime=runtime)  # cuDNN autotune
        torch.cuda.synchronize() if runtime.is_cuda else None
        t0 = time.perf_counter()
        result = fit(net, train, val, cfg, train_targets=targets, val_targets=targets[val_rows], runtime=runtime)
        torch.cuda.synchronize() if runtime.is_cuda else None
        assert len(result.history) == 1
        return n / (time.perf_counter() - t0)  # one training epoch and a one-batch validation pass

    def bare() -> float:
        """The step loop alone: float batches made once, on the device, channels-last."""
        net = runtime.prepare(model()).train()
        opt = torch.optim.Adam(net.parameters(), lr=1e-4)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        transform = build_transform("normalize", size, False)
        ready = [(transform(torch.from_numpy(np.array(images[s : s + batch])).to(runtime.device).permute(0, 3, 1, 2))
                  .contiguous(memory_format=torch.channels_last), torch.from_numpy(targets[s : s + batch]).to(runtime.device))
                 for s in range(0, n, batch)]

        def loop() -> None:
            for x, y in ready:
                opt.zero_grad(set_to_none=True)
                with runtime.autocast():
                    out = net(x)
                loss_fn(out.float(), y).backward()
                opt.step()

        loop()  # warm-up
        torch.cuda.synchronize() if runtime.is_cuda else None
        t0 = time.perf_counter()
        loop()
        torch.cuda.synchronize() if runtime.is_cuda else None
        return n / (time.perf_counter() - t0)

    ours = epoch(ImageBatches(images, rows, targets, batch, build_transform("paper-final", size, True), runtime,
                              shuffle=True, prefetch=1))
    limit = bare()
    before = epoch(LoaderBatches(torch.utils.data.DataLoader(PerImageRows(images, rows, targets, per_image_transform(size)),
                                                             batch_size=batch, shuffle=True)))
    note = (f"{backbone} at {size} px, batch {batch}, {precision} + channels-last on {runtime.describe()}; {n} images; "
            f"an epoch of 24,000 images: {24000 / ours:.0f} s (the paper: ~400 s); before: {24000 / before:.0f} s")
    return [Row("G1 GPU input pipeline", "bare step loop on batches already on the device",
                "the image stage's training epoch (engine + batched pipeline)", limit, ours, "images/s", ours / limit,
                ">= 0.85x", ours / limit >= 0.85, note),
            Row("G1b GPU before/after", "the same epoch, per-image torchvision path (before)", "the same epoch, batched",
                before, ours, "images/s", ours / before, "(diagnostic)", ours >= before, note)]


def g2_sweep_workers(workdir: Path, trials: int = 4) -> list[Row]:
    import optuna
    import torch

    from mmsearch.data import SynthSpec, synthesize
    from mmsearch.search import SweepRequest, open_storage, run_sweep

    data = str(synthesize(workdir / "g2-demo", SynthSpec(n_train=2000, n_test=100, image_size=64, seed=0)))
    overrides = {"image.pretrained": False, "image.optim.epochs": 2, "image.optim.early_stopping": None,
                 "data.image_size": 224}
    gpus = torch.cuda.device_count()
    setups = [(1, "0"), (2, "0")] + ([(gpus, ",".join(str(i) for i in range(gpus)))] if gpus > 1 else [])
    measured: dict[str, tuple[float, float]] = {}
    for workers, devices in setups:
        storage = str(workdir / f"g2-{workers}-{devices.replace(',', '')}.log")
        t0 = time.perf_counter()
        summary = run_sweep(SweepRequest(sweep="cnn-lr", experiment="paper", overrides=overrides, data=data,
                                         storage=storage, workers=workers, gpus=devices, trials=trials, progress=False))
        seconds = time.perf_counter() - t0
        done = optuna.load_study(study_name=summary.study_name, storage=open_storage(storage).optuna).trials
        peak = max((t.user_attrs.get("gpu_peak_mb", 0.0) for t in done), default=0.0)
        measured[f"{workers} worker(s) on GPU(s) {devices}"] = (summary.ran / seconds * 3600, peak)
    rows, (base_name, (base, base_peak)) = [], next(iter(measured.items()))
    for name, (per_hour, peak) in list(measured.items())[1:]:
        rows.append(Row(f"G2 workers ({name})", base_name, name, base, per_hour, "trials/h", per_hour / base,
                        "(measured)", per_hour >= base,
                        f"cnn-lr, {trials} trials, resnet50 at 224 px, bf16; peak GPU memory per worker "
                        f"{base_peak:.0f} MB vs {peak:.0f} MB"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=3072, help="images in G1's epoch")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--only", nargs="*", default=["G1", "G2"])
    args = parser.parse_args(argv)
    why = cuda_or_none()
    if why:
        print(f"G1/G2 skipped: {why}")
        return 0
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    workdir = Path(tempfile.mkdtemp(prefix="gpu-bench-"))
    os.environ.setdefault("MMSEARCH_CACHE_DIR", str(workdir / "cache"))
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{workdir}/mlflow.db")
    rows = []
    if "G1" in args.only:
        rows += g1_input_pipeline(args.images, args.size)
    if "G2" in args.only:
        rows += g2_sweep_workers(workdir)
    for r in rows:
        print(f"| {r.case} | {r.baseline}: {r.baseline_value:.3g} {r.unit} | {r.ours}: {r.ours_value:.3g} {r.unit} "
              f"| {r.ratio:.2f}x | {r.target} | {'yes' if r.met else 'NO'} | {r.note} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
