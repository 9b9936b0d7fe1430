"""Where a trial runs: the runtime seam, GPU placement of workers, the out-of-memory policy, a
study that follows a sweep from one machine to another, and the cache a sweep leaves."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch

from mmsearch.config import load_experiment
from mmsearch.errors import ConfigError, DataError
from mmsearch.search import SweepRequest, resolve, run_sweep
from mmsearch.search._storage import open_storage
from mmsearch.training import TensorBatches, fit

from conftest import needs_glove, needs_mobilenet, needs_nltk

pytestmark = [needs_glove, needs_mobilenet, needs_nltk]


def _request(tmp_path: Path, small: dict, sweep: str, **kw: object) -> SweepRequest:
    overrides = {**{k: v for k, v in small.items() if k != "data.path"}, **kw.pop("overrides", {})}  # type: ignore[dict-item]
    return SweepRequest(sweep=sweep, experiment="cpu", overrides=overrides, data=small["data.path"],
                        storage=str(tmp_path / "journal.log"), progress=False, **kw)


def _trials(tmp_path: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=open_storage(str(tmp_path / "journal.log")).optuna).trials


def test_the_engine_reads_its_device_side_sums_once_per_epoch_and_they_are_right() -> None:
    from mmsearch.data import binarize
    from mmsearch.training import samples_f1

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, 12, generator=g), (torch.rand(300, 18, generator=g) < 0.2).float()
    torch.manual_seed(0)
    model = torch.nn.Linear(12, 18)
    cfg = load_experiment("cpu").fusion.optim.model_copy(update={"epochs": 1, "lr": 1e-12, "early_stopping": None,
                                                                  "class_weights": None, "grad_clip": None})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = fit(model, TensorBatches([x], y, 64), TensorBatches([x], y, 64), cfg, train_targets=y.numpy(),
                 val_targets=y.numpy())
    with torch.no_grad():  # the model barely moved (lr 1e-12): its epoch sums are those of `before`
        model.load_state_dict(before)
        logits = model(x)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
        f1 = samples_f1(y.numpy(), binarize(torch.sigmoid(logits).numpy()))
    epoch = result.history[0]
    assert epoch.train_loss == pytest.approx(float(loss), rel=1e-5)
    assert epoch.train_f1 == pytest.approx(f1, abs=1e-6)


def test_a_sweep_moved_to_other_threads_devices_or_loader_threads_keeps_its_study(tmp_path: Path, small: dict) -> None:
    here = resolve(_request(tmp_path, small, "fusion-dropout-count")).study_name
    moved = resolve(_request(tmp_path, small, "fusion-dropout-count",
                             overrides={"run.threads": 1, "run.device": "cpu", "run.num_workers": 4})).study_name
    assert moved == here
    other = resolve(_request(tmp_path, small, "fusion-dropout-count", overrides={"run.precision": "bf16"})).study_name
    assert other != here  # precision changes results: another question, another study


def test_a_study_named_before_placement_left_the_identity_still_resumes(tmp_path: Path, small: dict) -> None:
    from mmsearch.search._context import legacy_study_name

    ctx = resolve(_request(tmp_path, small, "fusion-dropout-count"))
    legacy = legacy_study_name(ctx.spec, ctx.base, ctx.dataset)
    assert legacy is not None and legacy != ctx.study_name
    optuna.create_study(study_name=legacy, storage=ctx.storage.optuna)
    assert resolve(_request(tmp_path, small, "fusion-dropout-count")).study_name == legacy


def test_the_coordinator_never_imports_torch_so_never_holds_a_cuda_context(tmp_path: Path, small: dict) -> None:
    """A fusion sweep on a fresh cache: its upstream image and caption stages must be built, in a
    worker process, while the coordinator process never imports torch."""
    code = (
        "import json, sys\n"
        "from mmsearch.search import SweepRequest, run_sweep\n"
        f"s = run_sweep(SweepRequest(sweep='fusion-dropout-count', experiment='cpu', data={small['data.path']!r},"
        f" overrides={{'data.image_size': 32, 'text.optim.epochs': 2, 'fusion.optim.epochs': 2}},"
        f" storage={str(tmp_path / 'j.log')!r},"
        " trials=2, progress=False))\n"
        "print(json.dumps({'done': s.done, 'torch': sorted(m for m in sys.modules if m.split('.')[0] == 'torch')}))\n")
    # Fresh stage caches (backbone, features, stages, fusion inputs), shared word vectors and
    # tokens: what must be built is the networks, not gensim's text-to-binary conversion.
    shared, fresh = Path(os.environ["MMSEARCH_CACHE_DIR"]), tmp_path / "fresh-cache"
    fresh.mkdir()
    for kind in ("vectors", "tokens", "embeddings", "images"):
        (shared / kind).mkdir(parents=True, exist_ok=True)
        (fresh / kind).symlink_to(shared / kind)
    env = {**os.environ, "MMSEARCH_CACHE_DIR": str(fresh), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=400, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"done": 2, "torch": []}
    assert list((tmp_path / "fresh-cache" / "backbone").iterdir()) and list((tmp_path / "fresh-cache" / "features").iterdir())


def test_each_worker_gets_its_own_gpu_and_trials_record_where_they_ran(tmp_path: Path, small: dict,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Two GPUs as CUDA_VISIBLE_DEVICES lists them (on a machine without CUDA the workers then run
    on the cpu, but each still gets only its own GPU's entry before torch could initialise CUDA)."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7,9")
    auto = {"run.device": "auto"}  # a worker may choose: the GPU it is given, else the cpu
    summary = run_sweep(_request(tmp_path, small, "fusion-dropout-count", trials=6, workers=None, overrides=auto))
    trials = [t for t in _trials(tmp_path, summary.study_name) if t.state.name == "COMPLETE"]
    assert len(trials) == 6
    # --workers not given: one worker per GPU, each on its own.
    seen = {t.user_attrs["worker_pid"]: t.user_attrs["cuda_visible_devices"] for t in trials}
    assert sorted(set(seen.values())) == ["7", "9"] and len(seen) == 2
    assert all(t.user_attrs["device"] == "cpu" and t.user_attrs["gpu_peak_mb"] == 0.0 for t in trials)
    # More workers than GPUs share them round-robin; --gpus picks among them.
    again = run_sweep(_request(tmp_path, small, "fusion-dropout-p", trials=3, workers=3, gpus="9", overrides=auto))
    assert {t.user_attrs["cuda_visible_devices"] for t in _trials(tmp_path, again.study_name)} == {"9"}


def test_gpus_with_a_pinned_device_is_refused_before_anything_runs(tmp_path: Path, small: dict) -> None:
    with pytest.raises(ConfigError) as err:
        run_sweep(_request(tmp_path, small, "fusion-dropout-count", gpus="0,1", overrides={"run.device": "cpu"}))
    assert "--gpus" in str(err.value) and "run.device" in str(err.value)
    assert optuna.study.get_all_study_names(open_storage(str(tmp_path / "journal.log")).optuna) == []


def test_an_out_of_memory_cell_is_retried_once_then_stays_failed_saying_what_to_lower(tmp_path: Path,
                                                                                      small: dict) -> None:
    """A real allocation failure: a 40-million-unit hidden layer (220 GB of weights) that the
    allocator refuses; the sweep's other cell completes."""
    sweep = tmp_path / "oom.yaml"
    sweep.write_text("name: oom\ndescription: one level does not fit\npaper: test\nstage: fusion\nmode: ablation\n"
                     "factor: fusion.hidden_size\nlevels: [16, 40000000]\nrepeats: 1\n")
    # The cpu twin of test_gpu's OOM case: pinned to the cpu, whatever this machine has.
    summary = run_sweep(_request(tmp_path, small, str(sweep), overrides={"fusion.optim.epochs": 3, "run.device": "cpu"}))
    trials = _trials(tmp_path, summary.study_name)
    failed = [t for t in trials if t.state.name == "FAIL"]
    assert [t.params["level"] for t in trials if t.state.name == "COMPLETE"] == ["16"]
    assert len(failed) == 2 and all(t.params["level"] == "40000000" for t in failed)  # once, then once more
    error = failed[0].user_attrs["error"]
    assert failed[0].user_attrs["failure"] == "out of memory"
    assert "out of memory on cpu" in error and "fusion.optim.batch_size=250" in error and "lower" in error
    assert not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]
    from mmsearch.tracking import Tracker

    assert Tracker().running_children(summary.parent_run_id) == []


