"""Runs whose owning process died without ending them (kill -9 of ``mmsearch export``)."""

from __future__ import annotations

import json
import logging

from mmsearch._processes import ProcessIdentity
from mmsearch.tracking._tracker import Tracker

log = logging.getLogger("mmsearch.tracking")
OWNER_TAG = "owner"  # JSON of the ProcessIdentity that created the run


def end_abandoned_exports(tracker: Tracker) -> int:
    """End KILLED the export runs left RUNNING by a process of this machine that no longer
    exists (kill -9, a power cut): ``export`` and ``sweep status`` call this, as ``sweep run``
    ends the runs of dead trials. Runs of other machines' live or unknown processes stay."""
    ended = 0
    experiments = tracker.client.search_experiments(filter_string="name LIKE 'export/%'", max_results=1000)
    if not experiments:
        return 0
    for run in tracker.client.search_runs([e.experiment_id for e in experiments], "attributes.status = 'RUNNING'",
                                          max_results=5000):
        try:
            owner = ProcessIdentity.from_attr(json.loads(run.data.tags.get(OWNER_TAG, "")))
        except ValueError:
            owner = None
        if owner is None or not owner.local() or owner.alive():
            continue
        tracker.end(run.info.run_id, "KILLED", "owner died", f"{owner} is gone; ended by a later command")
        log.warning("ended MLflow run %s of export %s: its %s is gone", run.info.run_id,
                    run.data.tags.get("model", "?"), owner)
        ended += 1
    return ended
