"""The plan of ``mmsearch reproduce``, before anything trains: which sweeps run (and which cannot,
and why), their cells, the upstream stages they share, and what each costs on this machine.

Costs come from measurements, never from constants of another machine:

* a sweep whose study already holds finished trials: their own durations, level by level;
* otherwise a calibration (``_calibrate``): each stage of the base configuration trained once on
  this data with a worker's share of the threads, its seconds per epoch and the epochs early
  stopping let it run; the image and text stages it trains are the very upstream networks the
  fusion sweeps need (cached), so the calibration costs them nothing;
* the fixed cost of a trial (worker, MLflow run, Optuna bookkeeping): the median of what the
  storage's finished trials spent beside their fit, else an assumption the plan names.

The total is the schedule the run will follow, simulated: upstream jobs first, then the cells in
the plan's order, each on the worker that frees first.
"""

from __future__ import annotations

import heapq
import math
import statistics
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mmsearch._cache import stable_hash
from mmsearch.config import STAGE_INPUTS, ExperimentConfig, to_dict, with_overrides
from mmsearch.search import SweepContext, looks_of, power_statement, records
from mmsearch.stats import Looks, level_stats

if TYPE_CHECKING:
    import optuna

# The fixed cost of a trial until the storage has measured one (MLflow run, Optuna bookkeeping,
# a forked worker's setup): named in the plan as assumed.
ASSUMED_OVERHEAD_S = 2.0


@dataclass
class StageCost:
    """One stage of the base configuration, as the calibration measured it."""

    stage: str
    epoch_s: float  # seconds per training epoch
    epochs_ran: int  # epochs before early stopping (or the cap)
    epochs_cap: int
    loop_extract_s: float = 0.0  # image: one pass of the backbone over the training rows (a level that runs it every epoch)

    @property
    def stopped_early(self) -> bool:
        return self.epochs_ran < self.epochs_cap


@dataclass
class Calibration:
    costs: dict[str, StageCost]  # as on a quiet machine (see ``load``)
    seconds: float  # what calibrating took in this run (0: read from the cache)
    key: str
    # The load it ran under: CPUs other processes kept busy, of how many, and how much longer that
    # made its epochs (its costs were divided by it).
    busy: float = 0.0
    cpus: int = 0
    factor: float = 1.0


@dataclass
class CellEstimate:
    level: str
    repeat: int
    seconds: float


@dataclass
class SweepPlan:
    ctx: SweepContext
    total: int  # cells
    done: int
    estimates: list[CellEstimate]  # the missing cells, in the order they are enqueued
    source: str  # where the estimates come from
    upstream: tuple[str, ...] = ()  # stages whose features it trains on
    upstream_key: str = ""  # the same key: the same upstream networks, built once
    shared_with: list[str] = field(default_factory=list)
    upstream_s: float = 0.0  # its upstream job, when it is the first of its key
    power: str = ""  # what it can decide at its repeats (``search.power_statement``)

    @property
    def name(self) -> str:
        return self.ctx.spec.name

    @property
    def seconds(self) -> float:
        return sum(e.seconds for e in self.estimates)


