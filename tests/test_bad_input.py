"""Bad input and bad places: every case is one message naming what is wrong and exit 2, never a
traceback, and nothing is created on the way (no study, no MLflow run, no output file)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mmsearch.cli import main

from _sweepproc import sets
from conftest import needs_glove, needs_mobilenet, needs_nltk

pytestmark = [needs_glove, needs_mobilenet, needs_nltk]


@dataclass
class Case:
    argv: Callable[[Path, dict], list[str]]  # (folder prepared for the case, fixtures) -> arguments
    expected: list[str]  # every one of these must be in the message
    prepare: Callable[[Path, dict], None] = lambda folder, fx: None
    within_s: float = 60.0
    extra: list[str] = field(default_factory=list)


def _csv(name: str, text: str | bytes) -> Callable[[Path, dict], None]:
    def prepare(folder: Path, fx: dict) -> None:
        data = folder / "d"
        data.mkdir()
        (data / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    return prepare


def _image_rows(content: bytes) -> Callable[[Path, dict], None]:
    """A test.csv whose second row's image is ``content`` (a demo image for the first row)."""
    def prepare(folder: Path, fx: dict) -> None:
        demo = Path(fx["small"]["data.path"])
        data = folder / "d"
        (data / "data").mkdir(parents=True)
        shutil.copy(demo / "data" / "0.jpg", data / "data" / "a.jpg")
        (data / "data" / "b.jpg").write_bytes(content)
        (data / "test.csv").write_text("ImageID,Caption\na.jpg,a dog on a bench\nb.jpg,a cat\n")
    return prepare


def _truncated(folder: Path, fx: dict) -> bytes:
    return (Path(fx["small"]["data.path"]) / "data" / "1.jpg").read_bytes()[:200]


def _sweep(storage: str | None = None, *extra: str) -> Callable[[Path, dict], list[str]]:
    def argv(folder: Path, fx: dict) -> list[str]:
        where = storage.format(folder=folder) if storage else str(folder / "journal.log")
        return ["sweep", "run", "fusion-dropout-count", "--experiment", "cpu", "--data", fx["small"]["data.path"],
                *sets(fx["speed"]), "--storage", where, *extra]
    return argv


def _predict(model: str, csv: str = "test.csv") -> Callable[[Path, dict], list[str]]:
    return lambda folder, fx: ["predict", model, "--data", str(folder / "d"), "--csv", csv, "--out", str(folder / "p.csv")]


def _train_rows(body: str) -> Callable[[Path, dict], None]:
    return _csv("train.csv", "ImageID,Labels,Caption\n" + body)


CASES = {
    "header-only train.csv (inspect)": Case(lambda f, fx: ["data", "inspect", str(f / "d")],
                                            ["train.csv:1", "no data rows"], _train_rows("")),
    "header-only train.csv (train)": Case(lambda f, fx: ["train", "cpu", "--data", str(f / "d"), "--stage", "text"],
                                          ["train.csv:1", "no data rows"], _train_rows("")),
    "header-only test.csv (predict)": Case(_predict("models:/demo-model@champion"), ["test.csv:1", "no rows"],
                                           _csv("test.csv", "ImageID,Caption\n")),
    "truncated JPEG (predict)": Case(_predict("models:/demo-model@champion"), ["test.csv:3", "cannot decode", "b.jpg"],
                                     lambda f, fx: _image_rows(_truncated(f, fx))(f, fx)),
    "zero-byte JPEG (predict)": Case(_predict("models:/demo-model@champion"), ["test.csv:3", "cannot decode"],
                                     _image_rows(b"")),
    "corrupt JPEG (predict)": Case(_predict("models:/demo-model@champion"), ["test.csv:3", "cannot decode"],
                                   _image_rows(b"\xff\xd8\xff\xe0 this is not a JPEG")),
    "storage on a closed port": Case(_sweep("postgresql://postgres@127.0.0.1:1/x"),
                                     ["postgresql://postgres@127.0.0.1:1/x", "cannot use the PostgreSQL database"]),
    "storage: missing database": Case(_sweep("postgresql://postgres@127.0.0.1:5432/no_such_db"),
                                      ['database "no_such_db" does not exist']),
    "storage: redis on a closed port": Case(_sweep("redis://127.0.0.1:1/0"), ["redis://127.0.0.1:1/0", "Redis"]),
    "storage: a folder": Case(_sweep("{folder}"), ["is a folder", "optuna-journal.log"]),
    "storage: sqlite": Case(_sweep("sqlite:///{folder}/s.db"), ["SQLite is not safe", "journal file"]),
    "unreachable tracking server": Case(_sweep(None, "--tracking-uri", "http://127.0.0.1:1"),
                                        ["cannot reach the MLflow tracking server http://127.0.0.1:1"], within_s=30),
    "no such registered model": Case(_predict("models:/no-such-model@champion"),
                                     ["cannot load model models:/no-such-model@champion", "registered models", "demo-model"],
                                     _csv("test.csv", "ImageID,Caption\na.jpg,a dog\n")),
    "no such run": Case(_predict("runs:/0123456789abcdef0123456789abcdef/model"), ["cannot load model runs:/0123456789ab"],
                        _csv("test.csv", "ImageID,Caption\na.jpg,a dog\n")),
    "--trials 0": Case(_sweep(None, "--trials", "0"), ["--trials", "0: must be 1 or more"]),
    "--trials -5": Case(_sweep(None, "--trials", "-5"), ["--trials", "-5: must be 1 or more"]),
    "--workers 0": Case(_sweep(None, "--workers", "0"), ["--workers", "0: must be 1 or more"]),
    "--workers -1": Case(_sweep(None, "--workers", "-1"), ["--workers", "-1: must be 1 or more"]),
    "a label listed twice": Case(lambda f, fx: ["data", "inspect", str(f / "d")], ["train.csv:2", "listed twice", "'1 1 1'"],
                                 _train_rows("0.jpg,1 1 1,a man\n")),
    "an empty caption": Case(lambda f, fx: ["data", "inspect", str(f / "d")], ["train.csv:3", "empty caption"],
                             _train_rows("0.jpg,1,a man\n1.jpg,2,\n")),
    "non-UTF-8 CSV": Case(lambda f, fx: ["data", "inspect", str(f / "d")], ["train.csv:3", "not UTF-8", "ff"],
                          _csv("train.csv", b"ImageID,Labels,Caption\n0.jpg,1,a man\n1.jpg,2,caf\xff bar\n")),
    # Each of these was a traceback (exit 1) or accepted silently before.
    "sweep file is a folder": Case(lambda f, fx: ["sweep", "run", str(f), "--experiment", "cpu"],
                                   ["is a folder, not a sweep file"]),
    "run.threads=100000": Case(_sweep(None, "--set", "run.threads=100000"), ["run.threads", "1024"]),
    "a 50 MB caption": Case(lambda f, fx: ["data", "inspect", str(f / "d")],
                            ["train.csv:3", "52,428,800 characters", "at most 10,000"],
                            _train_rows("0.jpg,1,a man\n1.jpg,2," + "a" * 50 * 2**20 + "\n"), within_s=30),
    "storage in /proc": Case(_sweep("/proc/x.log"), ["/proc/x.log", "journal"]),
    "tracking URI ftp://": Case(_sweep(None, "--tracking-uri", "ftp://nowhere"),
                                ["ftp://nowhere", "unsupported scheme 'ftp'", "sqlite"]),
    "predict --out a folder": Case(lambda f, fx: ["predict", "models:/demo-model@champion", "--data", str(f / "d"),
                                                  "--out", str(f)], ["--out", "is a folder"],
                                   _csv("test.csv", "ImageID,Caption\na.jpg,a dog\n"), within_s=5),
    "one-row train.csv": Case(lambda f, fx: ["data", "inspect", str(f / "d")], ["train.csv:1", "1 data row(s)",
                                                                               "at least 10"], _train_rows("0.jpg,1,a man\n")),
    "one-row train.csv (train)": Case(lambda f, fx: ["train", "cpu", "--data", str(f / "d"), "--stage", "text"],
                                      ["1 data row(s)", "at least 10"], _train_rows("0.jpg,1,a man\n")),
    "repeats: 1000000": Case(lambda f, fx: ["sweep", "run", str(_big_sweep(f)), "--experiment", "cpu"],
                             ["repeats", "100"]),
    "--workers 1000": Case(_sweep(None, "--workers", "1000"), ["--workers", "1000: at most 256"]),
    "label +3": Case(lambda f, fx: ["data", "inspect", str(f / "d")], ["train.csv:2", "'+3' is not an integer"],
                     _train_rows("0.jpg,+3,a man\n")),
}


