"""End-to-end cases on a CUDA GPU (the ``gpu`` mark): they run in the default suite wherever CUDA
exists and are skipped, saying so, elsewhere. CPU twins of each rule live in test_runtime.py."""

import warnings
from pathlib import Path

import numpy as np
import optuna
import torch

from mmsearch.config import load_experiment
from mmsearch.search import SweepRequest, run_sweep
from mmsearch.search._storage import open_storage
from mmsearch.training import TensorBatches, fit

from conftest import gpu, needs_glove, needs_mobilenet, needs_nltk

pytestmark = [*gpu, needs_glove, needs_mobilenet, needs_nltk]
FINE_TUNED = {"image.freeze_backbone": False, "image.augmentation": "paper-final", "run.precision": "bf16",
              "image.optim.epochs": 2, "image.optim.lr": 1e-3}


def _request(tmp_path: Path, small: dict, sweep: str, overrides: dict, **kw: object) -> SweepRequest:
    base = {k: v for k, v in small.items() if k not in ("data.path", "run.threads", "run.device")}
    return SweepRequest(sweep=sweep, experiment="cpu", overrides={**base, **overrides}, data=small["data.path"],
                        storage=str(tmp_path / "journal.log"), progress=False, **kw)


def _trials(tmp_path: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=open_storage(str(tmp_path / "journal.log")).optuna).trials


def test_the_step_loop_syncs_with_the_host_only_once_per_epoch() -> None:
    """As many host syncs for 4 batches as for 32: none of them is per step."""
    from mmsearch.runtime import runtime_for

    cfg = load_experiment("cpu").fusion.optim.model_copy(update={"epochs": 1, "early_stopping": None})
    runtime = runtime_for(load_experiment("cpu", {"run.device": "cuda"}).run)

    def syncs(batches: int) -> int:
        x, y = torch.randn(batches * 64, 32), (torch.rand(batches * 64, 18) < 0.2).float()
        model = torch.nn.Linear(32, 18)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                fit(model, TensorBatches([x], y, 64), TensorBatches([x[:64]], y[:64], 64), cfg,
                    train_targets=y.numpy(), val_targets=y[:64].numpy(), runtime=runtime)
            finally:
                torch.cuda.set_sync_debug_mode(0)
        return sum("synchroniz" in str(w.message) for w in seen)

    assert syncs(4) == syncs(32)


def test_a_fine_tuned_image_sweep_runs_two_workers_on_the_gpu(tmp_path: Path, small: dict) -> None:
    summary = run_sweep(_request(tmp_path, small, "cnn-lr", FINE_TUNED, trials=4, workers=2))
    trials = _trials(tmp_path, summary.study_name)
    assert [t.state.name for t in trials].count("COMPLETE") == 4
    assert all("cuda" in t.user_attrs["device"] and t.user_attrs["gpu_peak_mb"] > 0 for t in trials)
    assert len({t.user_attrs["worker_pid"] for t in trials}) == 2


def test_an_oversized_batch_fails_twice_with_the_gpu_named_and_the_sweep_goes_on(tmp_path: Path, small: dict) -> None:
    sweep = tmp_path / "oom.yaml"
    sweep.write_text("name: gpu-oom\ndescription: a batch that cannot fit\npaper: test\nstage: image\nmode: ablation\n"
                     "factor: image.optim.batch_size\nlevels: [16, 1200]\nrepeats: 1\n")
    summary = run_sweep(_request(tmp_path, small, str(sweep), {**FINE_TUNED, "data.image_size": 512,
                                                               "run.precision": "fp32", "image.optim.epochs": 1}))
    trials = _trials(tmp_path, summary.study_name)
    failed = [t for t in trials if t.state.name == "FAIL"]
    assert [t.params["level"] for t in trials if t.state.name == "COMPLETE"] == ["16"]
    assert len(failed) == 2 and all(t.user_attrs["failure"] == "out of memory" for t in failed)
    assert "out of memory on cuda" in failed[0].user_attrs["error"]
    assert "image.optim.batch_size=1200" in failed[0].user_attrs["error"] and "bf16" in failed[0].user_attrs["error"]
    # The worker that hit it left after the CUDA error; a fresh process took the retry.
    assert failed[0].user_attrs["owner"]["pid"] != failed[1].user_attrs["owner"]["pid"]


def test_a_model_trained_on_the_gpu_predicts_on_cpu(tmp_path: Path, small: dict) -> None:
    from mmsearch.export import ExportRequest, export_model
    from mmsearch.serving import Bundle, Predictor

    overrides = {"run.precision": "fp32"}
    run_sweep(_request(tmp_path, small, "fusion-dropout-count", overrides, trials=3))
    result = export_model(ExportRequest(sweeps=["fusion-dropout-count"], name="gpu-trained", experiment="cpu",
                                        data=small["data.path"], overrides={**{k: v for k, v in small.items()
                                                                              if k not in ("data.path", "run.threads", "run.device")},
                                                                           **overrides},
                                        storage=str(tmp_path / "journal.log"), out_dir=tmp_path / "exports"))
    assert "cuda" in result.workspace.runtime.describe()
    import mlflow

    folder = Path(mlflow.artifacts.download_artifacts(f"runs:/{result.run_id}/model", dst_path=str(tmp_path / "m")))
    bundle = Bundle.load(folder / "artifacts" / "bundle")
    ds = result.workspace.dataset
    import pandas as pd

    ids = ds.test.image_ids[:32]
    frame = pd.DataFrame({"ImageID": ids, "Caption": ds.test.captions[:32],
                          "image_path": [str(ds.image_path(i)) for i in ids]})
    on_cpu = Predictor(bundle, device="cpu").predict_proba(frame)
    on_gpu = Predictor(bundle, device="cuda").predict_proba(frame)
    # TF32 matmuls on the GPU: close, not bit-equal.
    assert np.abs(on_cpu - on_gpu).max() < 2e-2 and ((on_cpu >= 0.5) == (on_gpu >= 0.5)).mean() > 0.99