@dataclass
class Plan:
    sweeps: list[SweepPlan]
    skipped: list[tuple[str, str]]  # (sweep, why it cannot run here)
    workers: int
    overhead_s: float
    overhead_source: str
    calibration: Calibration | None
    final_s: float  # the two final models, trained one after the other in the foreground
    unrunnable: dict[str, dict[str, str]] = field(default_factory=dict)  # sweep -> level -> what it lacks
    schedule_s: float = 0.0  # the simulated schedule of every missing cell on the workers
    busy_now: float = 0.0  # CPUs other processes keep busy as the plan is made
    cpus_now: int = 0
    slowdown_now: float = 1.0  # what that load would do to the workers' cells
    caches: list[str] = field(default_factory=list)  # the decoded-image caches' sizes, as planned

    @property
    def total_s(self) -> float:
        return self.schedule_s + self.final_s

    @property
    def cells(self) -> int:
        return sum(p.total for p in self.sweeps)

    @property
    def missing(self) -> int:
        return sum(len(p.estimates) for p in self.sweeps)

    def estimate(self, sweep: str, level: str) -> float:
        for p in self.sweeps:
            if p.name == sweep:
                for e in p.estimates:
                    if e.level == level:
                        return e.seconds
        return self.overhead_s

    def lines(self) -> list[str]:
        """The plan as the command prints it."""
        out = [f"plan: {len(self.sweeps)} sweep(s), {self.missing} of {self.cells} cell(s) to run on {self.workers} "
               f"worker(s); estimated {_duration(self.total_s)} ({_duration(self.schedule_s)} of sweeps, "
               f"{_duration(self.final_s)} for the two final models)"]
        width = max([len(p.name) for p in self.sweeps] + [len(n) for n, _ in self.skipped] + [5])
        out.append(f"  {'sweep':<{width}}  stage   cells  to run  estimate  upstream (built once)   from")
        for p in self.sweeps:
            upstream = "-" if not p.upstream else "+".join(p.upstream) + (
                f", shared with {len(p.shared_with)}" if p.shared_with else "")
            per = _duration(p.seconds / max(1, min(self.workers, len(p.estimates))) + p.upstream_s)
            out.append(f"  {p.name:<{width}}  {p.ctx.spec.stage:<6} {p.total:>5}  {len(p.estimates):>6}  {per:>8}  "
                       f"{upstream:<22}  {p.source}")
        for name, why in self.skipped:
            out.append(f"  {name:<{width}}  cannot run here: {why}")
        if any(p.power for p in self.sweeps):
            out.append("  what each sweep can decide (80% power; its comparisons corrected together, as "
                       "`sweep status` judges them):")
            out += [f"    {p.power}" for p in self.sweeps if p.power]
        for name, levels in self.unrunnable.items():
            out.append(f"  {name:<{width}}  level(s) {', '.join(levels)} cannot run here (offline; "
                       f"{'; '.join(dict.fromkeys(levels.values()))}): their cells fail at once, nothing waits for them")
        out += self.caches
        out.append(f"  per-trial overhead {self.overhead_s:.1f} s ({self.overhead_source})"
                   + (f"; calibration {'read from the cache' if not self.calibration.seconds else f'took {self.calibration.seconds:.0f} s'}"
                      if self.calibration else ""))
        c = self.calibration
        if c is not None and c.factor > 1.0:
            out.append(f"  the calibration ran while other processes kept {c.busy:.1f} of {c.cpus} CPUs busy: its epochs "
                       f"took {c.factor:.2f}x longer than on a quiet machine, and its costs are scaled back to one")
        out.append("  the estimate assumes a quiet machine" + (
            f"; {self.busy_now:.1f} of {self.cpus_now} CPUs are busy with other work now: while that lasts, expect up to "
            f"{self.slowdown_now:.1f}x longer" if self.slowdown_now >= 1.1 else ""))
        return out


def slowdown(busy: float, cpus: int, threads: int) -> float:
    """How much longer a run with ``threads`` threads takes while other processes keep ``busy`` of
    the ``cpus`` CPUs busy: the runnable threads share the cores (1 on a quiet machine)."""
    return max(1.0, (busy + threads) / max(1, cpus))


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.1f}min"
    return f"{seconds / 3600:.1f}h"


def upstream_key(ctx: SweepContext) -> str:
    """What a sweep's upstream networks depend on: two sweeps with one key share them."""
    inputs = STAGE_INPUTS[ctx.spec.stage]
    if not inputs:
        return ""
    base = to_dict(ctx.base)
    return stable_hash({"data": ctx.dataset.fingerprint, "stages": {s: base[s] for s in inputs}, "data_cfg": base["data"],
                        "seed": base["run"]["seed"], "precision": base["run"]["precision"]}, 10)