def _big_sweep(folder: Path) -> Path:
    path = folder / "huge.yaml"
    path.write_text("name: huge\ndescription: d\npaper: p\nstage: fusion\nmode: ablation\n"
                    "factor: fusion.dropout_p\nlevels: [0.1, 0.2]\nrepeats: 1000000\n")
    return path


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_message_and_exit_2(name: str, tmp_path: Path, small: dict, speed: dict, exported: dict,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    case = CASES[name]
    fixtures = {"small": small, "speed": speed, "exported": exported}
    case.prepare(tmp_path, fixtures)
    started = time.time()
    try:
        code = main(case.argv(tmp_path, fixtures))
    except SystemExit as exc:  # argparse refuses an argument before any handler runs
        code = exc.code
    seconds = time.time() - started
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error:") and "Traceback" not in err, err
    for needle in case.expected:
        assert needle in err, (needle, err)
    assert seconds < case.within_s
    # Nothing was made on the way: no journal, no output file, no MLflow run of this sweep.
    assert not (tmp_path / "journal.log").exists() and not (tmp_path / "p.csv").exists()
    if name.startswith(("--trials", "--workers", "storage", "unreachable")):
        from mlflow import MlflowClient

        experiment = MlflowClient().get_experiment_by_name("sweep/fusion-dropout-count")
        started_ms = started * 1000
        if experiment is not None:
            runs = MlflowClient().search_runs([experiment.experiment_id], max_results=1000)
            assert not [r for r in runs if r.info.start_time >= started_ms], "a run was created for a refused command"


def test_argument_errors_are_one_line() -> None:
    proc = subprocess.run([sys.executable, "-m", "mmsearch", "sweep", "run", "fusion-lr", "--workers", "-1"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "--workers" in proc.stderr and "mmsearch sweep run --help" in proc.stderr


def test_a_read_only_working_folder_is_named(tmp_path: Path, small: dict, speed: dict) -> None:
    """The default journal and MLflow store go in the working folder; a read-only one is refused
    before anything runs (a bind mount makes it read-only even for root)."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "--mount", "true"]).returncode != 0:
        pytest.skip("needs unshare(1) with mount namespaces to make a read-only folder")
    ro = tmp_path / "ro"
    ro.mkdir()
    script = (f"mount --bind {ro} {ro} && mount -o remount,bind,ro {ro} && cd {ro} && env -u MLFLOW_TRACKING_URI "
              f"{sys.executable} -m mmsearch sweep run fusion-dropout-count --experiment cpu --data {small['data.path']} "
              f"{' '.join(sets(speed))}")
    proc = subprocess.run(["unshare", "--mount", "sh", "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert str(ro) in proc.stderr and ("not writable" in proc.stderr or "Read-only file system" in proc.stderr)
    assert "writable folder" in proc.stderr  # and what to do about it
