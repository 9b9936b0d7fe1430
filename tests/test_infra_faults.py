"""Faults that are not signals, injected into real ``mmsearch sweep run`` processes: a disk that
fills (a real tmpfs of a few MB), a journal torn by one, a lock holder that is stopped (a real
SIGSTOP inside the journal's lock, or the MLflow SQLite store's). Each test reads what Optuna
and MLflow hold afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from mmsearch.search import open_storage

from _sweepproc import (
    assert_every_cell_once,
    finish,
    open_study,
    outcome,
    record,
    runs,
    sets,
    start,
    sweep_env,
    wait_for,
    write_sweep,
)
from conftest import needs_glove, needs_mobilenet, needs_nltk

pytestmark = [needs_glove, needs_mobilenet, needs_nltk]


@contextlib.contextmanager
def tmpfs(path: Path, size_mb: int) -> Iterator[Path]:
    """A real small disk: a tmpfs mounted at ``path`` (needs root, as in CI; skipped elsewhere)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(disk: Path, leave_bytes: int = 0) -> Path:
    """Write one file until the disk has ``leave_bytes`` left (0: until writes fail)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    block = b"\0" * 65536
    try:
        while True:
            free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
            if free <= leave_bytes:
                break
            os.write(fd, block[: max(1, min(len(block), free - leave_bytes))])
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


def _sweep_args(folder: Path, small: dict, speed: dict, epochs: int = 150) -> list[str]:
    trial = {**speed, "fusion.optim.epochs": epochs, "fusion.optim.early_stopping": None}
    return ["sweep", "run", str(write_sweep(folder)), "--experiment", "cpu", "--data", small["data.path"],
            *sets(trial), "--storage", str(folder / "optuna-journal.log")]


def _complete(storage: str) -> int:
    study = open_study(storage)
    return 0 if study is None else sum(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False))


@pytest.mark.slow
def test_a_disk_that_fills_mid_sweep_ends_it_cleanly_and_a_rerun_completes_every_cell(
        tmp_path: Path, small: dict, speed: dict) -> None:
    with tmpfs(tmp_path / "disk", 96) as disk:
        work = disk / "work"
        work.mkdir()
        storage = str(work / "optuna-journal.log")
        args = [*_sweep_args(work, small, speed), "--workers", "2"]
        env = sweep_env(work)
        proc = start(args, work, env)
        wait_for(lambda: _complete(storage) >= 1 or proc.poll() is not None, 240, "a first COMPLETE trial")
        filler = fill(disk)
        code, out, err = finish(proc)
        assert code == 2, err[-4000:]
        assert "Traceback" not in err, err[:6000]
        assert "the disk filled up" in err and str(work) in err and "MB free" in err, err[-3000:]
        # The journal is whole and says what happened; nothing is RUNNING anywhere.
        raw = Path(storage).read_bytes()
        assert raw.endswith(b"\n")
        result = outcome(storage, [f"sqlite:///{work}/mlruns/mlflow.db"])
        assert result["states"].get("RUNNING", 0) == 0 and result["running_runs"] == 0, result
        assert any("disk full" in (e or "") for e in result["errors"]), result["errors"]
        first_codes, first_err = [code], [err]
        # Space freed, the same command again: every cell once.
        filler.unlink()
        code, out, err = finish(start(args, work, env))
        assert code == 0 and "Traceback" not in err, err[-3000:]
        result = outcome(storage, [f"sqlite:///{work}/mlruns/mlflow.db"])
        assert_every_cell_once(result)
        record("the working folder's disk fills mid-sweep, then space is freed and the command rerun", storage,
               result, first_codes + [code], first_err + [err],
               note="exit 2, one message naming the folder and its free space; the trial that met it FAIL 'disk full', "
                    "the others 'disk full' too, runs ended, journal whole; the rerun ran only the missing cells")


@pytest.mark.slow
def test_one_sweeps_full_disk_never_fails_another_sweep_sharing_its_cache(
        tmp_path: Path, small: dict, speed: dict) -> None:
    """Two sweeps, one cache folder (the session's), each its own journal and MLflow store: A's
    disk fills mid-run and A stops "disk full"; B, whose disk has room, completes every cell.
    Each holds its own reserve in the shared cache folder, so A freeing its reserve there is not
    a full disk to B."""
    with tmpfs(tmp_path / "disk", 96) as disk:
        a, b = disk / "a", tmp_path / "b"
        a.mkdir()
        b.mkdir()
        proc_a = start(_sweep_args(a, small, speed), a, sweep_env(a))
        proc_b = start(_sweep_args(b, small, speed, epochs=60), b, sweep_env(b))
        storage_a, storage_b = str(a / "optuna-journal.log"), str(b / "optuna-journal.log")
        wait_for(lambda: _complete(storage_a) >= 1 or proc_a.poll() is not None, 240, "a first COMPLETE trial of A")
        cache = Path(os.environ["MMSEARCH_CACHE_DIR"])
        assert len(list(cache.glob(".mmsearch-reserve-*"))) >= 2  # one each in the shared cache folder
        filler = fill(disk)
        code_a, _, err_a = finish(proc_a)
        code_b, out_b, err_b = finish(proc_b)
        filler.unlink()
        assert code_a == 2 and "the disk filled up" in err_a and "Traceback" not in err_a, err_a[-3000:]
        assert code_b == 0 and "Traceback" not in err_b and "disk" not in err_b.lower(), err_b[-3000:]
        result_b = outcome(storage_b, [f"sqlite:///{b}/mlruns/mlflow.db"])
        assert_every_cell_once(result_b)
        assert not any("disk full" in (e or "") for e in result_b["errors"]), result_b["errors"]
        assert not any(p.name.split("-")[2] == str(proc_b.pid) for p in cache.glob(".mmsearch-reserve-*"))  # B's gone
        record("two sweeps share a cache folder; one's own disk fills mid-run", storage_b, result_b, [code_a, code_b],
               [err_a, err_b], note="A exit 2 'disk full' (its disk); B exit 0, every cell COMPLETE once: each sweep "
                                    "holds its own reserve in the shared cache, and only its own full disk stops it")


def test_a_disk_full_at_the_start_is_one_message_and_nothing_is_written(tmp_path: Path, small: dict,
                                                                         speed: dict) -> None:
    with tmpfs(tmp_path / "disk", 16) as disk:
        work = disk / "work"
        work.mkdir()
        env = sweep_env(work)
        fill(disk, leave_bytes=2 * 2**20)
        code, out, err = finish(start(_sweep_args(work, small, speed), work, env))
        assert code == 2 and err.startswith("error:") and "Traceback" not in err, err
        assert "not enough disk space" in err and str(work) in err and "MB free" in err and "64 MB" in err, err
        assert sorted(p.name for p in work.rglob("*") if p.name != "faults.yaml") == ["mlruns"], list(work.rglob("*"))


def _plain_optuna_journal(path: Path) -> None:
    """A study written by plain Optuna, then torn the way a full disk tears it: an unterminated
    last line, and a later write appended onto it."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(path)))
    study = optuna.create_study(study_name="torn", storage=storage)
    for x in range(3):
        study.enqueue_trial({"x": x})
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"op_code":8,"worker_id":"cut-sh')  # the write the disk cut short
    study.set_user_attr("after", "the tear")  # plain Optuna appends onto the torn line


def test_a_torn_journal_is_repaired_on_read_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = tmp_path / "optuna-journal.log"
    _plain_optuna_journal(path)
    with pytest.raises(json.JSONDecodeError):  # as the issue saw it: unreadable from here on
        optuna.create_study(study_name="other", storage=JournalStorage(JournalFileBackend(str(path))))

    with caplog.at_level("WARNING", logger="mmsearch.storage"):
        optuna.create_study(study_name="other", storage=open_storage(str(path)).optuna,
                            load_if_exists=True).set_user_attr("k", 1)
        torn = optuna.load_study(study_name="torn", storage=open_storage(str(path)).optuna)
    assert [t.params for t in torn.trials] == [{}, {}, {}] and len(torn.trials) == 3
    assert torn.user_attrs == {"after": "the tear"}  # the operation joined onto the torn line is kept
    assert "torn line" in caplog.text and str(path) + ".torn" in caplog.text
    assert b"cut-sh" in Path(str(path) + ".torn").read_bytes()
    # Repaired in place: plain Optuna reads it again, and new writes land on whole lines.
    optuna.load_study(study_name="other", storage=open_storage(str(path)).optuna).set_user_attr("k", 2)
    again = optuna.load_study(study_name="other", storage=JournalStorage(JournalFileBackend(str(path))))
    assert again.user_attrs == {"k": 2}


def test_an_unterminated_tail_is_set_aside_before_the_next_write(tmp_path: Path) -> None:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = tmp_path / "optuna-journal.log"
    study = optuna.create_study(study_name="s", storage=open_storage(str(path)).optuna)
    study.set_user_attr("a", 1)
    with open(path, "ab") as f:
        f.write(b'{"op_code":8,"worker_id":"a kill -9 mid-wri')
    optuna.load_study(study_name="s", storage=open_storage(str(path)).optuna).set_user_attr("b", 2)
    assert path.read_bytes().endswith(b"\n")
    attrs = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(path)))).user_attrs
    assert attrs == {"a": 1, "b": 2}