def measured_overhead(trials: list[Any]) -> float | None:
    """What a cell costs beside its fit: the median seconds a finished trial spent outside its fit
    (its MLflow run, data and bookkeeping), plus the median gap between one trial's end and the
    next one's start in the same worker process (claiming it under the study lock)."""
    done = [t for t in trials if t.state.name == "COMPLETE" and t.duration is not None and "fit_seconds" in t.user_attrs]
    if not done:
        return None
    spent = statistics.median(t.duration.total_seconds() - float(t.user_attrs["fit_seconds"]) for t in done)
    by_worker: dict[Any, list[Any]] = {}
    for t in trials:
        if t.datetime_start is not None and t.datetime_complete is not None and t.user_attrs.get("owner"):
            owner = t.user_attrs["owner"]
            by_worker.setdefault((owner.get("host"), owner.get("pid"), owner.get("start")), []).append(t)
    gaps = []
    for runs in by_worker.values():
        runs.sort(key=lambda t: t.datetime_start)
        gaps += [(b.datetime_start - a.datetime_complete).total_seconds() for a, b in zip(runs, runs[1:])]
    gap = statistics.median(g for g in gaps if 0 <= g < 60) if any(0 <= g < 60 for g in gaps) else 0.0
    return max(0.0, spent) + gap


def level_config(ctx: SweepContext, label: str) -> ExperimentConfig:
    return with_overrides(ctx.base, ctx.spec.level(label).set, where=f"{ctx.spec.path} {label}")


def lacks_assets(ctx: SweepContext, label: str) -> bool:
    """Whether the level needs weights or word vectors this offline machine does not have."""
    from mmsearch.config import stage_needs_images
    from mmsearch.pipeline import missing_assets

    return bool(missing_assets(level_config(ctx, label), stage_needs_images(ctx.spec.stage)))


def cell_seconds(ctx: SweepContext, label: str, costs: dict[str, StageCost], overhead: float) -> float:
    """A cell's time from the calibration: its stage's epochs (as many as early stopping let the
    base run, within the level's own cap) times the seconds of one, plus a trial's fixed cost."""
    stage = ctx.spec.stage
    cfg = level_config(ctx, label)
    cost = costs.get(stage)
    if cost is None:
        return overhead
    cap = getattr(cfg, stage).optim.epochs
    epochs = min(cap, cost.epochs_ran) if cost.stopped_early else cap
    epoch_s = cost.epoch_s
    if stage == "image":
        from mmsearch.pipeline import uses_backbone_cache

        if not uses_backbone_cache(cfg) and uses_backbone_cache(ctx.base):
            # The backbone runs in every epoch, not once into a cache; trained, its backward pass
            # costs about twice its forward one (measured: the base backbone's).
            epoch_s += cost.loop_extract_s * (1 if cfg.image.freeze_backbone else 3)
        base_size, size = ctx.base.data.image_size, cfg.data.image_size
        epoch_s *= (size / base_size) ** 2
    return overhead + epochs * epoch_s


