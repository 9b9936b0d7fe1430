"""Hostile inputs, generated: every kind of thing a path can be (a FIFO, a device, a link loop, a
link to nowhere, a folder, binary junk, an empty file, a sparse file of gigabytes) put in every
place a command reads or writes a path (an image, the image folder, train.csv, a sweep file, an
experiment file, the study storage, an output file). Each combination is a case; each must end
within its time limit in one message and exit 2: never a hang (a FIFO blocks a reader for ever,
/dev/zero never ends), never a traceback, never a message the size of the input.

The combinations a command rightly accepts are listed in ``VALID`` with the reason."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mmsearch.cli import main

from conftest import needs_glove, needs_mobilenet, needs_nltk

pytestmark = [needs_glove, needs_mobilenet, needs_nltk]


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _device(path: Path) -> None:
    path.symlink_to("/dev/zero")  # reads never end


def _loop(path: Path) -> None:
    path.symlink_to(path)


def _dangling(path: Path) -> None:
    path.symlink_to(path.with_name("nowhere"))


def _folder(path: Path) -> None:
    path.mkdir()


def _junk(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * 16)  # not UTF-8, not an image, not YAML


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _sparse(path: Path) -> None:
    with open(path, "wb") as f:  # 3 GB of zeros that take no disk: a reader that slurps it is the bug
        f.truncate(3 * 2**30)


KINDS: dict[str, Callable[[Path], None]] = {
    "a FIFO": _fifo, "/dev/zero": _device, "a link loop": _loop, "a link to nowhere": _dangling, "a folder": _folder,
    "binary junk": _junk, "an empty file": _empty, "a 3 GB sparse file": _sparse,
}


def _dataset(folder: Path, demo: Path) -> Path:
    """Ten demo rows and their images: a valid dataset one slot of which a case replaces."""
    data = folder / "d"
    (data / "data").mkdir(parents=True)
    for i in range(10):
        shutil.copy(demo / "data" / f"{i}.jpg", data / "data" / f"{i}.jpg")
    (data / "train.csv").write_text("ImageID,Labels,Caption\n" + "".join(f"{i}.jpg,1,a man\n" for i in range(10)))
    return data


def _replace(path: Path, make: Callable[[Path], None]) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    make(path)


# slot -> (what to replace, given the case folder and the dataset; the command; the name the message must carry)
Slot = tuple[Callable[[Path, Path], Path], Callable[[Path, Path, dict], list[str]], str]
SLOTS: dict[str, Slot] = {
    "an image": (lambda f, d: d / "data" / "3.jpg", lambda f, d, fx: ["data", "inspect", str(d)], "3.jpg"),
    "the image folder": (lambda f, d: d / "data", lambda f, d, fx: ["data", "inspect", str(d)], "data"),
    "train.csv": (lambda f, d: d / "train.csv", lambda f, d, fx: ["data", "inspect", str(d)], "train.csv"),
    "a sweep file": (lambda f, d: f / "s.yaml", lambda f, d, fx: ["sweep", "run", str(f / "s.yaml"), "--experiment",
                                                                  "cpu", "--data", str(d)], "s.yaml"),
    "an experiment file": (lambda f, d: f / "e.yaml",
                           lambda f, d, fx: ["sweep", "run", "fusion-dropout-count", "--experiment", str(f / "e.yaml"),
                                             "--data", str(d)], "e.yaml"),
    "--storage": (lambda f, d: f / "journal.log",
                  lambda f, d, fx: ["sweep", "run", "fusion-dropout-count", "--experiment", "cpu", "--data", str(d),
                                    "--storage", str(f / "journal.log")], "journal.log"),
    "predict --out": (lambda f, d: f / "out.csv",
                      lambda f, d, fx: ["predict", "models:/no-such-model@champion", "--data", str(d), "--out",
                                        str(f / "out.csv")], "out.csv"),
}
# What a command rightly takes: an empty journal is a new study storage (the sweep would then run);
# an existing regular file is an output file like any other (it is overwritten).
VALID = {("--storage", "an empty file"), ("predict --out", "an empty file"), ("predict --out", "binary junk"),
         ("predict --out", "a 3 GB sparse file"),
         ("an experiment file", "an empty file")}  # an empty experiment is the paper's defaults (Appendix 6.1)
CASES = [(slot, kind) for slot in SLOTS for kind in KINDS if (slot, kind) not in VALID]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("slot, kind", CASES, ids=[f"{k} as {s}" for s, k in CASES])
def test_a_hostile_path_is_one_message_and_exit_2_in_bounded_time(
        slot: str, kind: str, tmp_path: Path, small: dict, capsys: pytest.CaptureFixture[str]) -> None:
    where, argv, name = SLOTS[slot]
    data = _dataset(tmp_path, Path(small["data.path"]))
    _replace(where(tmp_path, data), KINDS[kind])
    started = time.time()
    try:
        code = main(argv(tmp_path, data, {"small": small}))
    except SystemExit as exc:  # argparse refuses an argument before any handler runs
        code = exc.code
    seconds = time.time() - started
    err = capsys.readouterr().err
    assert code == 2, (code, err[-3000:])
    assert err.startswith("error:") and "Traceback" not in err, err[-3000:]
    assert name in err, err  # the message names the place
    assert len(err) < 5_000, len(err)
    assert seconds < 30, seconds