def test_a_write_cut_by_a_full_disk_leaves_no_torn_line(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", 1) as disk:
        path = disk / "optuna-journal.log"
        study = optuna.create_study(study_name="s", storage=open_storage(str(path)).optuna)
        before = path.read_bytes()
        filler = fill(disk)
        with pytest.raises(OSError) as err:
            study.set_user_attr("big", "x" * 200_000)
        assert err.value.errno == 28
        assert path.read_bytes() == before  # undone: the journal ends where it ended
        filler.unlink()
        study.set_user_attr("small", 1)
        assert optuna.load_study(study_name="s", storage=open_storage(str(path)).optuna).user_attrs == {"small": 1}


def test_a_decoded_image_cache_too_big_for_its_disk_is_refused_before_decoding(tmp_path: Path, demo_dir: Path) -> None:
    """At the paper's size the 224 px cache alone is 6 GB: a cache disk without room for it says
    so, with the size, before any image is decoded (not half-way, with the disk full)."""
    with tmpfs(tmp_path / "disk", 96) as disk:
        env = sweep_env(tmp_path, MMSEARCH_CACHE_DIR=str(disk / "cache"))
        args = ["sweep", "run", "fusion-dropout-count", "--experiment", "cpu", "--data", str(demo_dir),
                "--storage", str(tmp_path / "journal.log"), "--set", "data.image_size=224"]
        code, out, err = finish(start(args, tmp_path, env), 240)
        assert code == 2 and "Traceback" not in err, err[-3000:]
        assert "decoded images at 224px: 1,550 rows, 222.5 MB (to build)" in err, err[-2000:]
        assert "it needs at least 287 MB there" in err and str(disk / "cache" / "images") in err, err[-2000:]
        assert not any((disk / "cache" / "images").iterdir())  # nothing decoded, no partial file
        assert disk.stat() and shutil.disk_usage(disk).used < 2**20 * 8


_HOLD_LOCK = """
import os, signal, sys
from mmsearch.search import open_storage
backend = open_storage(sys.argv[1]).optuna._backend
backend._lock.acquire()
print("held", flush=True)
os.kill(os.getpid(), signal.SIGSTOP)  # stopped inside the lock, as a worker stopped mid-write
backend._lock.release()
print("released", flush=True)
"""


@pytest.mark.slow
def test_a_stopped_lock_holder_stalls_the_sweep_which_says_so_and_loses_nothing(
        tmp_path: Path, small: dict, speed: dict) -> None:
    args = [*_sweep_args(tmp_path, small, speed, epochs=60), "--workers", "2"]
    storage = str(tmp_path / "optuna-journal.log")
    proc = start(args, tmp_path, sweep_env(tmp_path))
    wait_for(lambda: _complete(storage) >= 1 or proc.poll() is not None, 240, "a first COMPLETE trial")
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, storage], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    wait_for(lambda: Path(f"/proc/{holder.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T", 10,
             "the lock holder to stop")
    time.sleep(40)  # longer than Optuna's own lock would wait before taking the lock away
    os.kill(holder.pid, signal.SIGCONT)
    assert holder.wait(30) == 0
    code, out, err = finish(proc)
    assert code == 0 and "Traceback" not in err and "did not possess lock" not in err, err[-3000:]
    assert f"held by process {holder.pid} (stopped)" in err and f"kill -CONT {holder.pid}" in err, err[-3000:]
    result = outcome(storage, [f"sqlite:///{tmp_path}/mlruns/mlflow.db"])
    assert_every_cell_once(result)
    assert result["states"].get("FAIL", 0) == 0, result["errors"]
    record("a process holding the journal's lock is stopped (SIGSTOP) for 40 s", storage, result, [code], [err],
           note="every other process waited, saying on which process and `kill -CONT PID`; nothing lost, no FAIL")


_HOLD_STORE = """
import os, signal, sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("BEGIN EXCLUSIVE")  # the lock a process takes to commit to the MLflow store
print("held", flush=True)
os.kill(os.getpid(), signal.SIGSTOP)  # stopped inside it, as a worker stopped mid-commit
con.execute("COMMIT")
"""


def _hold_the_store(db: Path) -> subprocess.Popen[str]:
    """A process that takes the SQLite store's lock and stops (SIGSTOP) inside it."""
    db.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_STORE, str(db)], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    wait_for(lambda: Path(f"/proc/{holder.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T", 10,
             "the store's holder to stop")
    return holder


def test_a_stopped_holder_of_the_mlflow_store_ends_a_sweep_with_exit_3_naming_it_and_ctrl_c_ends_the_wait(
        tmp_path: Path, small: dict, speed: dict) -> None:
    # Before: MlflowClient's first read raised "database is locked" after 5 s, a traceback, exit 1.
    env = sweep_env(tmp_path)
    storage = str(tmp_path / "optuna-journal.log")
    holder = _hold_the_store(tmp_path / "mlruns" / "mlflow.db")
    try:
        args = [*_sweep_args(tmp_path, small, speed), "--heartbeat", "0.5", "--grace", "3"]
        code, _, err = finish(start(args, tmp_path, env), 120)
        assert code == 3 and "Traceback" not in err, err[-3000:]
        last = err.strip().splitlines()[-1]
        assert last.startswith("error: gave up after ") and "waiting for the MLflow store" in last, err[-3000:]
        assert f"locked by process {holder.pid} (stopped)" in last and f"kill -CONT {holder.pid}" in last, last
        assert open_study(storage) is None  # it stopped before anything was written: nothing to repair
        # The default grace (600 s) waits, saying so; Ctrl-C ends the wait, however long it was to be.
        proc = start(_sweep_args(tmp_path, small, speed), tmp_path, env)
        time.sleep(12)  # past the start and MLflow's first blocked read (5 s), into mmsearch's own wait
        os.killpg(proc.pid, signal.SIGINT)
        sent = time.monotonic()
        code, _, err = finish(proc, 60)
        took = time.monotonic() - sent
        assert code == 130 and took < 10 and "Traceback" not in err, (code, took, err[-3000:])
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_a_holder_of_the_mlflow_store_stopped_mid_sweep_ends_it_with_exit_3_and_the_rerun_completes_every_cell(
        tmp_path: Path, small: dict, speed: dict) -> None:
    args = [*_sweep_args(tmp_path, small, speed, epochs=150), "--workers", "2", "--grace", "15"]
    storage = str(tmp_path / "optuna-journal.log")
    env = sweep_env(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    proc = start(args, tmp_path, env)
    wait_for(lambda: _complete(storage) >= 1 or proc.poll() is not None, 240, "a first COMPLETE trial", watched=proc)
    holder = _hold_the_store(tmp_path / "mlruns" / "mlflow.db")
    try:
        code, _, err = finish(proc, 300)
    finally:
        holder.kill()
        holder.wait()
    assert code == 3 and "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert "waiting for the MLflow store" in last and f"locked by process {holder.pid} (stopped)" in last, err[-3000:]
    assert f"kill -CONT {holder.pid}" in last, last
    stopped = outcome(storage, [uri])
    # The trial whose write gave up failed with the reason (not its configuration's fault), the
    # other worker's trial "interrupted" by the stop: the rerun reruns both cells.
    reasons = Counter("tracking store locked" if e.startswith("tracking store locked: ") else e
                      for e in stopped["errors"])
    assert reasons["tracking store locked"] >= 1 and set(reasons) <= {"tracking store locked", "interrupted"}, stopped
    rerun, _, rerun_err = finish(start(args, tmp_path, env))
    assert rerun == 0 and "Traceback" not in rerun_err, rerun_err[-3000:]
    result = outcome(storage, [uri])
    assert_every_cell_once(result)
    assert len(result["parents"]) == 1 and result["parents"][0].info.status == "FINISHED", result["parents"]
    record("a process holding the MLflow SQLite store's lock is stopped (SIGSTOP) mid-sweep, --grace 15; then the "
           "command rerun once it has ended", storage, result, [code, rerun], [err, rerun_err],
           note="the sweep gave up after the grace: exit 3 naming the holder and `kill -CONT`, its running trials FAIL "
                "'tracking store locked'; the rerun completed every cell once, nothing RUNNING")


_LOCK_WAITER = """
import sys, time
from mmsearch._interrupts import deferred, interrupt_once
from mmsearch.search._journal import FlockLock
interrupt_once()
lock = FlockLock(sys.argv[1], give_up_s=float(sys.argv[2]))
print("waiting", flush=True)
started = time.monotonic()
try:
    with deferred():  # as every claim and report of a trial: an interrupt waits for the block's end
        lock.acquire()
except KeyboardInterrupt:
    print(f"interrupted after {time.monotonic() - started:.1f}", flush=True)
    sys.exit(130)
"""


def _in_other_pid_namespace() -> list[str]:
    """A prefix that runs a command in a PID namespace of its own, as a container or another
    machine would (its PIDs mean nothing here); a shell stays PID 1, so the command can stop."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) to give the lock holder a PID namespace of its own")
    return ["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", '"$0" "$@"; :']


def _hold_the_lock(journal: str, elsewhere: bool) -> tuple[subprocess.Popen[str], int]:
    """A process that takes the journal's lock and stops (SIGSTOP) inside it; returns it and
    its PID as its own namespace numbers it."""
    prefix = _in_other_pid_namespace() if elsewhere else []
    holder = subprocess.Popen([*prefix, sys.executable, "-c", _HOLD_LOCK_SAYING_PID, journal], stdout=subprocess.PIPE,
                              text=True, start_new_session=True)
    assert holder.stdout is not None
    line = holder.stdout.readline().split()
    assert line[:1] == ["held"], line
    return holder, int(line[1])


_HOLD_LOCK_SAYING_PID = _HOLD_LOCK.replace('print("held", flush=True)', 'print("held", os.getpid(), flush=True)')


def test_ctrl_c_ends_a_wait_for_a_stopped_lock_holder_at_once_even_where_interrupts_are_held(tmp_path: Path) -> None:
    journal = str(tmp_path / "journal.log")
    open_storage(journal)
    holder, pid = _hold_the_lock(journal, elsewhere=False)
    try:
        waiter = subprocess.Popen([sys.executable, "-c", _LOCK_WAITER, journal + ".flock", "600"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert waiter.stdout is not None and waiter.stdout.readline().strip() == "waiting"
        time.sleep(1.0)
        os.kill(waiter.pid, signal.SIGINT)
        out, err = waiter.communicate(timeout=10)  # before: it waited for ever, Ctrl-C or not
        assert waiter.returncode == 130, (out, err)
        assert float(out.split()[-1]) < 5, out
    finally:
        os.killpg(holder.pid, signal.SIGKILL)


def test_a_lock_holder_in_another_pid_namespace_is_named_as_such_and_the_wait_gives_up(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from mmsearch.errors import StudyLockStuck
    from mmsearch.search._journal import FlockLock

    journal = str(tmp_path / "journal.log")
    open_storage(journal)
    holder, pid = _hold_the_lock(journal, elsewhere=True)
    try:
        lock = FlockLock(journal + ".flock", give_up_s=1.5)
        with pytest.raises(StudyLockStuck) as raised:
            lock.acquire()
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
    message = str(raised.value)
    # Not "(gone)", a PID of this namespace that happens to match, or nothing: where it runs and what to do there.
    assert f"process {pid} on " in message and "in another PID namespace" in message, message
    assert f"kill -CONT {pid}` from inside its PID namespace" in message and "rerun the same command" in message, message
    assert "gone" not in message


@pytest.mark.slow
def test_a_lock_holder_stopped_in_another_pid_namespace_ends_the_sweep_incomplete_and_ctrl_c_works_meanwhile(
        tmp_path: Path, small: dict, speed: dict) -> None:
    args = [*_sweep_args(tmp_path, small, speed, epochs=150), "--workers", "2", "--grace", "20"]
    storage = str(tmp_path / "optuna-journal.log")
    tracking = [f"sqlite:///{tmp_path}/mlruns/mlflow.db"]
    env = sweep_env(tmp_path)
    proc = start(args, tmp_path, env)
    wait_for(lambda: _complete(storage) >= 1 or proc.poll() is not None, 240, "a first COMPLETE trial")
    holder, pid = _hold_the_lock(storage, elsewhere=True)
    try:
        # 1. Nobody can write the study: the sweep gives up after the grace, incomplete (3), and ends its runs.
        started = time.monotonic()
        code, _, err = finish(proc, timeout=120)
        assert code == 3 and "Traceback" not in err, err[-3000:]
        assert time.monotonic() - started < 60, err[-2000:]
        assert f"held by process {pid} on " in err and "in another PID namespace" in err, err[-3000:]
        assert f"kill -CONT {pid}" in err and "rerun the same command" in err, err[-3000:]
        # The journal cannot be read while its lock is held (a reader sets a torn tail aside first): MLflow can.
        assert not [r for r in runs(tracking[0]) if r.info.status == "RUNNING"]
        # 2. Rerun while it is still stopped: Ctrl-C ends the wait at once.
        again = start(args, tmp_path, env)
        time.sleep(15)
        interrupted_at = time.monotonic()
        os.killpg(again.pid, signal.SIGINT)
        code2, _, err2 = finish(again, timeout=60)
        took = time.monotonic() - interrupted_at
        assert code2 == 130 and took < 15 and "Traceback" not in err2, (took, err2[-3000:])
        assert err2.strip().splitlines()[-1].startswith("interrupted"), err2[-2000:]
        assert not [r for r in runs(tracking[0]) if r.info.status == "RUNNING"]
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
    stuck = outcome(storage, tracking)
    record("a process holding the journal's lock is stopped in another PID namespace; the run, then a rerun "
           "interrupted with Ctrl-C", storage, stuck, [code, code2], [err, err2], cells=None,
           note=f"named as another namespace's process, `kill -CONT` there; after --grace 20 s the sweep exits 3 with its "
                f"MLflow runs KILLED, its trials left RUNNING for the next run; Ctrl-C ended the rerun's wait in {took:.0f} s")
    # 3. Its holder gone: the same command completes the sweep, every cell once, nothing lost.
    code, _, err = finish(start(args, tmp_path, env))
    assert code == 0, err[-3000:]
    result = outcome(storage, tracking)
    assert_every_cell_once(result)
    record("the same, once the lock's holder has ended: the command rerun",
           storage, result, [code], [err], note="the trials the stopped run left RUNNING were repaired (their processes "
                                                 "are gone) and every cell completed once")


def _terminate_backends(database: str, allow_connections: bool = True) -> int:
    """End every session on ``database``; with ``allow_connections=False`` the database also
    refuses new ones (superusers included) until called again with True: a pooled connection's
    pre-ping reconnects silently after a mere termination, a refused reconnect is an outage."""
    import psycopg

    from _sweepproc import PG_ADMIN

    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as admin:
        admin.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS {str(allow_connections).lower()}')
        rows = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                             "AND pid <> pg_backend_pid()", (database,)).fetchall()
    return len(rows)


@pytest.mark.postgres
@pytest.mark.slow
def test_postgresql_connections_terminated_again_and_again_cost_no_cell(tmp_path: Path, small: dict,
                                                                        speed: dict) -> None:
    from _sweepproc import fresh_postgres, running_owner

    with fresh_postgres() as url:
        args = [*_sweep_args(tmp_path, small, speed, epochs=80), "--workers", "2"]
        args[args.index("--storage") + 1] = url
        proc = start(args, tmp_path, sweep_env(tmp_path))
        wait_for(lambda: running_owner(url) or proc.poll() is not None, 240, "a trial running in a worker")
        killed = 0
        for i in range(10):  # 10 times 1 s apart; from the 4th to the 7th the database also refuses connections
            killed += _terminate_backends(url.rsplit("/", 1)[1], allow_connections=not 3 <= i < 7)
            time.sleep(1)
        code, out, err = finish(proc)
        assert killed >= 10, killed
        assert code == 0 and "Traceback" not in err and "StorageInternalError" not in err, err[-4000:]
        assert "lost the connection to PostgreSQL" in err and "reconnected to PostgreSQL" in err, err[-3000:]
        result = outcome(url, [f"sqlite:///{tmp_path}/mlruns/mlflow.db"])
        assert_every_cell_once(result)
        assert result["states"].get("FAIL", 0) == 0, result["errors"]
        record(f"PostgreSQL connections terminated 10 times 1 s apart ({killed} sessions), new ones refused for 4 s",
               url, result, [code], [err],
               note="each process said 'lost the connection' and 'reconnected'; every call retried; no FAIL")


_OPEN_STORE = """
import sys
from mmsearch.tracking import Tracker
tracker = Tracker(sys.argv[1])
tracker.experiment("sweep/race")
"""


@pytest.mark.slow  # nine processes importing MLflow: about 45 s on 2 cores
def test_processes_opening_a_fresh_sqlite_store_together_all_get_it(tmp_path: Path) -> None:
    for attempt in range(3):
        uri = f"sqlite:///{tmp_path}/store{attempt}/mlflow.db"
        (tmp_path / f"store{attempt}").mkdir()
        procs = [subprocess.Popen([sys.executable, "-c", _OPEN_STORE, uri], stderr=subprocess.PIPE, text=True)
                 for _ in range(3)]
        errors = [p.communicate(timeout=120)[1] for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0], "\n".join(errors)[-3000:]


@pytest.mark.slow
def test_two_sweeps_started_together_in_a_fresh_folder_both_join(tmp_path: Path, small: dict, speed: dict) -> None:
    args = [*_sweep_args(tmp_path, small, speed, epochs=40)]
    env = sweep_env(tmp_path)
    procs = [start(args, tmp_path, env) for _ in range(2)]
    results = [finish(p) for p in procs]
    assert [code for code, _, _ in results] == [0, 0], "\n".join(err[-2000:] for _, _, err in results)
    result = outcome(str(tmp_path / "optuna-journal.log"), [f"sqlite:///{tmp_path}/mlruns/mlflow.db"])
    assert_every_cell_once(result)
    assert len(result["parents"]) == 1 and result["reports"] == 1
    record("two `sweep run` started together in one fresh folder", str(tmp_path), result,
           [code for code, _, _ in results], [err for _, _, err in results],
           note="one process at a time created MLflow's SQLite schema; both joined one study and one parent run")


def test_an_export_killed_with_sigkill_has_its_run_ended_by_the_next_command(tmp_path: Path, small: dict,
                                                                             speed: dict, exported: dict) -> None:
    from mlflow import MlflowClient

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    name = f"killed-{tmp_path.name[-8:]}"
    proc = start(["export", "fusion-dropout-count", "--name", name, "--experiment", "cpu", "--data", small["data.path"],
                  *sets(speed), "--storage", exported["storage"], "--out-dir", str(tmp_path / "exports")], tmp_path, env)
    client = MlflowClient()

    def running() -> list:
        experiment = client.get_experiment_by_name(f"export/{name}")
        return [] if experiment is None else client.search_runs([experiment.experiment_id],
                                                                "attributes.status = 'RUNNING'")
    [run] = wait_for(lambda: running() or proc.poll() is not None, 120, "the export's MLflow run")
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert client.get_run(run.info.run_id).info.status == "RUNNING"  # what kill -9 leaves
    code, out, err = finish(start(["sweep", "status", "fusion-dropout-count", "--storage", exported["storage"]],
                                  tmp_path, env))
    assert code == 0, err[-3000:]
    ended = client.get_run(run.info.run_id)
    assert (ended.info.status, ended.data.tags["state"]) == ("KILLED", "owner died"), ended.data.tags
    assert f"process {proc.pid}" in ended.data.tags["ended_because"] and run.info.run_id in err


def _mlflow_server(folder: Path, port: int) -> subprocess.Popen[bytes]:
    from _sweepproc import wait_until_serving

    folder.mkdir(exist_ok=True)
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                               "--backend-store-uri", f"sqlite:///{folder}/mlflow.db", "--artifacts-destination",
                               str(folder / "artifacts"), "--serve-artifacts"], cwd=folder,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    wait_until_serving(server, f"http://127.0.0.1:{port}", "the MLflow server")
    return server


def _stop(server: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)
    server.wait(30)


@pytest.mark.slow
def test_a_tracking_server_away_mid_export_is_queued_and_the_model_registered_when_it_is_back(
        tmp_path: Path, small: dict, speed: dict, exported: dict) -> None:
    from mlflow import MlflowClient

    from _sweepproc import free_port

    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = _mlflow_server(tmp_path / "server", port)
    cache = tmp_path / "cache"  # the export's stage caches (and outbox) of its own: it trains while the server is away
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MMSEARCH_CACHE_DIR": str(cache)}
    name = f"away-{tmp_path.name[-8:]}"
    client = MlflowClient(uri)
    try:
        proc = start(["export", "fusion-dropout-count", "--name", name, "--experiment", "cpu", "--data", small["data.path"],
                      *sets(speed), "--storage", exported["storage"], "--tracking-uri", uri,
                      "--out-dir", str(tmp_path / "exports")], tmp_path, env)

        def export_run() -> list:
            experiment = client.get_experiment_by_name(f"export/{name}")
            return [] if experiment is None else client.search_runs([experiment.experiment_id])
        [run] = wait_for(lambda: export_run() or proc.poll() is not None, 180, "the export's MLflow run")
        _stop(server)  # away while it trains, uploads the model and registers it

        def queued(op: str) -> bool:
            return any(f'"op": "{op}"' in p.read_text() for p in (cache / "mlflow-outbox").rglob("*.jsonl"))
        wait_for(lambda: queued("register_version") or proc.poll() is not None, 400, "the registration, queued")
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        server = _mlflow_server(tmp_path / "server", port)
        code, out, err = finish(proc, timeout=300)
        assert code == 0 and "Traceback" not in err, err[-4000:]
        assert f"MLflow tracking server {uri} unreachable" in err and f"{uri} is back after" in err, err[-3000:]
        version = client.get_model_version_by_alias(name, "champion")
        assert f"registered {name} version {version.version}" in out, out
        assert version.run_id == run.info.run_id
        ended = client.get_run(run.info.run_id)
        assert ended.info.status == "FINISHED" and "fusion/final_val_f1" in ended.data.metrics, ended.data.metrics
        assert "MLmodel" in {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "model")}
        assert not list((cache / "mlflow-outbox").rglob("*.jsonl")), list((cache / "mlflow-outbox").rglob("*"))
        assert not any((cache / "mlflow-outbox").rglob("files/*")), "a kept model copy was left behind"
    finally:
        _stop(server)


@pytest.mark.slow
def test_a_tracking_server_away_mid_sweep_loses_no_result_and_the_queue_is_sent_when_it_is_back(
        tmp_path: Path, small: dict, speed: dict) -> None:
    from mlflow import MlflowClient

    from _sweepproc import free_port, runs

    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = _mlflow_server(tmp_path / "server", port)
    try:
        args = [*_sweep_args(tmp_path, small, speed, epochs=120), "--workers", "2", "--tracking-uri", uri]
        storage = str(tmp_path / "optuna-journal.log")
        env = {**sweep_env(tmp_path), "MMSEARCH_CACHE_DIR": os.environ["MMSEARCH_CACHE_DIR"]}
        proc = start(args, tmp_path, env)
        wait_for(lambda: _complete(storage) >= 1 or proc.poll() is not None, 240, "a first COMPLETE trial")
        _stop(server)  # away for longer than the trials that run meanwhile
        away = time.time()
        wait_for(lambda: _complete(storage) >= 3 or proc.poll() is not None, 240, "trials completing while away")
        time.sleep(max(0.0, 25 - (time.time() - away)))
        server = _mlflow_server(tmp_path / "server", port)
        code, out, err = finish(proc, timeout=400)
        assert code == 0 and "Traceback" not in err, err[-4000:]
        assert "Retrying (Retry(" not in err, err[-3000:]  # no urllib3 retry warnings: queued at once
        assert err.count(f"MLflow tracking server {uri} unreachable") >= 1, err[-3000:]
        # Sent by whoever sees the server back: the process that queued, or the coordinator for its ended workers.
        assert f"{uri} is back after" in err or "that ended processes had queued" in err, err[-3000:]
        result = outcome(storage, [uri])
        assert_every_cell_once(result)
        assert result["states"].get("FAIL", 0) == 0, result["errors"]
        # Every trial's run is there, ended, with its whole epoch curve and final metrics.
        children = [r for r in runs(uri) if "mlflow.parentRunId" in r.data.tags]
        assert len(children) == 4 and {r.info.status for r in children} == {"FINISHED"}, \
            [(r.info.run_name, r.info.status) for r in children]
        client = MlflowClient(uri)
        for r in children:
            assert len(client.get_metric_history(r.info.run_id, "epoch/val_f1")) == 120, r.info.run_name
            assert "final/val_f1" in r.data.metrics
        assert result["parents"][0].info.status == "FINISHED" and result["reports"] == 1
        outbox = Path(os.environ["MMSEARCH_CACHE_DIR"]) / "mlflow-outbox"
        assert not list(outbox.rglob("*.jsonl")), list(outbox.rglob("*"))
        record("the MLflow tracking server is down for 25 s mid-sweep, then restarted", storage, result, [code], [err],
               note="writes queued on disk, training went on; sent when it was back: every run FINISHED with its whole curve")
    finally:
        _stop(server)


@pytest.mark.slow
def test_a_joiner_waiting_on_a_stopped_process_says_on_which_and_how_to_resume(tmp_path: Path, small: dict,
                                                                              speed: dict) -> None:
    from _sweepproc import running_owner, stop_outside_locks, sweep_lock_files

    args = [*_sweep_args(tmp_path, small, speed, epochs=150), "--workers", "1"]
    storage = str(tmp_path / "optuna-journal.log")
    env = sweep_env(tmp_path)
    first = start(args, tmp_path, env)
    owner = wait_for(lambda: running_owner(storage), 240, "a trial running in the first run's worker")
    # Not inside a write: a holder stopped there is the case of its own above (every writer waits).
    stop_outside_locks(owner["pid"], *sweep_lock_files(storage, tmp_path / "mlruns" / "mlflow.db"))
    try:
        joiner = start(args, tmp_path, env)
        wait_for(lambda: _complete(storage) >= 3 or joiner.poll() is not None, 300, "the joiner to run the other cells",
                 watched=joiner)
        time.sleep(40)  # past the joiner's first word on what it waits for
    finally:
        os.kill(owner["pid"], signal.SIGCONT)
    codes, errs = [], []
    for proc in (first, joiner):
        code, _, err = finish(proc)
        codes.append(code)
        errs.append(err)
    assert codes == [0, 0], "\n".join(e[-2000:] for e in errs)
    assert f"process {owner['pid']} on" in errs[1] and "(stopped)" in errs[1] and f"kill -CONT {owner['pid']}" in errs[1], \
        errs[1][-3000:]
    result = outcome(storage, [f"sqlite:///{tmp_path}/mlruns/mlflow.db"])
    assert_every_cell_once(result)
    record("a worker on the same machine stopped (SIGSTOP) while another run joins", storage, result, codes, errs,
           note="the joiner ran the other cells, then said which process it waited on and `kill -CONT`; after it, both 0")
