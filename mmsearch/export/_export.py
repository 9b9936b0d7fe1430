"""``mmsearch export``: sweeps' best settings -> one trained pipeline -> a registered pyfunc model."""

from __future__ import annotations

import base64
import io
import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

import mmsearch
from mmsearch._processes import ProcessIdentity
from mmsearch.config import (
    STAGE_INPUTS,
    STAGE_NAMES,
    ExperimentConfig,
    dump_yaml,
    flatten,
    load_experiment,
    request_overrides,
    stage_needs_images,
    to_dict,
    with_overrides,
)
from mmsearch.data import LABELS, Dataset
from mmsearch.export._best import Decision, sweep_decisions
from mmsearch.pipeline import STAGES, StageResult, Workspace, foreground_threads, run_stage
from mmsearch.search import StudyPlace, SweepRequest, load_sweep
from mmsearch.serving import BUNDLE_FILE, IMAGE_COLUMN, IMAGE_DATA_COLUMN, NEEDS_IMAGES
from mmsearch.stats import DEGENERATE_MARGIN
from mmsearch.tracking import OWNER_TAG, MlflowEpochLogger, Tracker, end_abandoned_exports
from mmsearch.training import EpochProgress, validation_scores

log = logging.getLogger("mmsearch.export")
ALIAS = "champion"
OUTBOX_WAIT_S = 120.0  # how long the end of an export waits for a tracking server that is away
REQUIREMENTS = ("torch", "torchvision", "numpy", "pandas", "pillow", "nltk", "mlflow", "gensim", "pyyaml")


@dataclass
class ExportRequest(StudyPlace):
    sweeps: list[str]
    name: str
    full: bool = False
    caption_only: bool = False
    ensemble: int = 1  # members trained with seeds run.seed, run.seed + 1, ...; probabilities averaged
    out_dir: Path = Path("exports")
    studies: list[str] = field(default_factory=list)  # --study, one per sweep in order (default: found)
    force: bool = False  # export a configuration no better than the most-frequent-label baseline


@dataclass
class ExportResult:
    name: str
    version: str | None  # None: queued while the tracking server is away, registered when it is back
    run_id: str
    model_uri: str
    config: ExperimentConfig
    decisions: list[Decision]
    metrics: dict[str, float]
    workspace: Workspace
    results: dict[str, StageResult]
    folder: Path
    members: list[Member] = field(default_factory=list)
    kept_overrides: dict[str, Any] = field(default_factory=dict)  # the --set values the model kept


def final_config(request: ExportRequest) -> tuple[ExperimentConfig, list[Decision], ExportRequest]:
    """The base experiment with each sweep's best setting applied in the order given. Without
    --experiment/--data/--set, the base is what the first sweep's study was run with; the request
    comes back completed with it."""
    if not request.sweeps:
        raise mmsearch.MmsearchError("export needs at least one sweep")
    if request.studies and len(request.studies) != len(request.sweeps):
        raise mmsearch.MmsearchError(f"--study given {len(request.studies)} time(s) for {len(request.sweeps)} sweep(s): "
                                     "give one --study per sweep, in the same order, or none")
    command = f"export {' '.join(request.sweeps)} --name {request.name}"
    cfg: ExperimentConfig | None = None
    decisions: list[Decision] = []
    for i, sweep in enumerate(request.sweeps):
        found, ran_with = sweep_decisions(SweepRequest(
            sweep=sweep, **{**request.place(), "tracking_uri": None},
            study_name=request.studies[i] if request.studies else None), command, force=request.force)
        if cfg is None:
            request = replace(request, experiment=ran_with.experiment or load_sweep(sweep)[0].experiment,
                              data=ran_with.data, overrides=ran_with.overrides)
            cfg = load_experiment(str(request.experiment), {**request.overrides, **request_overrides(data=request.data)})
        cfg = with_overrides(cfg, {d.key: d.value for d in found}, where=f"best of sweep {sweep}")
        decisions = [d for d in decisions if d.key not in {f.key for f in found}] + found
    assert cfg is not None
    return cfg, decisions, request


