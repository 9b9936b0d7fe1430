import argparse
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from mmsearch.cli import build_parser, main
from mmsearch.search import available_sweeps

from _sweepproc import sets
from conftest import needs_glove, needs_mobilenet, needs_nltk


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every command, nested ones included, with its parser."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out.append(((*path, name), sub))
                out += _commands(sub, (*path, name))
    return out


def test_every_command_has_an_example_that_runs_that_command() -> None:
    """Each command's help ends with an example; the example must parse (no stale flag) and
    reach that command's own handler (no command without one)."""
    parser = build_parser()
    leaves = [(path, sub) for path, sub in _commands(parser) if not any(
        isinstance(a, argparse._SubParsersAction) for a in sub._actions)]
    assert {" ".join(path) for path, _ in leaves} == {
        "data synth", "data holdout", "data inspect", "train", "config", "sweep list", "sweep show", "sweep run",
        "sweep status", "export", "predict", "report", "reproduce", "ui", "models", "cache show", "cache prune"}
    for path, sub in leaves:
        example = sub.get_default("example")
        assert example and f"example:\n  {example}" in sub.format_help(), path
        argv = shlex.split(example)
        assert argv[0] == "mmsearch" and tuple(argv[1 : 1 + len(path)]) == path, (path, example)
        args = parser.parse_args(argv[1:])
        assert args.func is sub.get_default("func") and args.func is not None, path


def test_every_parser_nested_ones_included_answers_help(capsys) -> None:  # type: ignore[no-untyped-def]
    parser = build_parser()
    for path in [(), *(p for p, _ in _commands(parser))]:
        with pytest.raises(SystemExit) as done:
            parser.parse_args([*path, "--help"])
        assert done.value.code == 0, path
        assert "usage: mmsearch" in capsys.readouterr().out, path


