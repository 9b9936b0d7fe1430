"""What a sweep command was asked, resolved: the sweep file, its base config, the dataset, the
storage and the study's name; and finding the studies a sweep already has in a storage."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmsearch._cache import stable_hash
from mmsearch.config import ExperimentConfig, RunConfig, request_overrides, stage_needs_images, to_dict
from mmsearch.data import Dataset, demo_dataset
from mmsearch.errors import ConfigError, MmsearchError, Problem
from mmsearch.search._liveness import DEFAULT_GRACE_S, DEFAULT_HEARTBEAT_S
from mmsearch.search._spec import SweepSpec, load_sweep
from mmsearch.search._storage import StudyStorage, open_storage

if TYPE_CHECKING:
    from mmsearch.search._summary import SweepSummary

log = logging.getLogger("mmsearch.sweep")


class SweepInterrupted(MmsearchError):
    """Ctrl-C (or SIGTERM) stopped the sweep; what it held is failed and its runs ended."""

    def __init__(self, message: str, summary: SweepSummary | None = None) -> None:
        super().__init__(message)
        self.summary = summary


MAX_WORKERS = 256  # worker processes one coordinator starts


@dataclass(kw_only=True)
class StudyPlace:
    """Which studies, where: what every command that runs or reads sweeps is given (``sweep run``
    and ``status``, ``export``, ``report``, ``reproduce``), declared once. The profile, the data
    and the ``--set`` values select the study; the storage and the tracking URI say where it and
    its MLflow runs are."""

    experiment: str | None = None
    data: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    storage: str | None = None
    tracking_uri: str | None = None

    def place(self) -> dict[str, Any]:
        """These fields, to hand on to another request (``SweepRequest(sweep=..., **place())``)."""
        return {"experiment": self.experiment, "data": self.data, "overrides": dict(self.overrides),
                "storage": self.storage, "tracking_uri": self.tracking_uri}


@dataclass
class SweepRequest(StudyPlace):
    """Everything a sweep command was asked; picklable, so workers rebuild from it."""

    sweep: str
    workers: int | None = 1  # None: one per GPU given to the sweep (see ``placed``), else 1
    trials: int | None = None  # ablation: at most this many missing cells now; search: total trials
    study_name: str | None = None
    progress: bool = True
    heartbeat_s: float = DEFAULT_HEARTBEAT_S
    grace_s: float = DEFAULT_GRACE_S  # a RUNNING trial silent this long is judged dead
    # GPUs the workers share, as CUDA_VISIBLE_DEVICES entries ("0,1"); None: every visible GPU
    # when run.device is auto or cuda; "" or "none": no GPU.
    gpus: str | None = None
    # Repeats added to undecided comparisons after each round, up to max_repeats (the sweep
    # file's, 10 by default, when None); ``repeats: auto`` in a sweep file asks the same.
    until_decided: bool = False
    max_repeats: int | None = None

    @property
    def gpu_list(self) -> list[str] | None:
        """``--gpus`` parsed (the one place it is): None when not given (every visible GPU), []
        for "" or "none" (no GPU at all), else the CUDA_VISIBLE_DEVICES entries."""
        if self.gpus is None:
            return None
        return [g.strip() for g in self.gpus.split(",") if g.strip() and g.strip() != "none"]

    def check(self) -> None:
        """Refuse counts that cannot mean anything before a study or a run is created."""
        problems = []
        if self.workers is not None and self.workers < 1:
            problems.append(Problem("--workers", f"{self.workers}: must be 1 or more"))
        elif self.workers is not None and self.workers > MAX_WORKERS:
            problems.append(Problem("--workers", f"{self.workers}: at most {MAX_WORKERS} on one machine (more machines "
                                                 "share a study: run the same command there with one --storage)"))
        if self.trials is not None and self.trials < 1:
            problems.append(Problem("--trials", f"{self.trials}: must be 1 or more"))
        if self.heartbeat_s <= 0:
            problems.append(Problem("--heartbeat", f"{self.heartbeat_s}: must be > 0 seconds"))
        if self.max_repeats is not None and not 2 <= self.max_repeats <= 100:
            problems.append(Problem("--max-repeats", f"{self.max_repeats}: must be 2..100"))
        if self.grace_s <= self.heartbeat_s:
            problems.append(Problem("--grace", f"{self.grace_s}: must be longer than the heartbeat ({self.heartbeat_s} s)"))
        if problems:
            raise ConfigError("invalid sweep options", problems)


@dataclass
class SweepContext:
    request: SweepRequest
    spec: SweepSpec
    base: ExperimentConfig
    dataset: Dataset
    study_name: str
    storage: StudyStorage


def resolve(request: SweepRequest, storage: StudyStorage | None = None, checked: bool = False) -> SweepContext:
    """Validate the request (unless ``checked`` already), the sweep, its base experiment and the
    dataset; name the study."""
    if not checked:
        request.check()
    overrides = {**request.overrides, **request_overrides(data=request.data)}
    spec, base = load_sweep(request.sweep, request.experiment, overrides)
    if request.until_decided:
        spec.until(request.max_repeats)
    if request.max_repeats is not None:
        if not spec.until_decided:
            raise ConfigError("invalid sweep options", [Problem("--max-repeats", f"{request.max_repeats}: only with "
                                                                "--until-decided (or repeats: auto in the sweep file)")])
        spec.max_repeats = request.max_repeats
        if spec.mode == "ablation" and spec.max_repeats < int(spec.repeats):
            raise ConfigError("invalid sweep options", [Problem("--max-repeats", f"{spec.max_repeats}: below the "
                                                                f"sweep's {spec.repeats} repeats")])
    root = Path(base.data.path) if base.data.path else demo_dataset()
    dataset = Dataset.open(root, require_images=True if stage_needs_images(spec.stage) else None)
    base.data.path = str(root)
    storage = storage or open_storage(request.storage, request.grace_s)
    name = request.study_name or _existing_or_new(storage, spec, base, dataset)
    return SweepContext(request, spec, base, dataset, name, storage)


def _identity(base: ExperimentConfig) -> dict[str, Any]:
    """What a study measures: the base config less where its trials run (device, threads, loader
    threads), which a user changes to move a sweep, not to ask another question, and less how
    its results are judged (``stats``), which reads the same trials again."""
    config = to_dict(base)
    config["run"] = {k: v for k, v in config["run"].items() if k not in RunConfig.placement}
    config.pop("stats", None)
    return config


def study_name(spec: SweepSpec, base: ExperimentConfig, dataset: Dataset) -> str:
    identity = {"base": _identity(base), "data": dataset.fingerprint, "stage": spec.stage, "mode": spec.mode,
                "metric": spec.metric}
    return f"{spec.name}@{spec.experiment}-{stable_hash(identity, 6)}"


def legacy_study_name(spec: SweepSpec, base: ExperimentConfig, dataset: Dataset) -> str | None:
    """The name an fp32 study had before placement left the identity and precision joined it
    (mmsearch 0.1's first studies), so that those resume instead of starting over."""
    if base.run.precision != "fp32":
        return None
    config = to_dict(base)
    config.pop("stats", None)
    config["run"].pop("precision", None)
    if config["run"].get("num_workers") is None:
        config["run"]["num_workers"] = 0  # that version's default
    identity = {"base": config, "data": dataset.fingerprint, "stage": spec.stage, "mode": spec.mode,
                "metric": spec.metric}
    return f"{spec.name}@{spec.experiment}-{stable_hash(identity, 6)}"


def _existing_or_new(storage: StudyStorage, spec: SweepSpec, base: ExperimentConfig, dataset: Dataset) -> str:
    import optuna

    name, legacy = study_name(spec, base, dataset), legacy_study_name(spec, base, dataset)
    if legacy is None or legacy == name:
        return name
    names = set(optuna.study.get_all_study_names(storage.optuna))
    if name not in names and legacy in names:
        log.info("resuming %s, named as before device, threads and loader threads left the study identity", legacy)
        return legacy
    return name


def selecting_flags(attrs: dict[str, Any]) -> str:
    """The command-line flags that select a study, from what its creator recorded."""
    flags = [f"--experiment {attrs['experiment']}"] if attrs.get("experiment") else []
    if attrs.get("data"):
        flags.append(f"--data {attrs['data']}")
    flags += [f"--set {k}={v}" for k, v in (attrs.get("set") or {}).items()]
    return " ".join(flags)


def find_study(request: SweepRequest, command: str) -> tuple[str, StudyStorage, str | None]:
    """The study a ``status`` or ``export`` means: the one its flags derive when it exists;
    without flags, the sweep's only study (said so); else an error listing each study with the
    flags that select it, or the command that creates one. Returns (name, storage, note)."""
    import optuna

    storage = open_storage(request.storage)
    if request.study_name:
        return request.study_name, storage, None
    sweep = load_sweep(request.sweep, request.experiment)[0].name
    prefix = f"{sweep}@"
    names = sorted(n for n in optuna.study.get_all_study_names(storage.optuna) if n.startswith(prefix))
    flagged = request.experiment is not None or request.data is not None or bool(request.overrides)
    if flagged:
        wanted = resolve(request, storage).study_name
        if wanted in names:
            return wanted, storage, None
    elif len(names) == 1:
        return names[0], storage, f"using {names[0]}, the only study of sweep {sweep} in {storage}"
    if not names:
        raise MmsearchError(f"sweep {sweep} has no study in {storage}: run `mmsearch sweep run {sweep}` (with the "
                            f"--experiment/--data/--set you want) first, then `mmsearch {command}`")
    listing = []
    for name in names:
        attrs = optuna.load_study(study_name=name, storage=storage.optuna).user_attrs
        listing.append(Problem(name, f"mmsearch {command} {selecting_flags(attrs)}".rstrip() + f"  (or --study {name})"))
    what = "none matches those flags" if flagged else "say which"
    raise ConfigError(f"sweep {sweep} has {len(names)} studies in {storage}; {what}", listing)


def open_study(request: SweepRequest, command: str) -> tuple[SweepRequest, Any, StudyStorage, str | None]:
    """The study a command means (see ``find_study``), and the request completed with the
    experiment, data and ``--set`` values the study was run with wherever it names none.
    Returns (that request, study, storage, note)."""
    import optuna

    name, storage, note = find_study(request, command)
    study = optuna.load_study(study_name=name, storage=storage.optuna)
    attrs = study.user_attrs
    ran_with = replace(request, study_name=name, experiment=request.experiment or attrs.get("experiment"),
                       data=request.data or attrs.get("data"), overrides=request.overrides or attrs.get("set") or {})
    return ran_with, study, storage, note