@dataclass
class Member:
    """One trained copy of the final pipeline (seed = run.seed + its index)."""

    workspace: Workspace
    results: dict[str, StageResult]
    # Its own thresholds, tuned on validation before any refit: a member bundle is a whole model.
    thresholds: np.ndarray


def export_model(request: ExportRequest) -> ExportResult:
    if request.ensemble < 1:
        raise mmsearch.MmsearchError(f"--ensemble must be 1 or more, got {request.ensemble}")
    cfg, decisions, request = final_config(request)
    return export_config(cfg, decisions, request)


# What a caller measures on the written bundle before it is logged (``mmsearch reproduce``: the
# test split's F1 of each member): metrics logged to the export run and returned with the rest.
Evaluate = Callable[[Path], dict[str, float]]


def export_config(cfg: ExperimentConfig, decisions: list[Decision], request: ExportRequest,
                  evaluate: Evaluate | None = None, threads: int | None = None) -> ExportResult:
    """Train ``cfg`` (``request.ensemble`` members), log it to an export run and register it;
    ``decisions`` are its provenance (which sweep chose which setting). ``threads``: pinned by a
    caller that trains several models it compares (on CPU the thread count changes the floating-
    point sums, so two models trained with different counts differ by more than their settings);
    else the CPUs idle now, as ``foreground_threads`` picks them."""
    dataset = Workspace(cfg).dataset  # bad data is one message, before anything about threads
    cfg = foreground_threads(cfg) if threads is None else with_overrides(cfg, {"run.threads": threads},
                                                                          where="threads of a foreground run")
    stages = [s for s in STAGE_NAMES if not stage_needs_images(s)] if request.caption_only or not dataset.has_images \
        else list(STAGE_NAMES)
    tracker = Tracker(request.tracking_uri)
    end_abandoned_exports(tracker)
    experiment_id = tracker.experiment(f"export/{request.name}")
    title = request.name + (f" (ensemble of {request.ensemble})" if request.ensemble > 1 else "") + (
        " (full)" if request.full else "")
    owner = json.dumps(ProcessIdentity.current().attr())  # whoever finds it RUNNING with its owner gone ends it
    with tracker.run(experiment_id, title, tags={"model": request.name, "sweeps": ",".join(request.sweeps),
                                                 "ensemble": str(request.ensemble), OWNER_TAG: owner}) as run_id:
        tracker.log_params(run_id, {**flatten(to_dict(cfg)), "export.ensemble": request.ensemble,
                                    "export.full": request.full})
        tracker.log_text(run_id, dump_yaml(cfg), "config.yaml")
        tracker.log_text(run_id, json.dumps([asdict(d) for d in decisions], indent=1, default=str), "provenance.json")
        members = [_train_member(cfg, dataset, i, request.ensemble, stages, tracker, run_id)
                   for i in range(request.ensemble)]
        thresholds, metrics = _combine(members, stages)
        _refuse_degenerate(members[0].workspace, metrics, stages[-1], request.force)
        if request.full:
            members = [_refit(m, stages, tracker, run_id, i, request.ensemble) for i, m in enumerate(members)]
            cfg = members[0].workspace.cfg  # what the final model was trained with: epochs fixed, no early stopping
        tracker.log_metrics(run_id, metrics)
        with tempfile.TemporaryDirectory() as tmp:
            bundle = write_bundle(Path(tmp) / "bundle", members, stages, thresholds)
            if evaluate is not None:
                scores = evaluate(bundle)
                tracker.log_metrics(run_id, scores)
                metrics.update(scores)
            model_dir = Path(tmp) / "model"
            save_pyfunc(model_dir, bundle, "image" in stages,
                        input_example(dataset, "image" in stages, cfg.data.image_size))
            tracker.log_artifacts(run_id, model_dir, "model")
    version = register(tracker, request.name, "model", run_id, request.sweeps, decisions, metrics)
    if version is None:  # queued: the server was away; it may be back within the wait
        tracker.close(wait_s=OUTBOX_WAIT_S)
        version = tracker.alias_version(request.name, ALIAS)
    folder = write_summary(request, cfg, decisions, metrics, version, run_id)
    first = members[0]
    return ExportResult(request.name, version, run_id, f"models:/{request.name}@{ALIAS}", cfg, decisions, metrics,
                        first.workspace, first.results, folder, members,
                        base_overrides(request, decisions))


