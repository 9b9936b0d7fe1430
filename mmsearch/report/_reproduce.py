"""``mmsearch report``: the paper reproduced, figure by figure, in one self-contained HTML page.

For each finding of ``findings/paper.yaml`` the report finds the study its sweep left in the
storage, summarises it (mean and 95% CI per level), draws the paper's chart, quotes the paper's
finding beside it and gives the verdict. Sweeps that have not run are listed with the command
that runs them. The page is written to disk and logged to MLflow (experiment ``reproduction``).
"""

from __future__ import annotations

import html
import json
import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmsearch.charts import ablation_figure, page_html
from mmsearch.config import request_overrides, stage_needs_images
from mmsearch.errors import MmsearchError
from mmsearch.report._findings import (
    NOT_RUN,
    Case,
    Finding,
    Verdict,
    judge_findings,
    load_findings,
)
from mmsearch.search import StudyPlace
from mmsearch.stats import ALPHA, Design, LevelStats

if TYPE_CHECKING:
    from mmsearch.reproduce import FinalComparison

log = logging.getLogger("mmsearch.report")


@dataclass
class ReportRequest(StudyPlace):  # which studies: the profile and data they ran with
    out: Path = Path("reports/reproduction.html")  # beside exports/, not loose in the working folder
    findings: Path | None = None
    final: FinalComparison | None = None  # mmsearch.reproduce.FinalComparison: the two final models (``mmsearch reproduce``)
    alpha: float = ALPHA  # the report's false-discovery rate over all its findings' comparisons


@dataclass
class Section:
    finding: Finding
    verdict: Verdict
    study: str | None = None
    levels: list[LevelStats] = field(default_factory=list)
    command: str = ""  # the command that runs the sweep, when it has not run
    figure: Any = None


@dataclass
class Report:
    sections: list[Section]
    path: Path
    run_id: str
    design: Design = field(default_factory=Design)  # the family every finding's comparisons were judged in
    comparisons: int = 0  # how many comparisons that family holds

    @property
    def outcomes(self) -> Counter[str]:
        return Counter(s.verdict.outcome for s in self.sections)


def _study(request: ReportRequest, sweep: str) -> tuple[Any, Any] | None:
    """(context, study) of the sweep's study for the request's profile and data, or None."""
    from mmsearch.search import SweepRequest, open_study, resolve

    try:
        ran_with, study, storage, _ = open_study(SweepRequest(
            sweep=sweep, **{**request.place(), "tracking_uri": None}), f"report (sweep {sweep})")
    except MmsearchError:
        return None
    return resolve(ran_with, storage), study


def _first_sentence(message: str, limit: int = 160) -> str:
    sentence = message.split(". ")[0].split(" On a connected machine")[0]
    return sentence if len(sentence) <= limit else sentence[: limit - 3] + "..."


def _command(request: ReportRequest, sweep: str) -> str:
    from mmsearch.search import selecting_flags

    flags = selecting_flags({"experiment": request.experiment, "data": request.data, "set": request.overrides})
    return f"mmsearch sweep run {sweep} {flags}".rstrip()


