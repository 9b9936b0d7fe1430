"""One summary of a study, shared by the progress line, the end of a run and ``sweep status``;
and the sweep's report (the paper's charts) logged to its MLflow parent run."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from mmsearch.charts import (
    ablation_figure,
    bubble_data,
    bubble_figure,
    curves_data,
    curves_figure,
    length_data,
    length_figure,
    oov_data,
    oov_figure,
    report_html,
)
from mmsearch.search._context import SweepContext
from mmsearch.search._spec import SweepSpec
from mmsearch.stats import (
    POWER,
    PRIOR_PAIR_SD,
    Design,
    LevelStats,
    Looks,
    TrialRecord,
    best_level,
    comparisons_level,
    detectable_difference,
    level_stats,
    margin_for,
    pooled_spread,
)

if TYPE_CHECKING:
    import optuna

    from mmsearch.pipeline import Workspace
    from mmsearch.tracking import Tracker

log = logging.getLogger("mmsearch.sweep")
# The method in plain words, shown under every level table (status, the MLflow description, the report).
VERDICTS_IN_WORDS = (
    "Each level is compared with the base level repeat by repeat (the same seed gives both the same initial weights "
    "and batch order, so the difference cancels the seeds' noise). *better*/*worse*: the corrected interval of the "
    "difference excludes 0; *equivalent*: it lies inside the margin; *inconclusive*: neither yet, with the repeats "
    "per level that would likely decide it.")
FINISHED = ("COMPLETE", "PRUNED", "FAIL")


def records(trials: list[Any]) -> list[TrialRecord]:
    """Optuna's frozen trials as chart records (cell from the trial's attributes)."""
    out = []
    for t in trials:
        level = t.params.get("level", t.user_attrs.get("level"))
        repeat = t.user_attrs.get("repeat")
        out.append(TrialRecord(
            number=t.number, state=t.state.name, value=t.value if t.state.name == "COMPLETE" else None,
            level=str(level) if level is not None else None, repeat=int(repeat) if repeat is not None else None,
            params=dict(t.params), curve={int(k): float(v) for k, v in t.intermediate_values.items()},
            attrs=dict(t.user_attrs)))
    return out


@dataclass
class SweepSummary:
    study_name: str
    spec: SweepSpec
    counts: dict[str, int]  # every trial of the study, by state
    done: int  # ablation: cells with a COMPLETE trial; search: finished trials
    total: int  # ablation: cells; search: the trial budget
    mine: dict[str, int]  # this run's trials by state
    levels: list[LevelStats]  # ablation: per-level statistics and verdicts against the base level
    best_level: str | None
    best_value: float | None  # ablation: the best level's mean; search: the best trial's value
    best_trial: TrialRecord | None  # search: the best trial; ablation: the best level's best repeat
    errors: dict[int, str]
    durations: list[float] = field(default_factory=list)  # seconds of this run's finished trials
    # Cells asked for but not COMPLETE (ablation: "level r{repeat}"; search: "trial N"), with why.
    missing: list[tuple[str, str]] = field(default_factory=list)
    data: str = ""  # the dataset folder the study ran on
    seconds: float = 0.0
    parent_run_id: str = ""
    experiment_id: str = ""
    design: Design = field(default_factory=Design)  # how the levels' comparisons were judged

    @property
    def ran(self) -> int:
        return sum(self.mine.get(s, 0) for s in FINISHED)

    @property
    def progress(self) -> str:
        return f"{self.done}/{self.total} " + ("cells complete" if self.spec.mode == "ablation" else "trials finished")

    @property
    def best_params(self) -> dict[str, Any]:
        if self.spec.mode == "ablation":
            return dict(self.spec.level(self.best_level).set) if self.best_level is not None else {}
        return dict(self.best_trial.params) if self.best_trial is not None else {}


def summarize(spec: SweepSpec, study_name: str, trials: list[Any], me: str | None = None,
              budget: int | None = None, looks: Looks = Looks()) -> SweepSummary:
    """``looks``: the analyses a sequential study planned (its ``sequential`` attribute), over
    which the error rate is held; one for fixed repeats."""
    recs = records(trials)
    design = spec.design.with_looks(looks)
    counts: dict[str, int] = {}
    mine: dict[str, int] = {}
    durations = []
    for t, r in zip(trials, recs):
        counts[r.state] = counts.get(r.state, 0) + 1
        if me is not None and r.attrs.get("coordinator") == me:
            mine[r.state] = mine.get(r.state, 0) + 1
            if t.duration is not None and r.state in FINISHED:
                durations.append(t.duration.total_seconds())
    complete = [r for r in recs if r.state == "COMPLETE" and r.value is not None]
    pick = max if spec.maximize else min
    levels: list[LevelStats] = []
    best_lv = best_value = best = None
    if spec.mode == "ablation":
        levels = level_stats(recs, spec.labels, spec.base, spec.maximize, design)
        best_lv = best_level(levels, spec.maximize)
        if best_lv is not None:
            best_value = next(b.mean for b in levels if b.level == best_lv)
            best = pick((r for r in complete if r.level == best_lv), key=lambda r: float(r.value or 0))
        done = len({(r.level, r.repeat) for r in complete})
        # Repeats added until decided are cells too, beyond the sweep's first round.
        total = len(set(spec.cells()) | {(r.level, r.repeat) for r in recs if r.level is not None})
    else:
        if complete:
            best = pick(complete, key=lambda r: float(r.value or 0))
            best_value = best.value
        done = sum(counts.get(s, 0) for s in FINISHED)
        total = budget or spec.n_trials
    errors = {r.number: str(r.attrs.get("error", "")) for r in recs if r.state == "FAIL"}
    missing = _missing(spec, recs, me, only_mine=budget is not None)
    return SweepSummary(study_name, spec, counts, done, total, mine, levels, best_lv, best_value, best, errors, durations,
                        missing, design=design)


def _missing(spec: SweepSpec, recs: list[TrialRecord], me: str | None, only_mine: bool) -> list[tuple[str, str]]:
    """The cells a run was asked for that have no COMPLETE trial, each with the reason its last
    trial gave. Asked for: every cell of an ablation, or (``--trials N``, ``only_mine``) those this
    run tried; a search's trials this run failed."""
    ours = [r for r in recs if me is not None and r.attrs.get("coordinator") == me]
    if spec.mode != "ablation":
        return [(f"trial {r.number}", _reason(r)) for r in ours if r.state == "FAIL"]
    by_cell: dict[tuple[str | None, int | None], list[TrialRecord]] = {}
    for r in recs:
        by_cell.setdefault((r.level, r.repeat), []).append(r)
    added = sorted({(r.level, r.repeat) for r in recs if r.level is not None and r.repeat is not None} - set(spec.cells()),
                   key=str)  # repeats added until decided
    asked = [*spec.cells(), *added] if not only_mine else sorted({(r.level, r.repeat) for r in ours}, key=str)
    out = []
    for level, repeat in asked:
        trials = by_cell.get((level, repeat), [])
        if any(r.state == "COMPLETE" for r in trials):
            continue
        last = max(trials, key=lambda r: r.number, default=None)
        out.append((f"{spec.factor}={level} r{repeat}", "never ran" if last is None else _reason(last)))
    return out