def _refuse_degenerate(ws: Workspace, metrics: dict[str, float], last: str, force: bool) -> None:
    """A final model no better on validation than predicting the most frequent label for every
    row learned nothing: it is not registered as anyone's champion unless forced."""
    from mmsearch.training import most_frequent_label_f1

    baseline = most_frequent_label_f1(ws.targets[ws.split.val], ws.targets[ws.split.train])
    score = metrics.get("ensemble/final_val_f1", metrics.get(f"{last}/final_val_f1",
                                                             metrics.get(f"member0/{last}/final_val_f1")))
    metrics["baseline_most_frequent_label_f1"] = baseline
    if score is not None and score <= baseline + DEGENERATE_MARGIN and not force:
        raise mmsearch.MmsearchError(
            f"the exported model scores validation samples-F1 {score:.4f}, no better than predicting the most frequent "
            f"label for every row ({baseline:.4f}): it learned nothing, so it is not registered. Pass --force to "
            "register it anyway")


def _member_prefix(index: int, size: int) -> str:
    return f"member{index}/" if size > 1 else ""


def _train_member(cfg: ExperimentConfig, dataset: Dataset, index: int, size: int, stages: Sequence[str],
                  tracker: Tracker, run_id: str) -> Member:
    if index:
        cfg = with_overrides(cfg, {"run.seed": cfg.run.seed + index}, where=f"ensemble member {index}")
    ws = Workspace(cfg, dataset)
    prefix = _member_prefix(index, size)
    results = {s: run_stage(ws, s, [MlflowEpochLogger(tracker, run_id, f"{prefix}{s}/"),
                                    _progress(ws, s, f"member {index + 1}/{size}" if size > 1 else "")],
                            reuse=s in _feeding(stages))
               for s in stages}
    return Member(ws, results, results[stages[-1]].fit.thresholds)


def _progress(ws: Workspace, stage: str, which: str) -> EpochProgress:
    epochs = getattr(ws.cfg, stage).optim.epochs
    return EpochProgress(f"export {stage}" + (f" ({which})" if which else ""), epochs)


def _feeding(stages: Sequence[str]) -> set[str]:
    """The stages whose features another exported stage trains on: those ship the cached network
    the features came from (see ``run_stage(reuse=True)``), never a second training of it."""
    return {s for later in stages for s in STAGE_INPUTS[later]}


def _combine(members: Sequence[Member], stages: Sequence[str]) -> tuple[np.ndarray, dict[str, float]]:
    """Thresholds and validation metrics of the averaged probabilities (one member: its own)."""
    last = stages[-1]
    metrics = {f"{_member_prefix(i, len(members))}{s}/final_{k}": v
               for i, m in enumerate(members) for s, r in m.results.items() for k, v in r.metrics.items()}
    if len(members) == 1:
        return members[0].thresholds, metrics
    ws = members[0].workspace
    truth = ws.targets[ws.split.val]
    probs = np.mean([m.results[last].fit.val_probs for m in members], axis=0)
    # The same rule as each member's: tuned thresholds only where the config asks for them.
    thresholds, found = validation_scores(truth, probs, ws.cfg.run.tune_thresholds)
    metrics.update({f"ensemble/final_{k}": v for k, v in found.items()})
    return thresholds, metrics