def reproduce(request: ReportRequest) -> Report:
    from mmsearch.search import load_sweep, looks_of, records, summarize, sweep_oov
    from mmsearch.tracking import Tracker

    request.overrides = {**request.overrides, **request_overrides(data=request.data)}
    request.overrides.pop("data.path", None)
    tracker = Tracker(request.tracking_uri)  # an unusable store fails before any work
    caption_only = request.data is not None and not (Path(request.data) / "data").is_dir()
    sections: list[Section] = []
    cases: list[Case] = []
    for finding in load_findings(request.findings) if request.findings else load_findings():
        found = _study(request, finding.sweep)
        if found is None:
            stage = load_sweep(finding.sweep)[0].stage
            if caption_only and stage_needs_images(stage):  # no command to offer: it cannot run on this data
                why = f"its {stage} stage needs images and {request.data} has none (no data/ folder)"
                sections.append(Section(finding, Verdict(NOT_RUN, "", why)))
            else:
                sections.append(Section(finding, Verdict(NOT_RUN, "", "the sweep has no study in this storage"),
                                        command=_command(request, finding.sweep)))
            cases.append(Case(finding, [], Design()))
            continue
        ctx, study = found
        trials = study.get_trials(deepcopy=False)
        s = summarize(ctx.spec, ctx.study_name, trials, looks=looks_of(study.user_attrs))
        extra: dict[str, Any] = {"trials": trials}
        if finding.kind == "fewest_oov":
            from mmsearch.pipeline import Workspace

            extra["oov"] = sweep_oov(ctx, Workspace(ctx.base, ctx.dataset), finding.tried)
        cases.append(Case(finding, s.levels, s.design, ctx.spec.maximize, extra))
        figure = ablation_figure(s.levels, ctx.spec.factor or "level", ctx.spec.metric) if s.levels else None
        sections.append(Section(finding, Verdict(NOT_RUN, "", ""), ctx.study_name, s.levels, figure=figure))
    ran = [i for i, sec in enumerate(sections) if sec.study is not None]
    alpha = float(request.overrides.get("stats.alpha", request.alpha))  # --set stats.alpha, as for a sweep
    verdicts, design, compared = judge_findings([cases[i] for i in ran], alpha)
    for i, verdict in zip(ran, verdicts):
        sec, finding = sections[i], sections[i].finding
        if verdict.outcome == NOT_RUN:
            failed = [r.attrs.get("error", "") for r in records(cases[i].extra["trials"])
                      if r.state == "FAIL" and r.level == finding.value]
            if failed:  # why the paper's own level has no result here
                verdict.why = f"{finding.value}'s trials failed: {_first_sentence(failed[0])}"
        sec.verdict = verdict
    report = Report(sections, Path(request.out), "", design, compared)
    report.path.parent.mkdir(parents=True, exist_ok=True)
    page = _render(request, report)
    report.path.write_text(page, encoding="utf-8")
    experiment_id = tracker.experiment("reproduction", "The paper's findings beside what the platform measured "
                                                       "(mmsearch report)")
    with tracker.run(experiment_id, f"{request.experiment or 'studies found'} on {request.data or 'the demo data'}",
                     tags={"experiment": request.experiment or "", "data": request.data or "demo"}) as run_id:
        tracker.log_text(run_id, page, "reproduction.html")
        tracker.log_text(run_id, json.dumps([_row(s) for s in sections], indent=1, default=str), "verdicts.json")
        if request.final is not None:
            tracker.log_text(run_id, json.dumps(request.final.to_json(), indent=1, default=str), "final_models.json")
            tracker.log_text(run_id, "\n".join(final_table(request.final)) + "\n", "final_models.md")
        tracker.log_metrics(run_id, {k.replace(" ", "_"): v for k, v in report.outcomes.items()})
    report.run_id = run_id
    return report


def _row(s: Section) -> dict[str, Any]:
    f = s.finding
    return {"figure": f.figure, "section": f.section, "sweep": f.sweep, "paper": f.value, "kind": f.kind,
            "verdict": s.verdict.outcome, "measured": s.verdict.measured, "why": s.verdict.why, "study": s.study,
            "command": s.command}


def verdict_table(sections: list[Section]) -> list[str]:
    """The verdicts as a Markdown table (the README quotes it)."""
    lines = ["| paper | sweep | paper's finding | measured here | verdict |", "|---|---|---|---|---|"]
    for s in sections:
        f = s.finding
        finding = f"{f.value} best" if f.kind == "best" else (
            f"{', '.join(f.levels)} no different from {f.value}" if f.kind == "no_effect" else f"{f.value}: fewest OOV words")
        lines.append(f"| {f.section}, {f.figure} | {f.sweep} | {finding} | {s.verdict.measured or '-'} | "
                     f"**{s.verdict.outcome}**: {s.verdict.why} |")
    return lines