def test_an_upstream_stage_that_runs_out_of_memory_ends_the_sweep_with_one_message_and_nothing_running(
        tmp_path: Path, small: dict) -> None:
    """The upstream Bi-LSTM of a fusion sweep cannot be allocated (a 40-million-unit hidden
    state): it fails in the worker that builds it, the coordinator says so, and the parent run
    ends FAILED instead of staying RUNNING."""
    from mmsearch.errors import MmsearchError
    from mmsearch.tracking import Tracker

    request = _request(tmp_path, small, "fusion-dropout-count", overrides={"text.hidden_size": 40_000_000,
                                                                           "run.device": "cpu"})
    with pytest.raises(MmsearchError) as err:
        run_sweep(request)
    assert "upstream features" in str(err.value) and "no trial ran" in str(err.value)
    name = resolve(request).study_name
    study = optuna.load_study(study_name=name, storage=open_storage(request.storage).optuna)
    assert study.trials and all(t.state.name == "WAITING" for t in study.trials)  # nothing claimed, nothing lost
    parent = Tracker().client.get_run(study.user_attrs["mlflow_parent_run_id"])
    assert parent.info.status == "FAILED" and "upstream" in parent.data.tags["ended_because"]


def test_a_corrupt_image_is_reported_before_any_study_or_run_exists(tmp_path: Path, small: dict) -> None:
    data = tmp_path / "data"
    shutil.copytree(small["data.path"], data)
    victim = sorted((data / "data").iterdir())[3]
    victim.write_bytes(victim.read_bytes()[:200])  # a truncated JPEG
    request = _request(tmp_path, {**small, "data.path": str(data)}, "cnn-lr")
    with pytest.raises(DataError) as err:
        run_sweep(request)
    assert victim.name in str(err.value) and "cannot decode" in str(err.value)
    assert optuna.study.get_all_study_names(open_storage(request.storage).optuna) == []


