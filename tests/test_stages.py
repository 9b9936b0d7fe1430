from collections import Counter
from pathlib import Path

import pytest

from mmsearch.config import load_experiment
from mmsearch.pipeline import Workspace, run_stage
from mmsearch.training import always_label1_f1

from conftest import needs_glove, needs_mobilenet, needs_nltk

pytestmark = [needs_glove, needs_mobilenet, needs_nltk]


@pytest.fixture(scope="module")
def trained(small: dict) -> dict:
    ws = Workspace(load_experiment("cpu", small))
    baseline = always_label1_f1(ws.targets[ws.split.val])
    results = {stage: run_stage(ws, stage) for stage in ("image", "text", "fusion")}
    return {"ws": ws, "baseline": baseline, "results": results}


def test_each_stage_beats_the_label1_baseline_and_fusion_beats_both(trained: dict) -> None:
    b = trained["baseline"]
    f1 = {k: r.metrics["val_f1"] for k, r in trained["results"].items()}
    assert f1["image"] > b + 0.03 and f1["text"] > b + 0.05
    assert f1["fusion"] > max(f1["image"], f1["text"])


def test_fusion_on_cached_features_runs_no_upstream_pass(trained: dict, small: dict) -> None:
    events: Counter[str] = Counter()
    run_stage(Workspace(load_experiment("cpu", {**small, "fusion.dropout_p": 0.2}), events=events), "fusion")
    assert events["train:fusion"] == 1
    assert all(events[k] == 0 for k in ("train:image", "train:text", "extract:image", "extract:text", "extract:backbone"))
    # The standardised inputs were prepared once, by the first fusion training: this trial maps
    # them and neither re-reads nor re-concatenates the upstream features.
    assert events["hit:fusion-inputs"] == 1 and events["build:fusion-inputs"] == 0
    assert events["hit:features"] == 0 and events["hit:backbone"] == 0


def test_changed_upstream_config_invalidates_the_cache(trained: dict, small: dict) -> None:
    events: Counter[str] = Counter()
    run_stage(Workspace(load_experiment("cpu", {**small, "text.hidden_size": 24, "text.optim.epochs": 3}), events=events),
              "fusion")
    assert events["train:text"] == 1 and events["extract:text"] == 1
    assert events["train:image"] == 0 and events["build:backbone"] == 0  # the image side is unchanged


def test_same_seed_reproduces_on_cpu(trained: dict, small: dict) -> None:
    ws = Workspace(load_experiment("cpu", small))
    again = run_stage(ws, "fusion")
    assert again.metrics["val_f1"] == pytest.approx(trained["results"]["fusion"].metrics["val_f1"], abs=1e-9)


def test_text_stage_on_caption_only_dataset(tmp_path: Path, demo_dir: Path, small: dict) -> None:
    (tmp_path / "train.csv").write_bytes((demo_dir / "train.csv").read_bytes())
    ws = Workspace(load_experiment("cpu", {**small, "data.path": str(tmp_path), "text.optim.epochs": 3}))
    assert not ws.dataset.has_images
    assert run_stage(ws, "text").metrics["val_f1"] > 0


def test_where_a_stage_runs_is_not_part_of_its_cache_key_but_its_precision_is(trained: dict, small: dict) -> None:
    from mmsearch.pipeline import STAGES

    here = trained["ws"]
    moved = Workspace(load_experiment("cpu", {**small, "run.threads": 1, "run.device": "cpu", "run.num_workers": 3}))
    bf16 = Workspace(load_experiment("cpu", {**small, "run.precision": "bf16"}))
    for stage in ("image", "text", "fusion"):
        assert STAGES.get(stage).features_key(moved) == STAGES.get(stage).features_key(here)
        assert STAGES.get(stage).features_key(bf16) != STAGES.get(stage).features_key(here)


@pytest.mark.slow  # about 60 s on 2 cores: run by `pytest -m slow` (CI runs it)
def test_bf16_autocast_trains_and_changes_the_arithmetic(trained: dict, small: dict) -> None:
    events: Counter[str] = Counter()
    ws = Workspace(load_experiment("cpu", {**small, "run.precision": "bf16"}), events=events)
    assert ws.runtime.autocast_dtype is not None and str(ws.runtime.autocast_dtype) == "torch.bfloat16"
    result = run_stage(ws, "fusion")
    fp32 = trained["results"]["fusion"]
    assert result.metrics["val_f1"] > trained["baseline"] + 0.05
    # Another precision is another cache entry all the way up (backbone features included), and
    # its probabilities differ from fp32's: autocast really ran.
    assert events["build:backbone"] == 1 and events["train:text"] == 1
    assert abs(result.fit.val_probs - fp32.fit.val_probs).max() > 1e-4


class _RunsCode:
    """A pickle that runs code when loaded (what a writable cache folder could hold)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def test_cached_weights_load_as_tensors_only_never_running_a_pickle(trained: dict, tmp_path: Path) -> None:
    import pickle

    import torch

    from mmsearch.pipeline._stages import STAGES, _cached_network, _weights_path, stage_key

    ws = trained["ws"]
    stage = STAGES.get("text")
    real = _weights_path("text", stage_key(ws, stage))
    assert real.exists()
    model, saved = _cached_network(ws, stage, real)  # what training wrote reads back under weights_only
    assert saved["history"] and isinstance(saved["metrics"]["val_f1"], float)
    marker = tmp_path / "ran"
    poisoned = tmp_path / "text-poisoned.pt"
    torch.save({"state_dict": {}, "extra": _RunsCode(marker)}, poisoned)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        _cached_network(ws, stage, poisoned)
    assert not marker.exists()
