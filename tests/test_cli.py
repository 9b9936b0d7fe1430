import subprocess
import sys
from pathlib import Path

from conftest import needs_glove, needs_mobilenet, needs_nltk

from mmsearch.cli import build_parser, main


def test_every_command_has_help_with_an_example() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        assert "example:" in p.description, name


def test_user_error_prints_message_without_traceback(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "mmsearch", "train", "cpu", "--set", "text.optim.lr=-1",
                          "--set", "image.backbone=resnet51"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert "text.optim.lr" in out.stderr and "resnet51" in out.stderr


@needs_nltk  # inspect tokenises the captions to report their lengths
def test_data_synth_and_inspect(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["data", "synth", str(tmp_path / "d"), "--n-train", "40", "--n-test", "5", "--image-size", "16"]) == 0
    assert main(["data", "inspect", str(tmp_path / "d")]) == 0
    text = capsys.readouterr().out
    assert "40 train rows" in text and "images: 45 found, 0 missing" in text


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
