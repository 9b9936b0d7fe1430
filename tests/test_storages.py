"""One storage contract, run against every storage ``--storage`` accepts: a journal file,
PostgreSQL and Redis (each skipped, with the reason, where its server is not running).

The contract: a study lock that excludes every other process, atomic claims of enqueued cells
(each claimed once however many processes ask), and a finished trial that refuses updates, so a
process that was judged dead learns it the moment it writes.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.exceptions import UpdateFinishedTrialError

from mmsearch.errors import MmsearchError
from mmsearch.search import StorageError, open_storage

from _sweepproc import fresh_postgres, fresh_redis


@pytest.fixture(params=["journal", pytest.param("postgresql", marks=pytest.mark.postgres), "redis"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "journal":
        yield str(tmp_path / "journal.log")
    elif request.param == "postgresql":
        with fresh_postgres() as pg:
            yield pg
    else:
        with fresh_redis() as redis_url:
            yield redis_url


def _increment(url: str, rounds: int, start: mp.synchronize.Event) -> None:
    """Read-modify-write a counter under the study lock, with a pause that loses updates unless
    the lock really excludes the other processes."""
    storage = open_storage(url)
    study = optuna.load_study(study_name="contract", storage=storage.optuna)
    start.wait()
    for _ in range(rounds):
        with storage.lock("contract"):
            value = study.user_attrs.get("counter", 0)
            time.sleep(0.01)
            study.set_user_attr("counter", value + 1)


def _claim(url: str, start: mp.synchronize.Event, out: mp.Queue) -> None:
    storage = open_storage(url)
    study = optuna.load_study(study_name="contract", storage=storage.optuna)
    start.wait()
    while True:
        with storage.lock("contract"):
            if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
                break
            trial = study.ask()
        out.put(trial.user_attrs["cell"])
        study.tell(trial, 0.0)


def _processes(target, args: tuple, n: int = 3) -> None:  # type: ignore[no-untyped-def]
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=target, args=(*args, start)) if target is _increment
             else ctx.Process(target=target, args=(args[0], start, args[1])) for _ in range(n)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0


def test_the_study_lock_excludes_every_other_process(url: str) -> None:
    storage = open_storage(url)
    optuna.create_study(study_name="contract", storage=storage.optuna)
    _processes(_increment, (url, 10))
    study = optuna.load_study(study_name="contract", storage=storage.optuna)
    assert study.user_attrs["counter"] == 30  # three processes x ten increments, none lost


def test_each_enqueued_cell_is_claimed_once(url: str) -> None:
    storage = open_storage(url)
    study = optuna.create_study(study_name="contract", storage=storage.optuna)
    for cell in range(12):
        study.enqueue_trial({"x": 0}, user_attrs={"cell": cell})
    queue = mp.get_context("spawn").Queue()
    _processes(_claim, (url, queue))
    claimed = [queue.get(timeout=10) for _ in range(12)]
    assert sorted(claimed) == list(range(12)) and queue.empty()
    assert all(t.state.name == "COMPLETE" for t in study.get_trials())


def test_a_finished_trial_refuses_updates(url: str) -> None:
    storage = open_storage(url)
    study = optuna.create_study(study_name="contract", storage=storage.optuna)
    trial = study.ask()
    st = storage.optuna
    trial_id = st.get_trial_id_from_study_id_trial_number(st.get_study_id_from_name("contract"), trial.number)
    st.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)  # judged dead by another process
    with pytest.raises(UpdateFinishedTrialError):
        st.set_trial_user_attr(trial_id, "heartbeat", time.time())
    with pytest.raises((UpdateFinishedTrialError, ValueError)):
        study.tell(trial, 0.5)


@pytest.mark.parametrize("bad, expected", [
    ("postgresql://postgres@127.0.0.1:1/x", "cannot use the PostgreSQL database"),
    ("postgresql://postgres@127.0.0.1:5432/no_such_database_here", 'database "no_such_database_here" does not exist'),
    ("redis://127.0.0.1:1", "cannot use the Redis server"),
    ("sqlite:///study.db", "SQLite is not safe"),
    ("mysql://root@127.0.0.1/x", "unsupported scheme"),
])
def test_unusable_storages_are_refused_within_seconds_with_the_reason(bad: str, expected: str) -> None:
    started = time.time()
    with pytest.raises(StorageError) as err:
        open_storage(bad)
    assert expected in str(err.value) and time.time() - started < 15
    assert isinstance(err.value, MmsearchError)


def test_a_folder_is_not_a_journal(tmp_path: Path) -> None:
    with pytest.raises(StorageError) as err:
        open_storage(str(tmp_path))
    assert "is a folder" in str(err.value) and "optuna-journal.log" in str(err.value)


def test_passwords_are_masked_in_messages() -> None:
    with pytest.raises(StorageError) as err:
        open_storage("postgresql://user:s3cret@127.0.0.1:1/x")
    assert "s3cret" not in str(err.value) and "user:***@" in str(err.value)