def test_cache_show_lists_each_kind_and_prune_removes_only_unused_entries(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    for kind, name, age_days in (("stages", "old.pt", 30), ("stages", "new.pt", 0), ("features", "f", 30)):
        path = cache / kind / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "features":
            path.mkdir()
            (path / "array.npy").write_bytes(b"x" * 5000)
        else:
            path.write_bytes(b"x" * 1000)
        t = path.stat().st_mtime - age_days * 86400
        os.utime(path, (t, t))
    env = {**os.environ, "MMSEARCH_CACHE_DIR": str(cache)}

    def mmsearch(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mmsearch", "cache", *args], capture_output=True, text=True,
                              env=env, timeout=60, cwd=tmp_path)

    shown = mmsearch()
    assert shown.returncode == 0 and "stages" in shown.stdout and "2 entries" in shown.stdout
    dry = mmsearch("prune", "--unused-days", "7", "--dry-run")
    assert "would remove 2 entries" in dry.stdout and (cache / "stages" / "old.pt").exists()
    done = mmsearch("prune", "--unused-days", "7", "--kind", "stages")
    assert done.returncode == 0 and "removed 1 entries" in done.stdout
    assert not (cache / "stages" / "old.pt").exists() and (cache / "stages" / "new.pt").exists()
    assert (cache / "features" / "f").exists()
    bad = mmsearch("prune", "--unused-days", "7", "--kind", "nope")
    assert bad.returncode == 2 and "nope" in bad.stderr and "stages" in bad.stderr


def test_runtime_precision_names_are_a_registry(small: dict) -> None:
    with pytest.raises(Exception) as err:
        load_experiment("cpu", {"run.precision": "fp8"})
    assert "fp8" in str(err.value) and "bf16" in str(err.value)
    with pytest.raises(Exception) as err:
        load_experiment("cpu", {"run.device": "gpu"})
    assert "cuda:N" in str(err.value)


def test_idle_threads_follow_the_load_now_not_a_minute_ago(tmp_path: Path) -> None:
    """Busy CPUs are what /proc/stat counts over the window, now: every CPU busy during the window
    gives one thread, every CPU idle gives all of them (the 1-minute load average would say the
    opposite for a minute each time). A /proc/stat of our own, so other processes on a shared
    machine cannot change what the test sees."""
    import threading
    import time

    from mmsearch.runtime import idle_cpu_threads

    cpus = len(os.sched_getaffinity(0))
    stat = tmp_path / "stat"

    def window(busy_ticks: int, idle_ticks: int) -> tuple[int, int, float]:
        stat.write_text("cpu  1000 0 500 8000 100 0 0 0 0 0\ncpu0 ...\n")
        later = f"cpu  {1000 + busy_ticks} 0 500 {8000 + idle_ticks} 100 0 0 0 0 0\n"
        threading.Timer(0.1, stat.write_text, (later,)).start()  # the second sample, read after the window
        out = idle_cpu_threads(0.4, stat)
        time.sleep(0.05)
        return out

    threads, _, busy = window(busy_ticks=400, idle_ticks=0)  # every CPU busy over the window
    assert threads == 1 and busy == pytest.approx(os.cpu_count()), (threads, busy)
    threads, allowed, busy = window(busy_ticks=0, idle_ticks=400)  # every CPU idle: all of this process's
    assert threads == allowed == cpus and busy == 0.0, (threads, busy)
    threads, _, busy = window(busy_ticks=100, idle_ticks=300)  # a quarter of the machine busy
    assert busy == pytest.approx(os.cpu_count() / 4) and threads == max(1, min(cpus, cpus - int(busy + 0.5)))
    # The machine's own /proc/stat reads as a number of CPUs, whatever else runs here.
    _, _, live = idle_cpu_threads(0.2)
    assert 0.0 <= live <= (os.cpu_count() or 1) + 0.01


def test_a_foreground_run_takes_no_more_threads_than_the_load_leaves_idle(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """`export` and `train`: run.threads is the budget; a busy machine lowers it, and says so."""
    import mmsearch.runtime._devices as devices
    from mmsearch.config import load_experiment
    from mmsearch.pipeline import foreground_threads

    cfg = load_experiment("cpu")
    assert cfg.run.threads == 2
    monkeypatch.setattr(devices, "idle_cpu_threads", lambda: (1, 2, 1.9))  # a 2-worker sweep on 2 cores
    with caplog.at_level("WARNING", logger="mmsearch.runtime"):
        assert foreground_threads(cfg).run.threads == 1
    assert "1.9 of 2 CPUs busy" in caplog.text and "1 thread(s) instead of 2" in caplog.text
    monkeypatch.setattr(devices, "idle_cpu_threads", lambda: (8, 8, 0.0))  # idle: the budget, not every CPU
    assert foreground_threads(cfg).run.threads == 2
    unset = cfg.model_copy(update={"run": cfg.run.model_copy(update={"threads": None})})
    assert foreground_threads(unset).run.threads == 8