def _refit(member: Member, stages: Sequence[str], tracker: Tracker, run_id: str, index: int, size: int) -> Member:
    """Train again on training + validation rows for the epochs early stopping chose."""
    overrides: dict[str, Any] = {}
    for s in stages:
        fitted = member.results[s].fit
        # Exactly the epochs whose weights the model kept, with nothing to stop or restore.
        overrides[f"{s}.optim.epochs"] = max(1, fitted.best_epoch if fitted.restored else len(fitted.history))
        overrides[f"{s}.optim.early_stopping"] = None
        overrides[f"{s}.optim.restore_best"] = False
    full_cfg = with_overrides(member.workspace.cfg, overrides, where="--full refit")
    full_ws = Workspace(full_cfg, member.workspace.dataset, refit=True)
    prefix = f"full/{_member_prefix(index, size)}"
    refit = {s: run_stage(full_ws, s, [MlflowEpochLogger(tracker, run_id, f"{prefix}{s}/"),
                                       _progress(full_ws, s, "full refit" + (f" {index + 1}/{size}" if size > 1 else ""))],
                          reuse=s in _feeding(stages))
             for s in stages}
    return Member(full_ws, refit, member.thresholds)


def write_bundle(folder: Path, members: Sequence[Member], stages: Sequence[str], thresholds: np.ndarray) -> Path:
    """One member: a format-1 bundle. Several: format 2, each member a format-1 bundle under
    ``members/`` and the ensemble's thresholds at the top."""
    if len(members) == 1:
        return _write_pipeline(folder, members[0], stages, thresholds)
    folder.mkdir(parents=True)
    names = [f"members/{i}" for i in range(len(members))]
    for name, member in zip(names, members):
        _write_pipeline(folder / name, member, stages, member.thresholds)
    meta = {"format": 2, "mmsearch": mmsearch.__version__, "stages": list(stages), "labels": list(LABELS),
            "members": names, "thresholds": [float(t) for t in thresholds]}
    (folder / BUNDLE_FILE).write_text(json.dumps(meta))
    return folder


def _write_pipeline(folder: Path, member: Member, stages: Sequence[str], thresholds: np.ndarray) -> Path:
    folder.mkdir(parents=True)
    ws = member.workspace
    meta: dict[str, Any] = {"format": 1, "mmsearch": mmsearch.__version__, "stages": list(stages),
                            "labels": list(LABELS), "config": to_dict(ws.cfg), "thresholds": [float(t) for t in thresholds]}
    for stage in stages:
        state, extra = STAGES.get(stage).export(ws, member.results[stage])
        torch.save(state, folder / f"{stage}.pt")
        meta.update(extra)
    (folder / BUNDLE_FILE).write_text(json.dumps(meta))
    return folder


def _requirements() -> list[str]:
    out = []
    for name in REQUIREMENTS:
        try:
            out.append(f"{name}=={metadata.version(name).split('+')[0]}")
        except metadata.PackageNotFoundError:
            out.append(name)
    return out


def _signature(needs_images: bool) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = [ColSpec("string", "ImageID"), ColSpec("string", "Caption")]
    if needs_images:  # one of the two per row (the predictor says which row lacks both)
        inputs += [ColSpec("string", IMAGE_COLUMN, required=False), ColSpec("string", IMAGE_DATA_COLUMN, required=False)]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema([ColSpec("string", "ImageID"), ColSpec("string", "Labels")]))


def input_example(dataset: Dataset, needs_images: bool, image_size: int, rows: int = 2) -> pd.DataFrame:
    """Real rows for the model's input example (what ``mlflow models serve`` users copy): images
    inline, as a client on another machine sends them, as JPEGs at the model's own input size."""
    first = dataset.test if dataset.n_test else dataset.train
    ids, captions = list(first.image_ids[:rows]), list(first.captions[:rows])
    example = {"ImageID": ids, "Caption": captions}
    if needs_images:
        example[IMAGE_DATA_COLUMN] = [_jpeg_base64(dataset.image_path(i), image_size) for i in ids]
    return pd.DataFrame(example)


def _jpeg_base64(path: Path, size: int) -> str:
    from PIL import Image

    with Image.open(path) as img:
        out = io.BytesIO()
        img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR).save(out, "JPEG", quality=90)
    return base64.b64encode(out.getvalue()).decode("ascii")