def sweep_plan(ctx: SweepContext, study: optuna.Study | None, costs: dict[str, StageCost], overhead: float) -> SweepPlan:
    """The missing cells of one sweep with their estimates: measured by this study's own trials
    where it has any (per level, else the study's mean), else from the calibration."""
    spec = ctx.spec
    trials = study.get_trials(deepcopy=False) if study is not None else []
    recs = records(trials)
    complete = {(r.level, r.repeat) for r in recs if r.state == "COMPLETE"}
    # Repeats until decided: the worst case, every level to the cap.
    sequential = spec.until_decided and spec.base is not None  # without a base nothing is compared, nothing added
    cells = [(lv, r) for lv in spec.labels for r in range(spec.max_repeats)] if sequential else spec.cells()
    missing = [(lv, rp) for lv, rp in cells if (lv, rp) not in complete] if spec.mode == "ablation" else \
        [(f"trial {i}", 0) for i in range(max(0, spec.n_trials - len([r for r in recs if r.state in ("COMPLETE", "PRUNED")])))]
    durations: dict[str, list[float]] = {}
    for t, r in zip(trials, recs):
        if r.state == "COMPLETE" and t.duration is not None:
            durations.setdefault(str(r.level), []).append(t.duration.total_seconds())
    every = [d for ds in durations.values() for d in ds]
    estimates = []
    for level, repeat in missing:
        if spec.mode == "ablation" and lacks_assets(ctx, level):
            seconds = overhead  # it fails at once, with the message the sweep warned about
        elif durations.get(level):
            seconds = statistics.fmean(durations[level])
        elif every:
            seconds = statistics.fmean(every)
        else:
            seconds = cell_seconds(ctx, level if spec.mode == "ablation" else spec.labels[0] if spec.labels else level,
                                   costs, overhead) if spec.mode == "ablation" else _search_seconds(ctx, costs, overhead)
        estimates.append(CellEstimate(level, repeat, seconds))
    source = (f"{len(every)} finished trial(s) of its study" if every else "calibration") if missing else "done"
    if sequential and missing:
        source += f"; worst case, {spec.max_repeats} repeats per level"
    done = len(complete) if spec.mode == "ablation" else spec.n_trials - len(missing)
    total = len(cells) if spec.mode == "ablation" else spec.size
    design = spec.design.with_looks(looks_of(study.user_attrs) if study is not None else Looks())
    levels = level_stats(recs, spec.labels, spec.base, spec.maximize, design) if spec.mode == "ablation" else []
    return SweepPlan(ctx, total, done, estimates, source, STAGE_INPUTS[spec.stage], upstream_key(ctx),
                     power=power_statement(spec, levels).text)


def _search_seconds(ctx: SweepContext, costs: dict[str, StageCost], overhead: float) -> float:
    cost = costs.get(ctx.spec.stage)
    return overhead + (cost.epochs_ran * cost.epoch_s if cost else 0.0)


def simulate(plans: list[SweepPlan], workers: int) -> float:
    """The schedule the run follows, event by event: a worker that frees takes an upstream job
    when one is waiting and none is running, else the first cell in plan order whose sweep is
    ready (its upstream job done), else waits for the next upstream job to end."""
    free = [0.0] * max(1, workers)
    heapq.heapify(free)
    upstream = [p for p in plans if p.upstream and p.estimates]
    ready = {p.name: 0.0 for p in plans if not (p.upstream and p.estimates)}
    cells = [(p.name, e.seconds) for p in plans for e in p.estimates]
    upstream_until, end = 0.0, 0.0
    while cells or upstream:
        now = heapq.heappop(free)
        if upstream and upstream_until <= now:
            job = upstream.pop(0)
            upstream_until = ready[job.name] = now + job.upstream_s
            heapq.heappush(free, upstream_until)
            end = max(end, upstream_until)
            continue
        pick = next((i for i, (name, _) in enumerate(cells) if ready.get(name, math.inf) <= now), None)
        if pick is None:  # nothing ready: idle until the running upstream job ends
            heapq.heappush(free, max(upstream_until, now + 1e-9) if upstream_until > now else
                           min(t for t in ready.values() if t > now) if any(t > now for t in ready.values()) else upstream_until)
            continue
        _, seconds = cells.pop(pick)
        heapq.heappush(free, now + seconds)
        end = max(end, now + seconds)
    return end


def share_upstream(plans: list[SweepPlan], overhead: float) -> None:
    """Group sweeps by upstream key. The calibration trained the base configuration's upstream
    networks into the cache, so each upstream job is a forked worker that loads their features
    (and standardises them once per sweep)."""
    for p in plans:
        if p.upstream:
            p.shared_with = [q.name for q in plans if q is not p and q.upstream_key == p.upstream_key]
            p.upstream_s = overhead


def final_seconds(costs: dict[str, StageCost], repeats: int, stages: list[str], overhead: float) -> float:
    """Two configurations x ``repeats`` members, every stage trained (the paper's first member's
    upstream stages are cached by the sweeps), one after the other in the foreground."""
    per_member = sum(c.epoch_s * c.epochs_ran for s, c in costs.items() if s in stages)
    upstream = sum(c.epoch_s * c.epochs_ran for s, c in costs.items() if s in stages and s != stages[-1])
    return max(0.0, 2 * repeats * per_member - upstream) + 2 * overhead * 3

