"""How far a reproduction is, across its sweeps: what its progress line counts. The sweeps
themselves run under ``search.Runner`` (one pool of worker slots, shared in the plan's order),
as ``sweep run`` runs one."""

from __future__ import annotations

from mmsearch.search import Coordinator, summarize


def cells_done(coordinators: list[Coordinator]) -> tuple[int, int, list[tuple[str, str, float]], dict[str, list[str]]]:
    """Cells COMPLETE and in all; this run's finished cells as (sweep, level, seconds); and the
    levels of each sweep's cells still waiting."""
    done = total = 0
    mine, waiting = [], {}
    for c in coordinators:
        trials = c.keeper.trials()
        s = summarize(c.ctx.spec, c.ctx.study_name, trials, looks=c.looks)
        done, total = done + s.done, total + s.total
        waiting[c.ctx.spec.name] = [str(t.params.get("level", t.user_attrs.get("level", ""))) for t in trials
                                    if t.state.name in ("WAITING", "RUNNING")]
        for t in trials:
            if t.state.name == "COMPLETE" and t.user_attrs.get("coordinator") == c.token and t.duration is not None:
                mine.append((c.ctx.spec.name, str(t.params.get("level", "")), t.duration.total_seconds()))
    return done, total, mine, waiting