def test_output_cut_short_by_its_reader_is_no_error(tmp_path: Path) -> None:
    # `true` exits before mmsearch has started: every write meets a closed pipe.
    proc = subprocess.run(f"set -o pipefail; {sys.executable} -m mmsearch sweep show fusion-dropout-count | true",
                          shell=True, executable="/bin/bash", capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_a_port_out_of_range_is_refused() -> None:
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(["ui", "--port", "99999"])
    assert done.value.code == 2


def test_ui_on_a_busy_port_is_one_message_and_exit_2_before_any_link(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "mmsearch", "ui", "--port", str(port), "--tracking-uri",
                              f"sqlite:///{tmp_path}/mlflow.db"], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert f"127.0.0.1:{port}" in out.stderr and "Address already in use" in out.stderr and "--port" in out.stderr
    assert "open http" not in out.stdout


def test_user_error_prints_message_without_traceback(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "mmsearch", "train", "cpu", "--set", "text.optim.lr=-1",
                          "--set", "image.backbone=resnet51"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert "text.optim.lr" in out.stderr and "resnet51" in out.stderr
    assert "--set text.optim.lr: -1" in out.stderr and "--set image.backbone" in out.stderr  # blamed on the flag


def test_a_mistyped_set_key_is_blamed_on_the_flag_with_the_nearest_key() -> None:
    from mmsearch.config import load_experiment
    from mmsearch.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        load_experiment("cpu", {"fusion.optim.learning_rate": 0.01, "text.hiden_size": 10})
    where = {p.where: p.message for p in err.value.problems}
    assert where["--set fusion.optim.learning_rate"].startswith("unknown key; did you mean fusion.optim.lr?"), where
    assert where["--set text.hiden_size"].startswith("unknown key; did you mean text.hidden_size?"), where


def test_commands_that_train_nothing_never_load_torch() -> None:
    code = ("import sys, contextlib, io\n"
            "from mmsearch.cli import main\n"
            "for argv in (['sweep', 'list'], ['sweep', 'show', 'text-corpus'], ['models'], ['config', 'paper']):\n"
            "    with contextlib.redirect_stdout(io.StringIO()):\n"
            "        assert main(argv) == 0, argv\n"
            "print(sorted(m for m in ('torch', 'torchvision', 'mlflow', 'optuna') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_sweep_list_shows_every_sweep_with_its_whole_paper_reference(capsys: pytest.CaptureFixture[str]) -> None:
    from mmsearch.search import load_sweep

    assert main(["sweep", "list"]) == 0
    text = capsys.readouterr().out
    for path in available_sweeps():
        spec, _ = load_sweep(str(path))
        assert spec.paper in text and spec.name in text


def test_sweep_show_lists_what_the_profile_changes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sweep", "show", "fusion-lr", "--experiment", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "# experiment cpu deviates from paper in" in text and "data.image_size: 224 -> 64" in text


@needs_nltk  # inspect tokenises the captions to report their lengths
def test_data_synth_and_inspect(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["data", "synth", str(tmp_path / "d"), "--n-train", "40", "--n-test", "5", "--image-size", "16"]) == 0
    assert main(["data", "inspect", str(tmp_path / "d")]) == 0
    text = capsys.readouterr().out
    assert "40 train rows" in text and "images: 45 found, 0 missing, every one decoded" in text
    assert "caption length (tokens after preprocessing): mean " in text and "fewer than k words: 6: " in text


@needs_nltk
def test_inspect_names_every_undecodable_image_with_its_line(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["data", "synth", str(tmp_path / "d"), "--n-train", "20", "--n-test", "2", "--image-size", "16"]) == 0
    (tmp_path / "d" / "data" / "3.jpg").write_bytes(b"")
    jpeg = (tmp_path / "d" / "data" / "5.jpg").read_bytes()
    (tmp_path / "d" / "data" / "5.jpg").write_bytes(jpeg[: len(jpeg) // 2])  # truncated: its header still reads
    capsys.readouterr()
    assert main(["data", "inspect", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "train.csv:5" in err and "3.jpg" in err and "train.csv:7" in err and "5.jpg" in err


@needs_glove
@needs_mobilenet
@needs_nltk
def test_train_records_an_mlflow_run(tmp_path: Path, small: dict, capsys) -> None:  # type: ignore[no-untyped-def]
    from mlflow.tracking import MlflowClient

    args = ["train", "cpu", "--data", small["data.path"], "--stage", "text", "--set", "text.optim.epochs=3",
            "--set", "data.image_size=48"]
    assert main(args) == 0
    out = capsys.readouterr().out
    run_id = out.strip().split()[-1]
    client = MlflowClient()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params["text.seq_len"] == "12"
    assert len(client.get_metric_history(run_id, "text/val_f1")) == 3
    assert {"config.yaml", "charts"} <= {a.path for a in client.list_artifacts(run_id)}


@needs_glove
@needs_mobilenet
@needs_nltk
def test_status_finds_the_study_the_user_ran(tmp_path: Path, small: dict, speed: dict, capsys) -> None:  # type: ignore[no-untyped-def]
    storage = str(tmp_path / "journal.log")
    status = ["sweep", "status", "fusion-lr", "--storage", storage]
    assert main(status) == 2
    err = capsys.readouterr().err
    assert "has no study" in err and "mmsearch sweep run fusion-lr" in err
    run = ["sweep", "run", "fusion-lr", "--experiment", "cpu", "--data", small["data.path"], *sets(speed), "--storage", storage,
           "--trials", "1"]
    assert main([*run, "--set", "fusion.optim.epochs=3"]) == 0
    capsys.readouterr()
    assert main(status) == 0  # no flags: the only study there is, said so
    captured = capsys.readouterr()
    assert "the only study of sweep fusion-lr" in captured.err and "fusion.optim.lr" in captured.out
    assert "1/10 cells complete" in captured.out and "95% CI" in captured.out
    assert main([*run, "--set", "fusion.optim.epochs=4"]) == 0
    capsys.readouterr()
    assert main(status) == 2  # two studies now: each listed with the flags that select it
    err = capsys.readouterr().err
    assert err.count("mmsearch sweep status fusion-lr --experiment cpu") == 2 and "fusion.optim.epochs=3" in err
    assert main([*status, "--experiment", "cpu", "--data", small["data.path"], *sets(speed), "--set", "fusion.optim.epochs=4"]) == 0
    assert main([*status, "--json"]) == 2  # --json changes the output, not which study
    capsys.readouterr()
    chosen = [*status, "--experiment", "cpu", "--data", small["data.path"], *sets(speed), "--set", "fusion.optim.epochs=4"]
    assert main([*chosen, "--json"]) == 0

    def not_json(constant: str) -> None:
        raise AssertionError(f"--json printed {constant}, which JSON does not have")

    data = json.loads(capsys.readouterr().out, parse_constant=not_json)
    assert data["done"] == 1 and any(level["ci_low"] is None for level in data["levels"])  # one repeat: no interval
    assert data["method"].startswith("paired t on matched seeds") and "±0.005" in data["method"]


def test_sweep_run_in_a_log_prints_timestamped_progress_on_change_and_ends_with_every_level(
        tmp_path: Path, small: dict, speed: dict) -> None:
    from _sweepproc import sets

    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db", "MMSEARCH_PROGRESS": "1"}
    out = subprocess.run([sys.executable, "-m", "mmsearch", "sweep", "run", "fusion-dropout-count", "--experiment", "cpu",
                          "--data", small["data.path"], *sets(speed), "--storage", str(tmp_path / "j.log"),
                          "--trials", "3", "--workers", "2"], capture_output=True, text=True, cwd=tmp_path, env=env,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    progress = [line for line in out.stderr.splitlines() if "[fusion-dropout-count]" in line]
    assert progress and all(re.match(r"\d\d:\d\d:\d\d \[fusion-dropout-count\]", line) for line in progress), progress
    # A line when something changed; the same state at most every 30 s (not every 2 s).
    states = [re.sub(r"; ETA \d+s| \[\d+s\]$", "", line[9:]) for line in progress]
    repeats = sum(1 for a, b in zip(states, states[1:]) if a == b)
    elapsed = int(re.search(r"\[(\d+)s\]$", progress[-1]).group(1))
    assert repeats <= elapsed / 30 + 1, progress
    # It ends with the per-level table `sweep status` prints, every level with its interval.
    assert "mean ± std" in out.stdout and "95% CI" in out.stdout
    for level in ("0", "1", "2"):
        assert re.search(rf"^[ ★] {level} ", out.stdout, re.M), out.stdout