def _reason(r: TrialRecord) -> str:
    if r.state == "FAIL":
        return "FAIL: " + (str(r.attrs.get("error") or "no reason recorded").splitlines() or [""])[0][:200]
    return r.state


def versus_base(bar: LevelStats, base: str | None) -> str:
    """A level's verdict against the base level, in words, with its interval and method."""
    if bar.is_base:
        return "it is the base level"
    if base is None:
        return "no level of this sweep is the base experiment's own, so there is no base to compare with"
    if bar.comparison is None:
        return f"the base level {base} has no completed repeat to compare with"
    return bar.comparison.describe(f"the base level {base}")


@dataclass(frozen=True)
class Power:
    """What a sweep can decide before its cost is paid (``sweep show``, ``sweep run``, ``reproduce --plan``)."""

    text: str
    enough: bool  # it can detect a difference as small as its margin

    def __str__(self) -> str:
        return self.text


def power_statement(spec: SweepSpec, levels: list[LevelStats] | None = None, looks: Looks | None = None) -> Power:
    """The smallest true difference from the base the sweep detects with 80% power at its
    repeats, from the spread its trials measured (else the prior), against its margin; a
    1-repeat sweep says it can decide nothing."""
    if spec.mode != "ablation":
        return Power("", True)
    if spec.base is None:
        return Power(f"{spec.name}: no level is the base experiment's own, so no comparison is made (nothing to "
                     "decide)", True)
    comparisons = max(1, len(spec.labels) - 1)
    sd, df = pooled_spread(levels or [])
    source = (f"the spread its {df + comparisons} paired repeat(s) measured (sd of a paired difference {sd:.4f})"
              if df else f"the prior spread {PRIOR_PAIR_SD} (no paired repeats measured yet)")
    sd = sd if df else PRIOR_PAIR_SD
    design = spec.design.with_looks(looks or spec.looks)
    margin = design.margin
    at = int(spec.repeats)
    if at < 2 and not spec.until_decided:
        return Power(f"{spec.name}: 1 repeat per level gives no interval, so this sweep can decide nothing (no better, "
                     "worse or equivalent); use --until-decided, or repeats of 3 or more", False)
    level = comparisons_level(design, comparisons)
    parts = []
    if at >= 2:
        mdd = detectable_difference(sd, at, level)
        parts.append(f"at {at} repeats it detects a true difference of {mdd:.4f} or more ({POWER:.0%} power)")
    if spec.until_decided:
        mdd = detectable_difference(sd, spec.max_repeats, level)
        parts.append(f"with repeats added until decided, up to {spec.max_repeats} per level (at most "
                     f"{len(spec.labels) * spec.max_repeats} cells), {mdd:.4f} or more")
    enough = mdd <= margin
    tail = (f"; within its margin ±{margin:g}" if enough else
            f"; larger than its margin ±{margin:g}: smaller real effects will read inconclusive (more repeats, or "
            "--until-decided)")
    return Power(f"{spec.name}: {'; '.join(parts)}, judged by {source}{tail}", enough)