def save_pyfunc(model_dir: Path, bundle: Path, needs_images: bool, example: pd.DataFrame | None = None) -> None:
    import mlflow.pyfunc

    from mmsearch.serving import model_code

    # The package travels with the model (code_paths), so a serving environment needs only the
    # pinned requirements, not an mmsearch install; inference imports no training module.
    mlflow.pyfunc.save_model(str(model_dir), python_model=model_code.__file__, artifacts={"bundle": str(bundle)},
                             code_paths=[str(Path(mmsearch.__file__).parent)], pip_requirements=_requirements(),
                             signature=_signature(needs_images), input_example=example,
                             metadata={NEEDS_IMAGES: needs_images})


def register(tracker: Tracker, name: str, artifact_path: str, run_id: str, sweeps: Sequence[str],
             decisions: Sequence[Decision], metrics: dict[str, float] | None = None) -> str | None:
    """A new version of ``name`` from the export run's ``artifact_path``, aliased champion, through
    the tracker like every write (None: queued while the server is away, registered when it is
    back). The version carries what a registry page should answer without opening the run: where
    it came from (the sweeps and each decision) and how it scored (validation metrics as tags
    and in its text)."""
    headline = {k: v for k, v in (metrics or {}).items() if k.rsplit("/", 1)[-1].startswith("final_val_f1")
                or k == "baseline_most_frequent_label_f1"}
    tags = {"sweeps": ",".join(sweeps), **{f"decided.{d.key}": f"{d.value}: {d.describe()}" for d in decisions},
            **{f"metric.{k}": f"{v:.4f}" for k, v in headline.items()}}
    scores = ", ".join(f"{k} {v:.4f}" for k, v in headline.items())
    description = (f"From sweep(s) {', '.join(sweeps) or '(none: the paper defaults)'}; validation {scores or '-'}. "
                   + " ".join(f"{d.key}={d.value} ({d.describe()})." for d in decisions))
    return tracker.register_version(name, run_id, artifact_path, tags, description, ALIAS)


def base_overrides(request: ExportRequest, decisions: Sequence[Decision]) -> dict[str, Any]:
    """The ``--set`` values the final model kept: part of its provenance, as the user decided them
    (a sweep's decision on the same key replaced its value)."""
    decided = {d.key for d in decisions}
    return {k: v for k, v in request.overrides.items() if k not in decided}


def write_summary(request: ExportRequest, cfg: ExperimentConfig, decisions: Sequence[Decision],
                  metrics: dict[str, float], version: str, run_id: str) -> Path:
    folder = request.out_dir / request.name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(dump_yaml(cfg))
    (folder / "provenance.json").write_text(json.dumps([asdict(d) for d in decisions], indent=1, default=str))
    lines = [f"# {request.name} v{version or '(queued: registered when the tracking server is back)'}", "", f"MLflow run `{run_id}`, alias `{ALIAS}`, "
             f"sweeps applied in order: {', '.join(request.sweeps)}{' (refit on train+val)' if request.full else ''}."
             + (f" An ensemble of {request.ensemble} members (seeds {cfg.run.seed} to {cfg.run.seed + request.ensemble - 1}),"
                " probabilities averaged, thresholds tuned on the averaged validation probabilities."
                if request.ensemble > 1 else ""), "",
             "| setting | value | decided by | trial | run | score |", "|---|---|---|---|---|---|"]
    for d in decisions:
        lines.append(f"| `{d.key}` | {d.value} | {d.describe()} | {d.trial} | {d.run_id or ''} | {d.metric} {d.score:.4f} |")
    for key, value in base_overrides(request, decisions).items():
        lines.append(f"| `{key}` | {value} | --set (base override) | | | |")
    lines += ["", "Validation metrics (before any refit):", ""]
    lines += [f"- {k}: {v:.4f}" for k, v in sorted(metrics.items()) if "_val_" in k]
    (folder / "summary.md").write_text("\n".join(lines) + "\n")
    with (folder / "model.yaml").open("w") as handle:
        yaml.safe_dump({"model": request.name, "version": version}, handle)
    return folder
