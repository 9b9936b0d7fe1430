"""Bad input and bad places: every case is one message naming what is wrong and exit 2, never a
traceback, and nothing is created on the way (no study, no MLflow run, no output file)."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import time
import zlib
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


def _images(mutate: Callable[[Path], None]) -> Callable[[Path, dict], None]:
    """Ten demo rows with their images in d/data, then ``mutate(d)`` makes one of them hostile."""
    def prepare(folder: Path, fx: dict) -> None:
        demo = Path(fx["small"]["data.path"])
        data = folder / "d"
        (data / "data").mkdir(parents=True)
        for i in range(10):
            shutil.copy(demo / "data" / f"{i}.jpg", data / "data" / f"{i}.jpg")
        (data / "train.csv").write_text("ImageID,Labels,Caption\n" + "".join(f"{i}.jpg,1,a man\n" for i in range(10)))
        mutate(data)
    return prepare


def _fifo(data: Path) -> None:
    (data / "data" / "3.jpg").unlink()
    os.mkfifo(data / "data" / "3.jpg")  # a reader would block for ever


def _link_loop(data: Path) -> None:
    (data / "data" / "3.jpg").unlink()
    (data / "data" / "3.jpg").symlink_to(data / "data" / "3.jpg")


def _folder_loop(data: Path) -> None:
    shutil.rmtree(data / "data")
    (data / "data").symlink_to(data / "data")


def _png_bomb(data: Path) -> None:
    """A PNG whose header claims 9,000 x 9,000 pixels (81 MP) in a few bytes: refused from its
    header, before a decoder allocates anything."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", 9000, 9000, 8, 0, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 9001 * 64)) + \
        chunk(b"IEND", b"")
    (data / "data" / "3.jpg").write_bytes(png)


def _inspect(folder: Path, fx: dict) -> list[str]:
    return ["data", "inspect", str(folder / "d")]


def _train_image(folder: Path, fx: dict) -> list[str]:
    return ["train", "cpu", "--data", str(folder / "d"), "--stage", "image"]


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
    # Hostile files: refused by name before anything reads them, in seconds, never a hang.
    "an image that is a FIFO (inspect)": Case(_inspect, ["train.csv:5", "3.jpg is a FIFO", "not an image file"],
                                              _images(_fifo), within_s=20),
    "an image that is a FIFO (train)": Case(_train_image, ["train.csv:5", "a FIFO"], _images(_fifo), within_s=20),
    "an image link loop (train)": Case(_train_image, ["train.csv:5", "a symbolic link loop"], _images(_link_loop),
                                       within_s=20),
    "data -> data link loop": Case(_inspect, ["a symbolic link loop, not a folder of images"], _images(_folder_loop),
                                   within_s=20),
    "a PNG decompression bomb (inspect)": Case(_inspect, ["train.csv:5", "9000 x 9000 pixels", "64 MP"],
                                               _images(_png_bomb), within_s=20),
    "storage: /dev/null": Case(_sweep("/dev/null"), ["/dev/null", "kernel filesystem", "journal file"]),
    "storage: /dev/full": Case(_sweep("/dev/full"), ["/dev/full", "journal file"], within_s=20),
    "storage: /proc/self/status": Case(_sweep("/proc/self/status"), ["/proc/self/status", "journal file"]),
    "storage: a driver not installed": Case(_sweep("postgresql+psycopg2://postgres@127.0.0.1:5432/x"),
                                            ["postgresql+psycopg2://", "psycopg2", "postgresql://USER@HOST/DB"]),
    "storage: port 99999": Case(_sweep("postgresql://postgres@127.0.0.1:99999/x"), ["99999", "port"]),
    "predict --out /dev/full": Case(lambda f, fx: ["predict", "models:/demo-model@champion", "--data", str(f / "d"),
                                                   "--out", "/dev/full"], ["--out /dev/full", "not an ordinary file"],
                                    _csv("test.csv", "ImageID,Caption\na.jpg,a dog\n"), within_s=5),
    "predict --out /proc/x.csv": Case(lambda f, fx: ["predict", "models:/demo-model@champion", "--data", str(f / "d"),
                                                     "--out", "/proc/x.csv"], ["--out /proc/x.csv", "kernel filesystem"],
                                      _csv("test.csv", "ImageID,Caption\na.jpg,a dog\n"), within_s=5),
    "a YAML anchor bomb": Case(lambda f, fx: ["sweep", "run", str(_anchor_bomb(f)), "--experiment", "cpu"],
                               ["bomb.yaml", "expands to more than 100,000 values", "&name"], within_s=20),
    "5,000 levels": Case(lambda f, fx: ["sweep", "run", str(_many_levels(f, 5000)), "--experiment", "cpu"],
                         ["levels", "(5,000 items)", "at most 1000"], within_s=30),
    "200,000 levels": Case(lambda f, fx: ["sweep", "run", str(_many_levels(f, 200_000)), "--experiment", "cpu"],
                           ["many.yaml", "at most 1,000,000"], within_s=30),
    "5,000 labels, one repeated (inspect)": Case(_inspect, ["train.csv:2", "label 1 listed twice", "10,000 characters"],
                                                 _train_rows("0.jpg," + "1 " * 5000 + ",a man\n"), within_s=20),
}


def _anchor_bomb(folder: Path) -> Path:
    """A few hundred bytes that name 9^8 (43 million) values through anchors and aliases."""
    lines = ["name: bomb", "description: d", "paper: p", "stage: fusion", "mode: ablation", "factor: fusion.dropout_p",
             "a: &a [" + ", ".join(['"x"'] * 9) + "]"]
    for prev, name in zip("abcdefg", "bcdefgh"):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    path = folder / "bomb.yaml"
    path.write_text("\n".join([*lines, "levels: [*h]"]) + "\n")
    return path


def _many_levels(folder: Path, n: int) -> Path:
    path = folder / "many.yaml"
    path.write_text("name: many\ndescription: d\npaper: p\nstage: fusion\nmode: ablation\nfactor: fusion.dropout_p\n"
                    "levels: [" + ", ".join(f"0.{i:07d}" for i in range(n)) + "]\n")
    return path


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
    assert len(err) < 20_000, len(err)  # a message a person reads, whatever the input's size
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