def progress_line(s: SweepSummary, workers: int, started: float, now: float, upstream: str = "") -> str:
    """``upstream``: what the upstream job is doing while it runs (no trial has started then)."""
    mine = ", ".join(f"{s.mine[k]} {k.lower()}" for k in (*FINISHED, "RUNNING") if s.mine.get(k))
    line = f"[{s.spec.name}] {s.progress}; this run: {mine or upstream or 'starting'}"
    others = s.counts.get("RUNNING", 0) - s.mine.get("RUNNING", 0)
    if others > 0:
        line += f"; {others} running elsewhere"
    if s.best_value is not None and s.best_level is not None:  # a mean: it moves as repeats come in
        line += f"; best level so far {s.spec.factor or 'level'}={s.best_level} (mean {s.spec.metric} {s.best_value:.4f})"
    elif s.best_value is not None:
        line += f"; best {s.spec.metric} {s.best_value:.4f}"
    if s.durations and s.done < s.total:
        eta = float(np.mean(s.durations)) * (s.total - s.done) / max(1, workers)
        line += f"; ETA {eta:.0f}s"
    return line + f" [{now - started:.0f}s]"


# -- the report ---------------------------------------------------------------------------------
def sweep_charts(ctx: SweepContext, study: optuna.Study, recs: list[TrialRecord], design: Design | None = None
                 ) -> tuple[list[tuple[str, Any]], dict[str, Any]]:
    """The paper's charts for this sweep, and the data behind each."""
    spec = ctx.spec
    design = design or spec.design
    figures: list[tuple[str, Any]] = []
    data: dict[str, Any] = {}
    wanted = set(spec.charts) | {"curves"} | ({"ablation"} if spec.mode == "ablation" else set())
    factor = spec.factor or ("level" if spec.mode == "ablation" else None)
    if "curves" in wanted:
        data["curves"] = curves_data(recs, factor)
        figures.append((f"{spec.metric} per epoch", curves_figure(data["curves"], f"{spec.metric} per epoch, one colour "
                                                                                   "per level", spec.metric)))
    if "losses" in wanted:
        for metric in ("train_loss", "val_loss"):
            data[metric] = curves_data(recs, factor, metric)
            figures.append((f"{metric} per epoch", curves_figure(data[metric], f"{metric} per epoch", metric)))
    if "ablation" in wanted and spec.mode == "ablation":
        levels = level_stats(recs, spec.labels, spec.base, spec.maximize, design)
        data["ablation"] = [b.as_dict() for b in levels]
        figures.append(("Ablation", ablation_figure(levels, factor or "level", spec.metric)))
        if "losses" in wanted:
            loss_recs = [TrialRecord(r.number, r.state, r.attrs.get("final_val_loss"), r.level, r.repeat)
                         for r in recs]
            losses = level_stats(loss_recs, spec.labels, spec.base, False, replace(design, margin=margin_for("val_loss")))
            data["ablation_val_loss"] = [b.as_dict() for b in losses]
            figures.append(("Ablation (validation loss)", ablation_figure(losses, factor or "level", "val_loss")))
    if "bubble" in wanted:
        data["bubble"] = bubble_data(recs, spec.labels)
        figures.append(("Size vs F1", bubble_figure(data["bubble"])))
    if "lengths" in wanted or "oov" in wanted:
        from mmsearch.pipeline import Workspace

        ws = Workspace(ctx.base, ctx.dataset)
        if "lengths" in wanted:
            data["lengths"] = length_data([len(t) for t in ws.tokens[: ctx.dataset.n_train]])
            figures.append(("Caption lengths", length_figure(data["lengths"])))
        if "oov" in wanted:
            data["oov"] = sweep_oov(ctx, ws)
            figures.append(("Words without embeddings", oov_figure(data["oov"])))
    if spec.mode == "search" and sum(r.state == "COMPLETE" for r in recs) >= 2:
        from optuna import visualization

        for chart, fn in (("importance", visualization.plot_param_importances),
                          ("parallel", visualization.plot_parallel_coordinate)):
            try:
                figures.append((chart, fn(study)))
            except Exception as exc:  # importance needs variance among trials
                log.info("chart %s skipped: %s", chart, exc)
    return figures, data


