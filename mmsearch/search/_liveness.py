"""Who is alive: processes identify themselves (``mmsearch._processes``), beat a heartbeat, and
dead trials are judged.

Every trial records its ``owner`` (the process running it) and a ``heartbeat`` time that a
thread of that process refreshes every few seconds, whatever the trial is doing: a ResNet epoch
of minutes keeps its trial alive. A RUNNING trial is judged dead when

* its owner ran on this machine (same boot and PID namespace) and that process is gone: known
  at once, whatever the grace; or
* its heartbeat is older than the grace (another machine, or a process that stopped answering).

Coordinators keep the same kind of record in the study, so a new ``sweep run`` knows whether the
sweep's MLflow parent run is still someone's or was left RUNNING by a coordinator that died.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from mmsearch.errors import StudyLockStuck

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

log = logging.getLogger("mmsearch.liveness")
DEFAULT_HEARTBEAT_S = 10.0
DEFAULT_GRACE_S = 600.0  # longer than a paper ResNet epoch (about 400 s), so no stall is mistaken for death


class Heartbeat(threading.Thread):
    """Refreshes the heartbeat of the trials this process runs (and of its coordinator record)
    from a thread, independent of epochs; tells a trial's runner when someone else failed it."""

    def __init__(self, storage: BaseStorage, study_id: int, every_s: float, coordinator_key: str | None = None,
                 coordinator_record: dict[str, Any] | None = None) -> None:
        super().__init__(daemon=True, name="mmsearch-heartbeat")
        self.storage, self.study_id, self.every_s = storage, study_id, every_s
        self.coordinator_key, self.coordinator_record = coordinator_key, coordinator_record
        self._trials: dict[int, threading.Event] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def watch(self, trial_id: int) -> threading.Event:
        """Beat for this trial from now on; the event is set when the trial turns out finished by
        someone else (judged dead elsewhere): its result must then be discarded."""
        revoked = threading.Event()
        with self._lock:
            self._trials[trial_id] = revoked
        self._beat_trial(trial_id, revoked)
        return revoked

    def unwatch(self, trial_id: int) -> None:
        with self._lock:
            self._trials.pop(trial_id, None)

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.beat()

    def beat(self) -> None:
        with self._lock:
            watched = list(self._trials.items())
        for trial_id, revoked in watched:
            self._beat_trial(trial_id, revoked)
        if self.coordinator_key is not None and self.coordinator_record is not None:
            self.coordinator_record["beat"] = time.time()
            try:
                self.storage.set_study_user_attr(self.study_id, self.coordinator_key, dict(self.coordinator_record))
            except StudyLockStuck:  # the wait for the lock says it, and the main flow stops
                pass
            except Exception as exc:  # a missed beat is retried next time; the grace covers it
                log.warning("coordinator heartbeat failed: %s", exc)

    def _beat_trial(self, trial_id: int, revoked: threading.Event) -> None:
        from optuna.exceptions import UpdateFinishedTrialError

        try:
            self.storage.set_trial_user_attr(trial_id, "heartbeat", time.time())
        except UpdateFinishedTrialError:
            revoked.set()
            self.unwatch(trial_id)
        except StudyLockStuck:  # the wait for the lock says it, and the main flow stops
            pass
        except Exception as exc:  # a missed beat is retried next time; the grace covers it
            log.warning("trial heartbeat failed: %s", exc)
