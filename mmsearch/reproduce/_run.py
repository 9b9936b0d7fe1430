"""``mmsearch reproduce``: every sweep ``findings/paper.yaml`` names that can run on this data,
planned and costed first, run on one schedule, then the two final models and the report.

Several processes (on one machine or many) running the same command on one storage share
everything: each sweep's cells through its study, as ``sweep run`` shares them; the rest through a
ledger, an Optuna study of its own (``reproduce@…``) whose attributes record each process (with a
heartbeat), who trains the final models and writes the report, and what they found. Exactly one
process does that last part; one that dies doing it is taken over by the next command.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmsearch._cache import stable_hash
from mmsearch._disk import drop_reserves, make_reserves
from mmsearch._interrupts import interrupt_once
from mmsearch._processes import ProcessIdentity, judge
from mmsearch.config import ExperimentConfig, request_overrides, stage_needs_images
from mmsearch.data import ImageCache, check_room_for, demo_dataset, image_cache
from mmsearch.errors import ConfigError, MmsearchError, Problem
from mmsearch.reproduce._final import (
    MEASURED,
    PAPER,
    FactorDecision,
    FinalComparison,
    FinalModel,
    decide,
    measured_config,
    member_scores,
    split_scores,
)
from mmsearch.reproduce._plan import (
    ASSUMED_OVERHEAD_S,
    Plan,
    final_seconds,
    measured_overhead,
    share_upstream,
    simulate,
    slowdown,
    sweep_plan,
)
from mmsearch.search import (
    DEFAULT_GRACE_S,
    DEFAULT_HEARTBEAT_S,
    Heartbeat,
    StudyPlace,
    SweepContext,
    SweepRequest,
    SweepSummary,
    open_storage,
    resolve,
)
from mmsearch.stats import ALPHA
from mmsearch.tracking import Tracker

if TYPE_CHECKING:
    from mmsearch.search import Runner

log = logging.getLogger("mmsearch.reproduce")
LEDGER_PREFIX = "reproduce@"
RECORD_PREFIX = "process:"
FINAL_CLAIM, FINAL, REPORT = "final_claim", "final", "report"


@dataclass
class ReproduceRequest(StudyPlace):
    workers: int | None = None  # default: one per GPU given, else 1
    gpus: str | None = None
    only: list[str] = field(default_factory=list)  # globs over sweep names
    skip: list[str] = field(default_factory=list)
    repeats: int = 3  # members of each final model (seeds run.seed + 0..)
    export: str | None = None  # register the better final model as NAME@champion
    findings: Path | None = None
    out: Path = Path("reports/reproduction.html")
    heartbeat_s: float = DEFAULT_HEARTBEAT_S
    grace_s: float = DEFAULT_GRACE_S
    progress: bool = True
    until_decided: bool = False  # every sweep adds repeats to its undecided comparisons (``sweep run --until-decided``)
    max_repeats: int | None = None

    def sweep_request(self, sweep: str) -> SweepRequest:
        return SweepRequest(sweep=sweep, **self.place(), workers=self.workers or 1,
                            gpus=self.gpus, progress=False, heartbeat_s=self.heartbeat_s, grace_s=self.grace_s,
                            until_decided=self.until_decided, max_repeats=self.max_repeats)


@dataclass
class Selection:
    contexts: list[SweepContext]
    skipped: list[tuple[str, str]]  # sweeps that cannot run on this data, with why
    # Levels of a runnable sweep whose weights or word vectors are not on this offline machine:
    # their cells fail at once with that message (as in `sweep run`) and the loop does not wait for them.
    unrunnable: dict[str, dict[str, str]] = field(default_factory=dict)  # sweep -> level -> why


@dataclass
class ReproduceOutcome:
    plan: Plan
    summaries: dict[str, SweepSummary] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    final: FinalComparison | None = None
    report_path: Path | None = None
    report_run_id: str = ""
    seconds: float = 0.0
    note: str = ""  # who else trains the final models and writes the report
    timings: dict[str, float] = field(default_factory=dict)  # seconds of: plan, sweeps, final, report

    unrunnable: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def missing(self) -> list[tuple[str, str, str]]:
        """(sweep, cell, why) of every cell asked for that is not COMPLETE; the cells of levels the
        plan said cannot run here are not asked for."""
        out = []
        for name, s in self.summaries.items():
            cannot = self.unrunnable.get(name, {})
            out += [(name, cell, why) for cell, why in s.missing
                    if cell.rsplit(" r", 1)[0].split("=", 1)[-1] not in cannot]
        out += [(name, "every cell", why.splitlines()[0]) for name, why in self.failed.items()]
        return out


# -- selecting the sweeps -------------------------------------------------------------------------
def select(request: ReproduceRequest) -> Selection:
    """The findings' sweeps, narrowed by --only/--skip, each validated and resolved; those that
    cannot run on this data are set aside with the reason. Every problem is reported at once."""
    from mmsearch.report import FINDINGS, load_findings
    from mmsearch.search import load_sweep

    names = list(dict.fromkeys(f.sweep for f in load_findings(request.findings or FINDINGS)))
    problems = [Problem(f"--only {g}", f"matches no sweep of the findings; they are: {', '.join(names)}")
                for g in request.only if not any(fnmatch.fnmatchcase(n, g) for n in names)]
    problems += [Problem(f"--skip {g}", f"matches no sweep of the findings; they are: {', '.join(names)}")
                 for g in request.skip if not any(fnmatch.fnmatchcase(n, g) for n in names)]
    if request.only:
        names = [n for n in names if any(fnmatch.fnmatchcase(n, g) for g in request.only)]
    names = [n for n in names if not any(fnmatch.fnmatchcase(n, g) for g in request.skip)]
    if request.repeats < 1:
        problems.append(Problem("--repeats", f"{request.repeats}: must be 1 or more"))
    overrides = {**request.overrides, **request_overrides(data=request.data)}
    contexts, skipped, unrunnable = [], [], {}
    storage = None
    for name in names:
        try:
            spec, base = load_sweep(name, request.experiment, overrides)
            root = Path(base.data.path) if base.data.path else demo_dataset()
            if stage_needs_images(spec.stage) and not (root / "data").is_dir():
                skipped.append((spec.name, f"its {spec.stage} stage needs images and {root} has none (no data/ folder)"))
                continue
            storage = storage or open_storage(request.storage)
            ctx = resolve(request.sweep_request(name), storage)
        except ConfigError as exc:
            problems += exc.problems
            continue
        lacking = _without_assets(ctx)
        if lacking and len(lacking) == max(1, len(spec.labels) if spec.mode == "ablation" else 1):
            skipped.append((spec.name, "no level's assets are on this machine and it is offline: "
                            + ", ".join(dict.fromkeys(lacking.values()))))
            continue
        contexts.append(ctx)
        if lacking:
            unrunnable[spec.name] = lacking
    if problems:
        raise ConfigError("invalid reproduce request", problems)
    if not contexts:
        raise MmsearchError("no sweep can run here: " + "; ".join(f"{n}: {why}" for n, why in skipped) if skipped
                            else "--only/--skip left no sweep to run")
    return Selection(contexts, skipped, unrunnable)


def _without_assets(ctx: SweepContext) -> dict[str, str]:
    """The levels (an ablation's labels, else "") that need weights or word vectors this offline
    machine does not have, each with what it lacks."""
    from mmsearch.pipeline import missing_assets
    from mmsearch.reproduce._plan import level_config

    spec = ctx.spec
    labels: list[str] = spec.labels if spec.mode == "ablation" else [""]
    out = {}
    for label in labels:
        gone = missing_assets(level_config(ctx, label) if label else ctx.base, stage_needs_images(spec.stage))
        if gone:
            out[label] = ", ".join(f"{a.kind} not in {Path(a.where).parent}" for a in gone)
    return out


def _final_assets_or_raise(base: ExperimentConfig, stages: list[str]) -> None:
    """The final models train the base configuration: without its weights or word vectors on an
    offline machine nothing can close the loop, so say all of what is missing before anything runs."""
    from mmsearch.pipeline import missing_assets

    gone = missing_assets(base, "image" in stages)
    if gone:
        raise MmsearchError("the final models train the base configuration, and this machine is offline without its "
                            + "; ".join(f"{a.kind} {a.name} (expected in {a.where}: {a.fix})" for a in gone)
                            + "; nothing was planned or run")


# -- the plan ------------------------------------------------------------------------------------
def _image_caches(contexts: list[SweepContext]) -> list[ImageCache]:
    """The decoded-image caches the selected sweeps read (one per image size), built or not."""
    sizes = {c.base.data.image_size for c in contexts if stage_needs_images(c.spec.stage)}
    dataset = contexts[0].dataset
    return [image_cache(dataset, size) for size in sorted(sizes)] if dataset.has_images else []


def _cache_lines(caches: list[ImageCache]) -> list[str]:
    from mmsearch._disk import free_mb

    lines = []
    for folder in dict.fromkeys(c.path.parent for c in caches):
        here = [c for c in caches if c.path.parent == folder]
        lines.append(f"  caches: {'; '.join(c.describe() for c in here)}, in {folder} "
                     f"({free_mb(folder) / 1024:.1f} GB free when planned)")
    return lines


def make_plan(request: ReproduceRequest, selection: Selection | None = None) -> tuple[Plan, Selection]:
    """Costs from the storage's finished trials where there are some, else a calibration."""
    import optuna

    from mmsearch.reproduce._calibrate import calibrate

    selection = selection or select(request)
    contexts = selection.contexts
    storage = contexts[0].storage
    names = set(optuna.study.get_all_study_names(storage.optuna))
    studies = {c.spec.name: optuna.load_study(study_name=c.study_name, storage=storage.optuna)
               for c in contexts if c.study_name in names}
    every = [t for s in studies.values() for t in s.get_trials(deepcopy=False)]
    overhead = measured_overhead(every)
    source = f"median of {sum(1 for t in every if t.state.name == 'COMPLETE')} finished trial(s) in the storage" \
        if overhead is not None else "assumed until a trial here measures it"
    overhead = ASSUMED_OVERHEAD_S if overhead is None else overhead
    workers = request.workers or 1
    base = contexts[0].base
    measured_by_study = {c.spec.name for c in contexts if c.spec.name in studies and any(
        t.state.name == "COMPLETE" for t in studies[c.spec.name].get_trials(deepcopy=False))}
    stages = sorted({c.spec.stage for c in contexts if c.spec.name not in measured_by_study})
    final_stages = _final_stages(contexts)
    _final_assets_or_raise(base, final_stages)
    caches = _image_caches(contexts)
    check_room_for(caches)  # the calibration decodes first: a disk too small is said before, with every size
    cache_lines = _cache_lines(caches)
    for line in cache_lines:
        log.info("%s", line.strip())
    calibration = calibrate(base, contexts[0].dataset, sorted(set(stages) | set(final_stages)), workers)
    plans = [sweep_plan(c, studies.get(c.spec.name), calibration.costs, overhead) for c in contexts]
    share_upstream(plans, overhead)
    plan = Plan(plans, selection.skipped, workers, overhead, source, calibration,
                final_seconds(calibration.costs, request.repeats, final_stages, overhead), selection.unrunnable)
    plan.schedule_s = simulate(plans, workers)
    plan.caches = cache_lines
    from mmsearch.runtime import idle_cpu_threads

    _, plan.cpus_now, plan.busy_now = idle_cpu_threads()
    plan.slowdown_now = slowdown(plan.busy_now, plan.cpus_now, workers)
    return plan, selection


def _final_stages(contexts: list[SweepContext]) -> list[str]:
    """The stages of the final models: every stage the data allows (as `mmsearch export`)."""
    from mmsearch.config import STAGE_NAMES

    images = contexts[0].dataset.has_images
    return [s for s in STAGE_NAMES if images or not stage_needs_images(s)]


# -- the run -------------------------------------------------------------------------------------
def reproduce_paper(request: ReproduceRequest, plan_printer: Callable[[Plan], None] | None = None) -> ReproduceOutcome:
    from mmsearch.search import Coordinator, Runner, assign_workers, begin_run, decode_images

    started = time.time()
    interrupt_once()
    places, tracker = begin_run(request.sweep_request("reproduce"))
    plan, selection = make_plan(request)
    planned = time.time()
    if plan_printer is not None:
        plan_printer(plan)
    contexts, gpus, workers = assign_workers(selection.contexts, request.workers)
    selection.contexts = contexts
    decode_images(contexts)
    reserves = make_reserves(list(places.values()))
    ledger = Ledger(contexts, request)
    ledger.join()
    outcome = ReproduceOutcome(plan, unrunnable=selection.unrunnable)
    outcome.timings["plan"] = planned - started
    try:
        # The plan's order is the policy: a free worker slot goes to the first sweep with a cell to claim.
        runner = Runner([Coordinator(ctx, tracker, gpus, places) for ctx in contexts], workers,
                        resume="rerun the same `mmsearch reproduce` command",
                        progress=_progress(plan, workers) if request.progress else None)
        outcome.summaries = runner.run(started)
        outcome.failed = {name: str(exc) for name, exc in runner.failed.items()}
        outcome.timings["sweeps"] = time.time() - planned
        ledger.finish_sweeps()
        if not outcome.missing:
            _close_the_loop(request, selection, ledger, tracker, outcome)
        ledger.leave("ended")
    except BaseException:
        ledger.leave("stopped")
        raise
    # Only after a clean end: a worker still stopping reads a vanished reserve as a full disk
    # (a reserve left by a crash is removed by the next sweep that makes one there).
    drop_reserves(reserves)
    outcome.seconds = time.time() - started
    return outcome


def _progress(plan: Plan, workers: int) -> Callable[[Runner, float], str]:
    """Sweeps and cells done, elapsed, and what is left: the plan's estimate of each sweep's missing
    cells, scaled by how this run's finished cells of that sweep (else of every sweep) compared
    with their estimates."""
    from mmsearch.reproduce._schedule import cells_done

    def line(runner: Runner, started: float) -> str:
        done, total, mine, left_by_sweep = cells_done(runner.coordinators)
        ratios: dict[str, list[float]] = {}
        for sweep, level, seconds in mine:
            ratios.setdefault(sweep, []).append(seconds / max(1e-3, plan.estimate(sweep, level)))
        every = [r for rs in ratios.values() for r in rs]
        overall = sum(every) / len(every) if every else 1.0
        left = sum(plan.estimate(sweep, level) * (sum(ratios[sweep]) / len(ratios[sweep]) if sweep in ratios else overall)
                   for sweep, levels in left_by_sweep.items() for level in levels) / max(1, workers) + plan.final_s
        finished = len(runner.summaries) + len(runner.failed)
        return (f"[reproduce] sweeps {finished}/{len(runner.coordinators)}, cells {done}/{total}; "
                f"{time.time() - started:.0f}s elapsed, about {left:.0f}s left"
                + (f" (measured/planned {overall:.2f})" if every else ""))

    return line


def _close_the_loop(request: ReproduceRequest, selection: Selection, ledger: Ledger, tracker: Tracker,
                    outcome: ReproduceOutcome) -> None:
    """Once for every process: the final models and the report, by whichever process claims them."""
    from mmsearch.report import ReportRequest, reproduce

    claim = ledger.claim()
    if claim is None:
        outcome.note = ledger.note
        return
    try:
        digest = ledger.measured_digest()
        final = ledger.final(digest)
        started = time.time()
        if final is None:
            alpha = selection.contexts[0].base.stats.alpha if selection.contexts else ALPHA  # --set stats.alpha
            decisions = decide(selection.contexts, outcome.summaries, alpha)
            final = train_finals(request, selection, decisions, tracker)
            ledger.set_final(digest, final)
        else:
            log.warning("the final models of these measurements were trained before: %s", ", ".join(
                f"{m.name} v{m.version}" for m in final.models.values()))
        outcome.timings["final"] = time.time() - started
        outcome.final = final
        report = ledger.report(digest)
        started = time.time()
        if report is None:
            made = reproduce(ReportRequest(**request.place(), out=request.out, findings=request.findings, final=final))
            report = {"run_id": made.run_id, "path": str(made.path.resolve()), "host": ProcessIdentity.current().host}
            ledger.set_report(digest, report)
        outcome.timings["report"] = time.time() - started
        outcome.report_path, outcome.report_run_id = Path(report["path"]), report["run_id"]
    finally:
        ledger.release()


def train_finals(request: ReproduceRequest, selection: Selection, decisions: list[FactorDecision],
                 tracker: Tracker) -> FinalComparison:
    """The paper's final configuration and the measured one, each ``repeats`` members with the
    same seeds, registered (``reproduce-paper``, ``reproduce-measured``), scored on the test split."""
    from mmsearch.export import Decision, ExportRequest, export_config, register
    from mmsearch.pipeline import foreground_threads

    base = selection.contexts[0].base
    data = Path(str(base.data.path))
    stages = _final_stages(selection.contexts)
    comparison = FinalComparison(decisions, experiment=selection.contexts[0].spec.experiment or "paper")
    configs = {PAPER: base, MEASURED: measured_config(base, decisions)}
    same = not any(d.changed for d in decisions)
    # Both with the same threads, chosen once: on CPU the count changes the sums, and the two models
    # must differ only by the measured settings.
    threads = foreground_threads(base).run.threads
    results = {}
    for role, cfg in configs.items():
        if role == MEASURED and same:
            log.warning("no factor was decided better than its base value: the measured final configuration is "
                        "the base one, so it is not trained twice")
            comparison.models[MEASURED] = replace(comparison.models[PAPER], role=MEASURED)
            continue
        provenance = [Decision(k, v, d.sweep, d.study, d.trial, d.run_id, d.mean, d.metric,
                               f"level {d.chosen!r} (mean of {d.n})", d.trial_score, d.why)
                      for d in decisions if role == MEASURED for k, v in d.settings.items()]
        export = ExportRequest(sweeps=[c.spec.name for c in selection.contexts], name=f"reproduce-{role}",
                               **request.place(), ensemble=request.repeats, out_dir=Path("exports"),
                               caption_only="image" not in stages, force=True)
        log.warning("training the %s final configuration: %d member(s)", role, request.repeats)
        result = export_config(cfg, provenance, export, evaluate=lambda bundle: split_scores(bundle, data)[0],
                               threads=threads)
        scores, ensemble, split = member_scores(result.metrics, request.repeats, stages[-1])
        comparison.models[role] = FinalModel(role, result.name, result.version, result.run_id, scores, ensemble, split)
        results[role] = result
    if request.export:
        better = comparison.better()
        chosen = comparison.models[better]
        register(tracker, request.export, "model", chosen.run_id, [c.spec.name for c in selection.contexts], [],
                 {f"{chosen.split}_f1": chosen.ensemble or math.nan})
        c = comparison.comparison
        why = ("measured decided better" if better == MEASURED else "no factor changed" if comparison.same else
               f"measured {c.verdict.value if c is not None else 'not compared'}, not decided better")
        comparison.champion = f"models:/{request.export}@champion ({better} configuration: {why})"
    return comparison


# -- the ledger ----------------------------------------------------------------------------------
class Ledger:
    """The study that records, for every process running this reproduction: who runs, who trains
    the final models and writes the report, and what they produced (keyed by what was measured)."""

    def __init__(self, contexts: list[SweepContext], request: ReproduceRequest) -> None:
        self.contexts, self.request = contexts, request
        self.storage = contexts[0].storage
        key = stable_hash(sorted(c.study_name for c in contexts), 10)
        self.name = f"{LEDGER_PREFIX}{contexts[0].spec.experiment}-{key}"
        self.token = uuid.uuid4().hex[:12]
        self.note = ""
        self._claim_beat: Heartbeat | None = None

    def join(self) -> None:
        import optuna

        self.study = optuna.create_study(study_name=self.name, storage=self.storage.optuna, load_if_exists=True)
        self.study_id = self.storage.optuna.get_study_id_from_name(self.name)
        self.record = {"owner": ProcessIdentity.current().attr(), "state": "running", "beat": time.time(),
                       "sweeps": [c.spec.name for c in self.contexts]}
        self.study.set_user_attr(RECORD_PREFIX + self.token, dict(self.record))
        self.beat = Heartbeat(self.storage.optuna, self.study_id, self.request.heartbeat_s, RECORD_PREFIX + self.token,
                              self.record)
        self.beat.start()

    def _attrs(self) -> dict[str, Any]:
        import optuna

        return optuna.load_study(study_name=self.name, storage=self.storage.optuna).user_attrs

    def finish_sweeps(self) -> None:
        self.record["state"] = "sweeps done"
        self.study.set_user_attr(RECORD_PREFIX + self.token, dict(self.record))

    def leave(self, state: str) -> None:
        self.beat.stop()
        self.record["state"] = state
        try:
            self.study.set_user_attr(RECORD_PREFIX + self.token, dict(self.record))
        except Exception as exc:  # report the first error, never a second traceback
            log.error("could not record this process's end in the ledger: %s", exc)

    def claim(self) -> dict[str, Any] | None:
        """Take the final models and the report, unless a live process holds them (None, with a note)."""
        with self.storage.lock(self.name):
            held = self._attrs().get(FINAL_CLAIM)
            if held and held.get("token") != self.token and held.get("state") == "working" and \
                    judge(held.get("owner"), held.get("beat"), time.time(), self.request.grace_s) is None:
                who = ProcessIdentity.from_attr(held["owner"])
                self.note = (f"process {who} trains the final models and writes the report; `mmsearch report` (or this "
                             "command again) shows them when it is done")
                return None
            record = {"owner": ProcessIdentity.current().attr(), "beat": time.time(), "token": self.token,
                      "state": "working"}
            self.study.set_user_attr(FINAL_CLAIM, record)
        self._claim_beat = Heartbeat(self.storage.optuna, self.study_id, self.request.heartbeat_s, FINAL_CLAIM, record)
        self._claim_beat.start()
        return record

    def release(self) -> None:
        if self._claim_beat is not None:
            self._claim_beat.stop()
            record = dict(self._claim_beat.coordinator_record or {})
            record["state"] = "done"
            self.study.set_user_attr(FINAL_CLAIM, record)

    def measured_digest(self) -> str:
        """What the sweeps measured: the COMPLETE trials of each study."""
        import optuna

        done = {}
        for c in self.contexts:
            study = optuna.load_study(study_name=c.study_name, storage=self.storage.optuna)
            done[c.study_name] = sorted(t.number for t in study.get_trials(
                deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
        return stable_hash({"done": done, "repeats": self.request.repeats, "export": self.request.export}, 12)

    def final(self, digest: str) -> FinalComparison | None:
        raw = self._attrs().get(FINAL)
        return FinalComparison.from_json(raw["comparison"]) if raw and raw.get("digest") == digest else None

    def set_final(self, digest: str, final: FinalComparison) -> None:
        self.study.set_user_attr(FINAL, {"digest": digest, "comparison": final.to_json()})

    def report(self, digest: str) -> dict[str, Any] | None:
        raw = self._attrs().get(REPORT)
        return raw if raw and raw.get("digest") == digest else None

    def set_report(self, digest: str, report: dict[str, Any]) -> None:
        self.study.set_user_attr(REPORT, {"digest": digest, **report})