def sweep_oov(ctx: SweepContext, ws: Workspace, also: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Words of the captions without a vector in each corpus the sweep's levels use (and ``also``)."""
    from mmsearch.config import with_overrides
    from mmsearch.text import oov_report

    corpora: dict[str, int | None] = {}
    for lv in ctx.spec.level_list:
        t = with_overrides(ctx.base, lv.set).text
        corpora[t.corpus] = t.embedding_dim
    for corpus in also:
        corpora.setdefault(corpus, None)
    return oov_data([oov_report(c, ws.tokens, dim=d, seed=ctx.base.run.seed, sentences_key=ws.sentences_key())
                     for c, d in corpora.items()])


def level_metrics(summary: SweepSummary) -> dict[str, float]:
    """Parent-run metrics per level (MLflow keys allow letters, digits, ``_-./`` and spaces)."""
    out: dict[str, float] = {}
    for b in summary.levels:
        key = "".join(c if c.isalnum() or c in "_-. /" else "_" for c in str(b.level))
        for name in ("mean", "std", "ci_low", "ci_high", "diff", "diff_low", "diff_high"):
            value = getattr(b, name)
            if not math.isnan(value):
                out[f"level/{key}/{summary.spec.metric}_{name}"] = value
        out[f"level/{key}/n"] = b.n
    return out


def level_cells(bar: LevelStats) -> tuple[str, str, str]:
    """A level's mean ± std, 95% CI and verdict against the base level, as ``sweep status``, the
    experiment description and the dashboard note print them: the verdict, the difference's
    interval at the level its family tested it at, and for an undecided one the repeats that
    would likely decide it."""
    mean = "-" if bar.n == 0 else f"{bar.mean:.4f} ± {bar.std:.4f}"
    ci = "-" if math.isnan(bar.ci_low) else f"{bar.ci_low:.4f}..{bar.ci_high:.4f}"
    c = bar.comparison
    if bar.is_base or c is None:
        return mean, ci, bar.vs_base
    vs = c.verdict.value
    if c.verdict.value == "equivalent":  # the two one-sided tests' interval, the one that decided it
        vs += f" ({c.tost_low:+.4f}..{c.tost_high:+.4f} in ±{c.margin:g})"
    elif not math.isnan(c.low):
        vs += f" ({c.low:+.4f}..{c.high:+.4f})"
        if c.verdict.value in ("better", "worse") and c.equivalent:
            vs += f", < ±{c.margin:g}"
    if c.verdict.value == "inconclusive":
        vs += (f", ~{c.repeats_to_decide} repeats" if c.repeats_to_decide else
               ", 1 repeat: no interval" if not c.difference.testable else ", >100 repeats")
    return mean, ci, vs


def describe_sweep(ctx: SweepContext) -> str:
    """The experiment's description: what the sweep varies, from which figure, by which metric."""
    spec = ctx.spec
    repeats = (f"{spec.repeats} repeats, more until decided (at most {spec.max_repeats})" if spec.until_decided
               else f"{spec.repeats} repeats")
    what = (f"factor `{spec.factor}`, levels {', '.join(spec.labels)} x {repeats}"
            if spec.mode == "ablation" else f"search over {', '.join(spec.space)} ({spec.n_trials} trials)")
    return f"{spec.description}. Paper {spec.paper}. {what}; metric {spec.metric}."


def log_report(ctx: SweepContext, study: optuna.Study, tracker: Tracker, parent: str, summary: SweepSummary) -> None:
    """The sweep's charts, their data and per-level statistics on its MLflow parent run."""
    figures, data = sweep_charts(ctx, study, records(study.get_trials(deepcopy=False)), summary.design)
    tracker.log_text(parent, report_html(f"{ctx.spec.name}: {ctx.spec.description}", figures,
                                         f"<p>Paper {ctx.spec.paper}. Study {ctx.study_name}.</p>"), "charts/report.html")
    tracker.log_text(parent, json.dumps(data, indent=1, default=str), "charts/data.json")
    metrics = {f"trials_{k.lower()}": v for k, v in summary.counts.items()} | level_metrics(summary)
    if summary.best_value is not None:
        metrics[f"best_{ctx.spec.metric}"] = summary.best_value
    tracker.log_metrics(parent, metrics)
    # The answer in columns of its own (the parent's level column reads "★ 2"), shown by the links mmsearch prints.
    tracker.set_tags(parent, {"best_level": summary.best_level or "",
                              "best_params": json.dumps(summary.best_params, default=str),
                              "mlflow.runName": parent_run_name(ctx, summary),
                              **({"level": f"★ {summary.best_level}"} if summary.best_level is not None else {})})
    if summary.experiment_id:
        tracker.share_view(summary.experiment_id, table_columns(ctx.spec.metric))
    if summary.levels:
        tracker.log_text(parent, level_csv(summary), "levels.csv")
        if summary.experiment_id:
            # The answer on the first line: the description shows one line until expanded.
            tracker.describe_experiment(summary.experiment_id,
                                        f"{best_markdown(summary)}\n\n{describe_sweep(ctx)}\n\n{level_markdown(summary)}")
        dashboard_note(study, ctx, summary)


def dashboard_note(study: optuna.Study, ctx: SweepContext, summary: SweepSummary) -> None:
    """The level table as the study's note in optuna-dashboard (when installed): the dashboard's
    "Best Trial" is the single best trial, not the best level, which is a mean over repeats."""
    try:
        from optuna_dashboard import save_note
    except ImportError:
        return
    save_note(study, f"## {ctx.spec.name}\n\n{describe_sweep(ctx)}\n\n{level_markdown(summary)}\n\n"
                     f"The dashboard's *Best Trial* is the one best trial; the best **level** above is the best mean "
                     f"{ctx.spec.metric} over its repeats (ties: more repeats, then the base level), as "
                     f"`mmsearch sweep status {ctx.spec.name}`, the report and `export` decide it.")


def parent_run_name(ctx: SweepContext, summary: SweepSummary) -> str:
    """The answer in the first characters of the one column the MLflow runs table always shows (it
    cuts names at about 16 characters; the parent row is collapsed; MLflow shows no metric column
    unless asked): ``★ 2 · 0.7752 · dropout_count · STUDY``, the best level and its mean first."""
    spec = summary.spec
    if summary.best_value is None:
        return ctx.study_name
    if summary.best_level is not None:
        best, what = summary.best_level, (spec.factor or "level").rsplit(".", 1)[-1]
    else:
        best, what = (f"trial {summary.best_trial.number}" if summary.best_trial is not None else "best"), spec.metric
    return f"★ {best} · {summary.best_value:.4f} · {what} · {ctx.study_name}"


def table_columns(metric: str) -> list[str]:
    """The runs table's columns a sweep's links open with (MLflow's column keys): the best level's
    mean on the parent row, each trial's final value, and which level and repeat a row is."""
    return [f"metrics.`best_{metric}`", f"metrics.`final/{metric}`", "tags.`level`", "tags.`repeat`"]


def level_csv(summary: SweepSummary) -> str:
    """Each level's statistics as a table (the parent run's ``levels.csv``)."""
    columns = ["level", "n", "mean", "std", "ci_low", "ci_high", "diff", "diff_low", "diff_high", "diff_confidence",
               "p", "method", "vs_base", "repeats_to_decide", "is_base", "is_best", "degenerate", "failed"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for b in summary.levels:
        row = b.as_dict()
        writer.writerow("" if v is None or isinstance(v, float) and math.isnan(v) else f"{v:.6f}"
                        if isinstance(v, float) else v for v in (row.get(c, "") for c in columns))
    return out.getvalue()


def best_markdown(summary: SweepSummary) -> str:
    """``**Best dropout_count: 2**: mean val_f1 0.7752 (95% CI …, n=3), not distinguishable from the base level 1 (…)``."""
    spec = summary.spec
    bar = next((b for b in summary.levels if b.level == summary.best_level), None)
    if bar is None:
        return f"No level of {spec.name} has a complete trial yet."
    ci = "" if math.isnan(bar.ci_low) else f"95% CI {bar.ci_low:.4f}..{bar.ci_high:.4f}, "
    return (f"**Best mean {(spec.factor or 'level').rsplit('.', 1)[-1]}: {summary.best_level}**: {spec.metric} "
            f"{bar.mean:.4f} ({ci}n={bar.n}), {versus_base(bar, spec.base)}")


def level_markdown(summary: SweepSummary) -> str:
    """The per-level table of ``sweep status``, in markdown, for the experiment's description."""
    spec = summary.spec
    factor = spec.factor or "level"
    lines = [f"**Levels** (study `{summary.study_name}`, {summary.done}/{summary.total} cells complete; "
             f"best by mean {spec.metric}: **{summary.best_level}**)", "",
             f"| {factor} | n | mean ± std | 95% CI | vs base (corrected CI of the difference) |", "|---|---|---|---|---|"]
    for b in summary.levels:
        mean, ci, vs = level_cells(b)
        name = f"**{b.level}** ★" if b.is_best else str(b.level)
        lines.append(f"| {name} | {b.n} | {mean} | {ci} | {vs}{' · ≤ baseline' if b.degenerate else ''} |")
    lines += ["", f"*Verdicts*: {summary.design.describe()}. {VERDICTS_IN_WORDS}"]
    return "\n".join(lines)
