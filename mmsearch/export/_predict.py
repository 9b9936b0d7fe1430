"""``mmsearch predict``: a Kaggle-format CSV for every row of a dataset CSV."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from mmsearch.data import CsvTable, encode, read_table, write_submission
from mmsearch.errors import DataError, MmsearchError, Problem
from mmsearch.serving import IMAGE_COLUMN, NEEDS_IMAGES, ImageFiles, InputError
from mmsearch.tracking import resolve_tracking_uri


@dataclass
class PredictOutcome:
    rows: int
    out: Path
    samples_f1: float | None  # when the CSV (or a test_labels.csv beside it) has labels


def load_model(model_uri: str, tracking_uri: str | None = None) -> Any:
    """An exported model by any MLflow URI, or an error naming the URI and what exists."""
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = resolve_tracking_uri(tracking_uri)
    mlflow.set_tracking_uri(uri)  # models:/ and runs:/ URIs resolve against this store
    mlflow.set_registry_uri(uri)
    try:
        return mlflow.pyfunc.load_model(model_uri)
    except MlflowException as exc:
        hint = ""
        if model_uri.startswith("models:/"):
            names = [m.name for m in mlflow.MlflowClient(uri).search_registered_models(max_results=50)]
            hint = f"; registered models in {uri}: {', '.join(names) or 'none'}"
        raise MmsearchError(f"cannot load model {model_uri}: {exc.message.splitlines()[0]}{hint}") from None
    except OSError as exc:
        raise MmsearchError(f"cannot load model {model_uri}: {exc}") from None


def check_output_file(out: Path, flag: str) -> None:
    """Refuse an output path that cannot take a file: a folder, a missing or unwritable folder."""
    parent = out.parent if str(out.parent) else Path(".")
    problem = None
    if out.is_dir():
        problem = "is a folder; give a file path such as " + str(out / "predictions.csv")
    elif out.is_symlink() and not out.exists():
        problem = "is a symbolic link to nothing or a link loop; give a file path"
    elif out.exists() and not out.is_file():
        problem = "is not an ordinary file (a device, a FIFO, a socket); give a file path on a disk"
    elif any(out.absolute().is_relative_to(p) for p in ("/proc", "/sys")):
        problem = "is on a kernel filesystem; give a file path on a disk"
    elif not parent.is_dir():
        problem = f"folder {parent} does not exist"
    elif not os.access(parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        problem = f"{out if out.exists() else parent} is not writable"
    if problem:
        raise DataError("cannot write the output", [Problem(f"{flag} {out}", problem)])


def predict_csv(model_uri: str, data: Path, csv_name: str, out: Path, tracking_uri: str | None = None) -> PredictOutcome:
    check_output_file(out, "--out")  # before the minutes of predicting, not after
    path = data / csv_name
    if not path.is_file():
        raise DataError("nothing to predict", [Problem(str(path), "file not found")])
    table, problems = read_table(path, ("ImageID", "Caption"))
    if problems:
        raise InputError(f"{path}: rows the model cannot predict", problems)
    if not len(table):
        raise DataError("nothing to predict", [Problem(f"{path}:1", "no rows after the header")])
    model = load_model(model_uri, tracking_uri)
    frame = pd.DataFrame({"ImageID": table.image_ids, "Caption": table.captions})
    if model.metadata.metadata[NEEDS_IMAGES]:
        frame[IMAGE_COLUMN] = [str(data / "data" / i) for i in table.image_ids]
        # The model reads its images from the dataset's own folder, and only from there (an ImageID
        # of ../../x in a CSV is refused like a served request's path outside the server's folder).
        model.unwrap_python_model().predictor.image_files = ImageFiles.served(str(data / "data"))
    try:
        predicted = model.predict(frame)
    except Exception as raised:  # the model's own checks (empty caption, missing or undecodable image): name the line
        exc = raised if isinstance(raised, InputError) else raised.__cause__  # the pyfunc wraps it for MLflow's server
        if not isinstance(exc, InputError):
            raise
        located = [Problem(f"{path}:{table.lines[row]}", p.message) for row, p in zip(exc.rows, exc.problems)]
        raise InputError(f"{path}: rows the model cannot predict", located or exc.problems) from None
    labels = [[int(x) for x in s.split()] for s in predicted["Labels"]]
    write_submission(out, table.image_ids, labels)
    return PredictOutcome(len(labels), out, _score(table, data, labels))


def _score(table: CsvTable, data: Path, labels: list[list[int]]) -> float | None:
    from mmsearch.training import samples_f1

    truth = table.labels
    if truth is None and (data / "test_labels.csv").is_file() and table.path.name == "test.csv":
        answers, problems = read_table(data / "test_labels.csv", ("ImageID", "Labels", "Caption"))
        if problems or answers.image_ids != table.image_ids:
            return None
        truth = answers.labels
    if truth is None:
        return None
    return samples_f1(encode(truth), encode(labels))