def _render(request: ReportRequest, report: Report) -> str:
    esc = html.escape
    colours = {"reproduced": "#2ca02c", "not reproduced": "#d62728", "inconclusive": "#ff7f0e", "not run": "#7f7f7f",
               "degenerate": "#9467bd"}
    rows = "".join(
        f"<tr><td>{esc(s.finding.section)}, {esc(s.finding.figure)}</td><td>{esc(s.finding.sweep)}</td>"
        f"<td>{esc(s.finding.value)}</td><td>{esc(s.verdict.measured or '-')}</td>"
        f"<td style='color:{colours[s.verdict.outcome]}'><b>{esc(s.verdict.outcome)}</b></td></tr>" for s in report.sections)
    intro = [f"<p>Profile <b>{esc(request.experiment or 'as each study ran')}</b>, data <b>"
             f"{esc(request.data or 'the demo dataset')}</b>, studies from <code>{esc(str(request.storage or 'the default journal'))}</code>. "
             + ", ".join(f"{n} {k}" for k, n in sorted(report.outcomes.items())) + ".</p>",
             f"<p><b>How the verdicts are decided.</b> {esc(method_paragraph(report))}</p>",
             "<table border='1' cellpadding='4' style='border-collapse:collapse'><tr><th>paper</th><th>sweep</th>"
             "<th>paper's value</th><th>measured here</th><th>verdict</th></tr>" + rows + "</table>"]
    blocks: list[tuple[str, str, Any]] = [("", "\n".join(intro), None)]
    for s in report.sections:
        f = s.finding
        text = (f"<p><i>“{esc(f.quote)}”</i> (section {esc(f.section)}, {esc(f.figure)}; tried "
                f"{esc(', '.join(f.tried))}; metric: {esc(f.metric)})</p>")
        if f.reported:
            text += "<p>The paper reports: " + esc(", ".join(f"{k} {v}" for k, v in f.reported.items())) + "</p>"
        text += f"<p><b style='color:{colours[s.verdict.outcome]}'>{esc(s.verdict.outcome)}</b>: {esc(s.verdict.why)}"
        text += (f" (study <code>{esc(s.study)}</code>)" if s.study else "") + "</p>"
        if s.command:
            text += f"<p>Run it with <code>{esc(s.command)}</code></p>"
        blocks.append((f"{f.section}, {f.figure}: {f.sweep}", text, s.figure))
    if request.final is not None:
        blocks.append(("The measured final model", _final_html(request.final), None))
    return page_html("The paper reproduced, figure by figure", blocks)


def method_paragraph(report: Report) -> str:
    """The method in plain words, for the page and the README."""
    d = report.design
    looks = "" if d.looks == 1 else (f" Sweeps that added repeats until decided split that rate over their "
                                     f"{d.looks} planned rounds.")
    return (f"Each level is compared with the paper's value repeat by repeat: a repeat's seed gives both runs the same "
            f"initial weights and batch order, so their difference cancels most of the seeds' noise (a paired t "
            f"interval; Welch's where fewer than two seeds match). All {report.comparisons} comparisons of this page are "
            f"judged as one family at a false-discovery rate of {d.alpha:.0%} (Benjamini-Hochberg): of the differences "
            f"called real, at most {d.alpha:.0%} are expected to be false, and when no factor matters at all, the chance "
            f"of any false 'better' or 'worse' on the page is at most {d.alpha:.0%}.{looks} A comparison is better or "
            f"worse when its interval excludes 0, equivalent when it lies inside the finding's margin of practical "
            f"equivalence (±0.005 samples-F1 unless the sweep or finding says otherwise), inconclusive otherwise, with "
            f"the repeats that would likely decide it. A 'best' finding is reproduced when no level is decided better "
            f"than the paper's choice and every other is decided worse or equivalent; a 'no effect' finding only when "
            f"every level is decided equivalent, never merely because nothing was distinguishable.")


def _interval(scores: list[float]) -> str:
    from mmsearch.stats import mean_ci

    mean, _, low, high = mean_ci(scores)
    if math.isnan(mean):
        return "-"
    return f"{mean:.4f} (n={len(scores)}, " + ("no interval)" if math.isnan(low) else f"95% CI {low:.4f}..{high:.4f})")


