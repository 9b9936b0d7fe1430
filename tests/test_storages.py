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


def _cmdlines_of_tree(root: int) -> dict[int, str]:
    """Every process descended from ``root`` (itself included): its command line as ``ps`` shows it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = {}, [root]
    while todo:
        pid = todo.pop()
        try:
            out[pid] = (Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
        todo += children.get(pid, [])
    return out


@pytest.mark.postgres
def test_a_storage_password_in_the_environment_is_on_no_command_line(tmp_path: Path, small: dict,
                                                                      speed: dict) -> None:
    """``ps`` shows every user every process's arguments: a PostgreSQL password given through
    MMSEARCH_STORAGE reaches the coordinator and its workers without ever being an argument, and
    the warning for ``--storage`` with a password names that way."""
    from _sweepproc import finish, sets, start, sweep_env, write_sweep

    with fresh_postgres() as pg:
        secret = "pw-" + tmp_path.name[-8:]
        url = pg.replace("postgresql://postgres@", f"postgresql://postgres:{secret}@")  # trust auth: any password
        env = sweep_env(tmp_path, MMSEARCH_STORAGE=url)
        args = ["sweep", "run", str(write_sweep(tmp_path)), "--experiment", "cpu", "--data", small["data.path"],
                *sets(speed), "--workers", "2"]
        proc = start(args, tmp_path, env)
        seen: dict[int, str] = {}
        deadline = time.time() + 300
        while proc.poll() is None and time.time() < deadline:
            seen.update(_cmdlines_of_tree(proc.pid))
            time.sleep(0.2)
        code, out, err = finish(proc, 60)
        assert code == 0, err[-3000:]
        assert len(seen) >= 3, seen  # the coordinator and its workers were sampled
        assert not [c for c in seen.values() if secret in c], seen
        study = optuna.load_study(study_name=optuna.get_all_study_names(pg)[0], storage=pg)
        assert sum(t.state.name == "COMPLETE" for t in study.trials) == 4
        # Given on the command line instead: used, with the way out named.
        code, out, err = finish(start([*args, "--storage", url], tmp_path, sweep_env(tmp_path)), 300)
        assert code == 0 and "visible to every user" in err and "MMSEARCH_STORAGE" in err, err[-2000:]
