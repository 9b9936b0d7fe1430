"""Faults injected into real ``mmsearch sweep run`` processes with real signals, on a journal
file and on PostgreSQL; each test reads what is left in Optuna and MLflow afterwards.

Every sweep here is a 2-level x 2-repeat fusion ablation whose trials last a few seconds, on the
session's demo data and warm caches.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from optuna.trial import TrialState

from mmsearch.search._worker import WORKER_EXIT_DEADLINE_S

from _sweepproc import (
    alive,
    assert_every_cell_once,
    finish,
    fresh_postgres,
    open_study,
    outcome,
    record,
    running_owner,
    runs,
    sets,
    start,
    stop_outside_locks,
    sweep_env,
    sweep_lock_files,
    wait_for,
    write_sweep,
)
from conftest import needs_glove, needs_mobilenet, needs_nltk

pytestmark = [needs_glove, needs_mobilenet, needs_nltk]


@pytest.fixture(params=["journal", pytest.param("postgresql", marks=[pytest.mark.postgres, pytest.mark.slow])])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "journal":
        yield str(tmp_path / "optuna-journal.log")
    else:
        with fresh_postgres() as url:
            yield url


@pytest.fixture
def sweep_args(tmp_path: Path, small: dict, speed: dict, storage: str) -> list[str]:
    trial = {**speed, "fusion.optim.epochs": 150, "fusion.optim.early_stopping": None}
    return ["sweep", "run", str(write_sweep(tmp_path)), "--experiment", "cpu", "--data", small["data.path"],
            *sets(trial), "--storage", storage]


def _tracking(folder: Path) -> str:
    return f"sqlite:///{folder}/mlruns/mlflow.db"


def _session(pgid: int) -> list[int]:
    """Processes still in a process group (the sweep's coordinator, fork server and workers)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


def _fail_with_stacks(proc: subprocess.Popen[str], what: str) -> None:
    """Fail, showing where each process still in the sweep's session is (workers dump their
    Python stacks on SIGUSR1) and everything the sweep wrote."""
    left = _session(proc.pid)
    for pid in left:
        os.kill(pid, signal.SIGUSR1)
    time.sleep(2)
    for pid in _session(proc.pid):
        os.kill(pid, signal.SIGKILL)
    _, err = proc.communicate()
    pytest.fail(f"{what}: processes {left} were left\n{err[-12000:]}")


def _kill_coordinator(proc: subprocess.Popen[str]) -> float:
    """kill -9 the sweep's coordinator; how long its workers took to follow it."""
    os.kill(proc.pid, signal.SIGKILL)
    killed = time.time()
    try:
        wait_for(lambda: not _session(proc.pid), 20, "the workers to exit after their coordinator died")
    except pytest.fail.Exception:
        _fail_with_stacks(proc, "workers outlived their coordinator by 20 s")
    return time.time() - killed


def test_killed_worker_is_failed_and_its_cell_rerun_by_the_same_run(tmp_path: Path, sweep_args: list[str],
                                                                    storage: str) -> None:
    proc = start([*sweep_args, "--workers", "2"], tmp_path, sweep_env(tmp_path))
    owner = wait_for(lambda: running_owner(storage), 180, "a trial running in a worker")
    assert owner["pid"] != proc.pid
    os.kill(owner["pid"], signal.SIGUSR1)  # first, where is it? (it prints its stacks and goes on)
    time.sleep(1)
    assert alive(owner["pid"])
    os.kill(owner["pid"], signal.SIGKILL)
    code, out, err = finish(proc)
    assert code == 0 and "Traceback" not in err, err[-3000:]
    # Its stacks (faulthandler keeps the innermost 100 frames: a worker deep in an import shows only those).
    assert "(most recent call first)" in err, err[-3000:]
    result = outcome(storage, [_tracking(tmp_path)])
    assert_every_cell_once(result)
    assert result["states"]["FAIL"] == 1 and "worker died" in result["errors"][0] and "is gone" in result["errors"][0]
    assert result["runs"][("KILLED", "worker died")] == 1 and len(result["parents"]) == 1
    assert result["parents"][0].info.status == "FINISHED" and "4/4 cells complete" in out
    assert "ran 5 trial(s)" in out  # the 4 cells plus the one that died: counted as this run's, no more
    record("kill -9 a worker mid-trial", storage, result, [code], [err],
           note="the same run failed its trial, ended its MLflow run KILLED, re-ran the cell")


@pytest.mark.slow  # 60-100 s on 2 cores: run by `pytest -m slow` (CI runs it)
def test_killed_coordinator_takes_its_workers_along_and_is_repaired_next_time(tmp_path: Path, sweep_args: list[str],
                                                                              storage: str) -> None:
    env = sweep_env(tmp_path)
    proc = start([*sweep_args, "--workers", "2"], tmp_path, env)
    owner = wait_for(lambda: running_owner(storage), 180, "a trial running in a worker")
    gone = _kill_coordinator(proc)
    assert not alive(owner["pid"]) and gone < 10
    proc.communicate()
    left = outcome(storage, [_tracking(tmp_path)])
    assert left["parents"][0].info.status == "RUNNING"  # nobody could end it: the next command does
    status = start(["sweep", "status", str(tmp_path / "faults.yaml"), "--storage", storage], tmp_path, env)
    code, out, err = finish(status)
    assert code == 0 and "closed a stale parent run" in out and "Traceback" not in err, err
    repaired = outcome(storage, [_tracking(tmp_path)])
    assert repaired["parents"][0].info.status == "KILLED" and repaired["running_runs"] == 0
    assert repaired["states"].get("RUNNING", 0) == 0 and repaired["errors"]
    # A worker fails its own trial "interrupted"; one whose clean-up ran past its deadline left
    # that to `sweep status`, which found its process gone, or found a claim the deadline cut
    # between Optuna's ask() and the owner it writes (see SweepStudy.repair).
    repairs = ("interrupted", "worker died: its claim was cut short")
    assert all(e in repairs or (e.startswith("worker died:") and "is gone" in e) for e in repaired["errors"]), \
        repaired["errors"]
    code, out, err = finish(start(sweep_args, tmp_path, env))
    assert code == 0 and "Traceback" not in err, err[-3000:]
    result = outcome(storage, [_tracking(tmp_path)])
    assert_every_cell_once(result)
    assert result["parents"][0].info.status == "FINISHED" and len(result["parents"]) == 1
    record("kill -9 the coordinator", storage, result, [code], [err],
           note=f"its workers exited {gone:.1f} s later; `sweep status` closed the stale parent run; the rerun completed")


@pytest.mark.parametrize("storage", ["journal"], indirect=True)
@pytest.mark.slow  # 60-100 s on 2 cores: run by `pytest -m slow` (CI runs it)
def test_the_workers_of_a_killed_coordinator_leave_by_their_deadline_while_the_store_is_locked_and_status_repairs_the_rest(
        tmp_path: Path, sweep_args: list[str], storage: str) -> None:
    env = sweep_env(tmp_path)
    proc = start([*sweep_args, "--workers", "2"], tmp_path, env)
    owner = wait_for(lambda: running_owner(storage), 180, "a trial running in a worker")
    # The MLflow store stays locked while the coordinator dies: the workers cannot end their runs.
    blocker = sqlite3.connect(tmp_path / "mlruns" / "mlflow.db", timeout=60, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        gone = _kill_coordinator(proc)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    _, err = proc.communicate()
    # Two ways out, both bounded, which one depends on where each worker was. A write that mmsearch
    # waits for itself gives up after STOPPING_WAIT_S (a stopping process's budget) and the worker
    # leaves; one inside MLflow's own SQLite busy wait (20 s per call, an artifact's run lookup)
    # hangs until the worker's deadline, which then leaves anyway, saying where it was.
    assert gone < WORKER_EXIT_DEADLINE_S + 5 and not alive(owner["pid"]), gone
    if gone >= WORKER_EXIT_DEADLINE_S:
        assert f"clean-up unfinished after {WORKER_EXIT_DEADLINE_S:.0f} s" in err and "Thread" in err, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    # The other worker leaves by its own deadline too, which started when it noticed the coordinator was gone
    # (a moment later); `status` fails the trials of processes that are gone, not of one still leaving.
    wait_for(lambda: not any(alive(int(t.user_attrs["owner"]["pid"])) for t in open_study(storage, "faults").get_trials(
        deepcopy=False) if t.state.name == "RUNNING" and t.user_attrs.get("owner")), WORKER_EXIT_DEADLINE_S + 10,
        "every worker to leave")
    code, out, _ = finish(start(["sweep", "status", str(tmp_path / "faults.yaml"), "--storage", storage], tmp_path, env))
    assert code == 0 and "closed a stale parent run" in out
    repaired = outcome(storage, [_tracking(tmp_path)])
    assert repaired["states"].get("RUNNING", 0) == 0 and repaired["running_runs"] == 0
    # The owner's trial failed: by the worker itself ("interrupted", or "tracking store locked" when
    # ending its run gave up first), or, where it could not write even that, by `status` ("worker died").
    held = [t.user_attrs["error"] for t in open_study(storage, "faults").get_trials(deepcopy=False)
            if (t.user_attrs.get("owner") or {}).get("pid") == owner["pid"] and t.state.name == "FAIL"]
    assert held and all(e == "interrupted" or e.startswith("tracking store locked")
                        or (e.startswith("worker died:") and f"process {owner['pid']} " in e) for e in held), held
    code, _, rerun_err = finish(start(sweep_args, tmp_path, env))
    assert code == 0 and "Traceback" not in rerun_err, rerun_err[-3000:]
    result = outcome(storage, [_tracking(tmp_path)])
    assert_every_cell_once(result)
    assert result["running_runs"] == 0 and result["parents"][0].info.status == "FINISHED"
    record("kill -9 the coordinator while the MLflow store is locked", storage, result, [code], [rerun_err],
           note=f"its workers left {gone:.1f} s later ("
                + ("at their deadline, printing their stacks" if gone >= WORKER_EXIT_DEADLINE_S else
                   "their store waits gave up") + "); `sweep status` failed what they held and ended their runs; "
                "the rerun completed")


def test_ctrl_c_fails_what_it_held_ends_every_run_and_says_one_line(tmp_path: Path, sweep_args: list[str],
                                                                    storage: str) -> None:
    proc = start([*sweep_args, "--workers", "2"], tmp_path, sweep_env(tmp_path))
    wait_for(lambda: running_owner(storage), 180, "a trial running in a worker")
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
    code, out, err = finish(proc, 90)
    assert code == 130 and "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("interrupted:") and "resume" in last
    result = outcome(storage, [_tracking(tmp_path)])
    assert result["states"].get("RUNNING", 0) == 0 and result["running_runs"] == 0
    assert result["errors"] and set(result["errors"]) == {"interrupted"}
    # Every run it started ended: the held trials' (those that had begun one) and the parent, KILLED.
    assert result["runs"][("KILLED", "interrupted")] == result["failed_runs"] + 1
    assert result["parents"][0].info.status == "KILLED"
    assert set(result["runs"]) <= {("KILLED", "interrupted"), ("FINISHED", "finished")}
    wait_for(lambda: not _session(proc.pid), 10, "every process of the sweep to exit")
    record("Ctrl-C (SIGINT to the process group)", storage, result, [code], [err], cells=None,
           note=f"exit 130, one line; {len(result['errors'])} held trial(s) FAIL 'interrupted', every MLflow run it "
                "started ended (children and parent KILLED); a rerun resumes")


def _fork_server(pgid: int) -> int | None:
    """The workers' fork server of a sweep's process group, once started."""
    for pid in _session(pgid):
        try:
            if b"multiprocessing.forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        except OSError:
            continue
    return None


def _mapped(pid: int, library: str) -> bool:
    try:
        return library in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def _fork_server_importing_torch(pgid: int) -> int | None:
    """The fork server once torch's libraries are loaded: its `import torch` (seconds of Python
    imports after that) is under way."""
    server = _fork_server(pgid)
    return server if server is not None and _mapped(server, "libtorch") else None


@pytest.mark.parametrize("storage", ["journal"], indirect=True)
def test_ctrl_c_while_the_fork_server_still_imports_torch_says_one_line_and_leaves_nothing_running(
        tmp_path: Path, sweep_args: list[str], storage: str) -> None:
    # CI once saw it: a Ctrl-C a few seconds into a sweep on a busy machine, while the workers' fork
    # server was importing torch, printed that server's KeyboardInterrupt traceback below "interrupted".
    proc = start([*sweep_args, "--workers", "2"], tmp_path, sweep_env(tmp_path))
    wait_for(lambda: _fork_server_importing_torch(proc.pid), 120, "the workers' fork server to import torch",
             every=0.01, watched=proc)
    os.killpg(proc.pid, signal.SIGINT)
    code, out, err = finish(proc, 90)
    assert code == 130 and "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("interrupted"), err[-3000:]
    wait_for(lambda: not _session(proc.pid), 10, "every process of the sweep to exit")
    # It may have stopped before it wrote anything; what it wrote, it ended.
    study = open_study(storage)
    assert study is None or not study.get_trials(states=[TrialState.RUNNING])
    tracking = tmp_path / "mlruns" / "mlflow.db"
    assert not tracking.exists() or not [r for r in runs(_tracking(tmp_path)) if r.info.status == "RUNNING"]


def _other_machine(folder: Path) -> list[str]:
    """Run in a PID namespace of its own, as a process on another machine (or container) would:
    its coordinator cannot see this machine's processes, only their heartbeats."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) to give the second coordinator a PID namespace of its own")
    return ["unshare", "--pid", "--fork", "--mount-proc", "--"]


LIVENESS = ["--heartbeat", "0.3", "--grace", "2"]


@pytest.mark.slow  # 60-100 s on 2 cores: run by `pytest -m slow` (CI runs it)
def test_a_slow_epoch_is_alive_by_its_heartbeat(tmp_path: Path, small: dict, speed: dict, storage: str) -> None:
    """Epochs of about 3 s against a grace of 2 s: the heartbeat thread keeps the trials alive, so
    a coordinator joining from another machine fails none of them."""
    slow = {**speed, "fusion.hidden_size": 16000, "fusion.optim.epochs": 3, "fusion.optim.early_stopping": None, "fusion.optim.batch_size": 250}
    sweep = write_sweep(tmp_path, "name: faults\ndescription: slow epochs\npaper: test\nstage: fusion\nmode: ablation\n"
                                  "factor: fusion.dropout_p\nlevels: [0.05, 0.2]\nrepeats: 1\n")
    args = ["sweep", "run", str(sweep), "--experiment", "cpu", "--data", small["data.path"], *sets(slow),
            "--storage", storage, *LIVENESS]
    env = sweep_env(tmp_path)
    first = start(args, tmp_path, env)
    wait_for(lambda: running_owner(storage), 180, "the first coordinator's trial")
    second = start(args, tmp_path, env, prefix=_other_machine(tmp_path))
    results = [finish(first), finish(second)]
    assert [code for code, _, _ in results] == [0, 0], [err[-2000:] for _, _, err in results]
    result = outcome(storage, [_tracking(tmp_path)])
    assert_every_cell_once(result, cells=2)
    assert result["states"].get("FAIL", 0) == 0, result["errors"]
    assert len(result["parents"]) == 1 and result["reports"] == 1
    record("epochs of ~3 s, grace 2 s, a second coordinator joins from another PID namespace", storage, result,
           [code for code, _, _ in results], [err for _, _, err in results], cells=2,
           note="no live trial failed: the heartbeat thread beats every 0.3 s through each epoch")


@pytest.mark.slow  # 60-100 s on 2 cores: run by `pytest -m slow` (CI runs it)
def test_a_stopped_worker_is_judged_dead_elsewhere_and_discards_its_result(tmp_path: Path, sweep_args: list[str],
                                                                           storage: str) -> None:
    env = sweep_env(tmp_path)
    first = start([*sweep_args, "--workers", "2", *LIVENESS], tmp_path, env)
    owner = wait_for(lambda: running_owner(storage), 180, "a trial running in a worker")
    # Silent, not dead: no heartbeat, no exit; and not inside a write, where every writer would
    # wait on it (test_infra_faults' stopped lock holder).
    stop_outside_locks(owner["pid"], *sweep_lock_files(storage, tmp_path / "mlruns" / "mlflow.db"))
    try:
        second = start([*sweep_args, *LIVENESS], tmp_path, env, prefix=_other_machine(tmp_path))
        joined, _, joined_err = finish(second)
        assert joined == 0 and "Traceback" not in joined_err, joined_err[-3000:]
    finally:
        os.kill(owner["pid"], signal.SIGCONT)
    code, out, err = finish(first)
    assert code == 0 and "Traceback" not in err, err[-3000:]
    assert "result discarded" in err and "judged it dead" in err  # the resumed worker noticed and stopped
    result = outcome(storage, [_tracking(tmp_path)])
    assert_every_cell_once(result)
    assert result["states"]["FAIL"] == 1 and "no heartbeat" in result["errors"][0]
    assert result["running_runs"] == 0 and len(result["parents"]) == 1 and result["reports"] == 1
    assert result["parents"][0].info.status == "FINISHED"
    record("SIGSTOP a worker beyond the grace while a coordinator joins from another PID namespace", storage, result,
           [code, joined], [err, joined_err], note="the joiner failed the silent trial and re-ran its cell; after SIGCONT "
                                                   "the worker discarded its result and exited cleanly")


def _main_flow(tmp_path: Path, prelude: str, first: str) -> subprocess.CompletedProcess[str]:
    """Run ``prelude``, then ``first`` and a long loop in a try: its stdout says whether a
    KeyboardInterrupt reached that main flow ('interrupted in the main flow') or not."""
    script = tmp_path / "main_flow.py"
    script.write_text(
        "import os, signal\n"
        "from mmsearch._interrupts import interrupt_once, note_interrupts\n"
        f"{prelude}"
        "try:\n"
        f"    {first}\n"
        "    for _ in range(10**7):\n"
        "        pass\n"
        "    print('ran to the end')\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted in the main flow')\n")
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)


def test_an_interrupt_that_lands_in_a_finalizer_still_stops_the_main_flow(tmp_path: Path) -> None:
    # Python runs signal handlers between any two bytecodes of the main thread, also inside a
    # __del__ or weakref callback, where an exception is printed as "Exception ignored" and
    # dropped. CI once saw a Ctrl-C land in a weakref callback that way.
    done = _main_flow(tmp_path,
                      "interrupt_once()\n"
                      "class Finalized:\n"
                      "    def __del__(self):\n"
                      "        os.kill(os.getpid(), signal.SIGINT)\n"
                      "        for _ in range(1000):  # the handler runs here, inside the finalizer\n"
                      "            pass\n",
                      "Finalized()")
    assert done.stdout.strip() == "interrupted in the main flow", (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr


def test_a_ctrl_c_that_a_library_swallowed_before_the_handlers_were_in_is_answered_when_they_are(
        tmp_path: Path) -> None:
    # A command's first seconds import mlflow and friends under Python's plain KeyboardInterrupt;
    # a library that catches it (or turns it into its own error, as pydantic-core does) must not
    # make the sweep that follows run on as if nobody had pressed Ctrl-C.
    done = _main_flow(tmp_path,
                      "note_interrupts()\n"
                      "try:\n"
                      "    os.kill(os.getpid(), signal.SIGINT)\n"
                      "    for _ in range(1000):\n"
                      "        pass\n"
                      "except KeyboardInterrupt:\n"
                      "    pass  # a library's `except BaseException: pass`\n",
                      "interrupt_once()")
    assert done.stdout.strip() == "interrupted in the main flow", (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr


def test_ctrl_c_while_a_command_still_imports_says_one_line(tmp_path: Path, small: dict) -> None:
    # Before: the command line's own imports and argument parsing ran outside its handling, so a
    # Ctrl-C in its first second printed a KeyboardInterrupt traceback.
    args = ["sweep", "run", "fusion-dropout-count", "--experiment", "cpu", "--data", small["data.path"],
            "--storage", str(tmp_path / "optuna-journal.log")]
    proc = start(args, tmp_path, sweep_env(tmp_path))
    wait_for(lambda: _mapped(proc.pid, "numpy") or proc.poll() is not None, 60, "the command to import numpy",
             every=0.005, watched=proc)
    assert _fork_server(proc.pid) is None  # not yet started: this Ctrl-C is the command's alone
    os.killpg(proc.pid, signal.SIGINT)
    code, out, err = finish(proc, 60)
    assert code == 130 and "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines()[-1] == "interrupted", err[-3000:]
    assert not (tmp_path / "optuna-journal.log").exists()  # it stopped before it opened anything