def final_table(final: FinalComparison) -> list[str]:
    """Each factor's decision and the two final models' scores, as Markdown (the README quotes it)."""
    lines = [f"| factor | sweep | {_base_column(final)} | final value | why |", "|---|---|---|---|---|"]
    for d in final.decisions:
        lines.append(f"| `{d.factor}` | {d.sweep} | {d.base or '-'} | {'**' + str(d.chosen) + '**' if d.changed else d.chosen or '-'} "
                     f"| {d.why} |")
    split = final.split
    lines += ["", f"| final model | registered | {split} samples-F1 per member (mean, 95% CI) | averaged model |",
              "|---|---|---|---|"]
    for role, m in final.models.items():
        lines.append(f"| {role} | `{m.name}` v{m.version} | {_interval(m.scores)} | "
                     f"{'-' if m.ensemble is None else f'{m.ensemble:.4f}'} |")
    c = final.comparison
    if final.same:
        lines += ["", "measured = paper: no factor was decided better than its base value, so the measured "
                      "configuration is the paper's, trained once" +
                  (f"; registered as {final.champion}" if final.champion else "")]
    elif c is not None and not math.isnan(c.diff):
        lines += ["", f"measured - paper: **{c.verdict.value}**: measured is {c.describe('paper')}" +
                  (f"; registered as {final.champion}" if final.champion else "")]
    if split != "test":
        lines.append("(no test_labels.csv in the data: scored on the validation split, which the sweeps chose levels on)")
    return lines


def _base_column(final: FinalComparison) -> str:
    return "paper's value" if final.experiment == "paper" else f"base value ({final.experiment})"


def _final_html(final: FinalComparison) -> str:
    esc = html.escape
    rows = "".join(f"<tr><td><code>{esc(d.factor)}</code></td><td>{esc(d.sweep)}</td><td>{esc(str(d.base or '-'))}</td>"
                   f"<td>{'<b>' if d.changed else ''}{esc(str(d.chosen or '-'))}{'</b>' if d.changed else ''}</td>"
                   f"<td>{esc(d.why)}</td></tr>" for d in final.decisions)
    models = "".join(f"<tr><td>{esc(role)}</td><td><code>{esc(m.name)}</code> v{esc(m.version)}</td>"
                     f"<td>{esc(_interval(m.scores))}</td><td>{'-' if m.ensemble is None else f'{m.ensemble:.4f}'}</td></tr>"
                     for role, m in final.models.items())
    c = final.comparison
    summary = ("<p>measured = paper: no factor was decided better than its base value, so the measured "
               "configuration is the paper's, trained once.</p>" if final.same else
               "" if c is None or math.isnan(c.diff) else
               f"<p>measured − paper: <b>{esc(c.verdict.value)}</b>: measured is {esc(c.describe('paper'))}</p>")
    split = final.split
    note = "" if split == "test" else ("<p>No <code>test_labels.csv</code> in the data: scored on the validation split, "
                                       "which the sweeps chose levels on (optimistic for the measured model).</p>")
    profile = "" if final.experiment == "paper" else (
        f" The base experiment is <code>{esc(final.experiment)}</code>: the paper's final configuration as that profile "
        "renders it, so its values (and the model called <i>paper</i>) are the profile's, not always the ones the "
        "table above quotes from the paper.")
    return ("<p>For each factor, a level its sweep decided <i>better</i> than the base value (all sweeps' comparisons "
            "with their base judged as one family at the page's false-discovery rate); an <i>equivalent</i> or "
            "<i>inconclusive</i> level leaves the base value, and the row says which. Both configurations were trained "
            f"with the same seeds (member i of each with seed run.seed + i, compared pair by pair) and registered."
            f"{profile}</p>"
            "<table border='1' cellpadding='4' style='border-collapse:collapse'><tr><th>factor</th><th>sweep</th>"
            f"<th>{esc(_base_column(final))}</th><th>final value</th><th>why</th></tr>" + rows + "</table>"
            f"<p></p><table border='1' cellpadding='4' style='border-collapse:collapse'><tr><th>final model</th>"
            f"<th>registered</th><th>{esc(split)} samples-F1 per member</th><th>averaged model</th></tr>" + models
            + "</table>" + summary + note + (f"<p>Champion: <code>{esc(final.champion)}</code></p>" if final.champion else ""))
