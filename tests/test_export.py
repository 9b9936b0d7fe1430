import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mmsearch.data import LABELS, binarize, read_table
from mmsearch.errors import MmsearchError
from mmsearch.export import ExportRequest, export_model, predict_csv
from mmsearch.pipeline import STAGES
from mmsearch.search import SweepRequest, run_sweep
from mmsearch.serving import IMAGE_COLUMN, InputError
from mmsearch.tracking import Tracker

from conftest import needs_glove, needs_mobilenet, needs_nltk

pytestmark = [needs_glove, needs_mobilenet, needs_nltk]


def test_export_registers_champion_with_provenance(exported: dict) -> None:
    result = exported["result"]
    client = Tracker().client
    version = client.get_model_version_by_alias("demo-model", "champion")
    assert str(version.version) == result.version and version.run_id == result.run_id
    assert "fusion.dropout_count" in result.decisions[0].key
    assert version.tags["sweeps"] == "fusion-dropout-count"
    # The tag says what its number is: the level's mean over repeats, then the cited trial's own value.
    decided = version.tags["decided.fusion.dropout_count"]
    d = result.decisions[0]
    assert f"mean val_f1 {d.score:.4f}" in decided and f"cited trial {d.trial} (val_f1 {d.trial_score:.4f})" in decided
    cited = client.get_run(result.decisions[0].run_id)  # the provenance points at a real trial run
    assert cited.data.tags["sweep"] == "fusion-dropout-count"
    assert result.config.fusion.dropout_count == result.decisions[0].value
    summary = (result.folder / "summary.md").read_text()
    assert "fusion.dropout_count" in summary and (result.folder / "config.yaml").exists()


def _test_frame(ws, n: int = 24) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    ds = ws.dataset
    ids = ds.test.image_ids[:n]
    return pd.DataFrame({"ImageID": ids, "Caption": ds.test.captions[:n],
                         IMAGE_COLUMN: [str(ds.image_path(i)) for i in ids]})


def test_fresh_process_predictions_match_the_training_pipeline(exported: dict) -> None:
    result = exported["result"]
    ws = result.workspace
    frame = _test_frame(ws)
    frame.to_csv(exported["root"] / "frame.csv", index=False)
    code = (
        "import sys, json, pandas as pd, mlflow.pyfunc\n"
        "m = mlflow.pyfunc.load_model('models:/demo-model@champion')\n"
        f"out = m.predict(pd.read_csv({str(exported['root'] / 'frame.csv')!r}))\n"
        "print(json.dumps({'labels': list(out['Labels']),"
        " 'training_modules': [k for k in sys.modules if k.startswith(('mmsearch.training', 'mmsearch.search',"
        " 'mmsearch.tracking', 'mmsearch.export'))]}))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=exported["root"], env={**os.environ,
                                                     "MMSEARCH_SERVE_IMAGE_ROOT": str(ws.dataset.root / "data")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    served = json.loads(proc.stdout.strip().splitlines()[-1])
    assert served["training_modules"] == []
    # The same rows through the training path: cached stage features -> fusion network.
    rows = np.arange(ws.dataset.n_train, ws.dataset.n_train + len(frame))
    image, _ = STAGES.get("image").features(ws)
    text, _ = STAGES.get("text").features(ws)
    feats = np.concatenate([np.asarray(image)[rows], np.asarray(text)[rows]], 1)
    info = result.results["fusion"].info
    model = result.results["fusion"].model.cpu().eval()  # wherever it trained (a GPU under device: auto)
    with torch.inference_mode():
        probs = torch.sigmoid(model(torch.from_numpy((feats - info["feature_mean"]) / info["feature_std"]))).numpy()
    pred = binarize(probs, result.results["fusion"].fit.thresholds)
    expected = [" ".join(str(LABELS[j]) for j in np.flatnonzero(r)) for r in pred]
    assert served["labels"] == expected


def test_predict_writes_kaggle_csv_that_round_trips(exported: dict, tmp_path: Path) -> None:
    ws = exported["result"].workspace
    out = tmp_path / "predictions.csv"
    outcome = predict_csv("models:/demo-model@champion", ws.dataset.root, "test.csv", out)
    table, problems = read_table(out, ("ImageID", "Labels"))
    assert problems == [] and table.image_ids == ws.dataset.test.image_ids  # every row, in order
    assert all(len(labels) >= 1 for labels in table.labels)
    assert outcome.rows == ws.dataset.n_test and outcome.samples_f1 is not None and outcome.samples_f1 > 0.5


def test_bad_rows_get_a_per_row_report(exported: dict, tmp_path: Path) -> None:
    ws = exported["result"].workspace
    data = tmp_path / "bad"
    shutil.copytree(ws.dataset.root / "data", data / "data")
    ids = ws.dataset.test.image_ids
    (data / "test.csv").write_text(f"ImageID,Caption\n{ids[0]},a dog\n{ids[1]},\nmissing.jpg,a cat\n")
    with pytest.raises(InputError) as err:
        predict_csv("models:/demo-model@champion", data, "test.csv", tmp_path / "p.csv")
    text = str(err.value)
    assert "test.csv:3" in text and "empty caption" in text and "test.csv:4" in text and "missing.jpg" in text
    assert not (tmp_path / "p.csv").exists()


def test_the_shipped_networks_are_the_ones_whose_features_the_fusion_head_saw(
        exported: dict, small: dict, speed: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """A GPU does not retrain a network bit for bit. Emulated here: from now on every training
    starts from other initial weights, so an export that retrained its upstream stages would
    ship networks other than the ones whose cached features its fusion head was trained on."""
    import mlflow.pyfunc

    from mmsearch.data import build_transform, image_input
    from mmsearch.pipeline import _stages

    seeded = _stages.seed_everything
    monkeypatch.setattr(_stages, "seed_everything", lambda seed: seeded(seed + 1000))
    result = export_model(ExportRequest(sweeps=["fusion-dropout-count"], name="shipped-check", experiment="cpu",
                                        data=small["data.path"], overrides=dict(speed),
                                        storage=str(exported["root"] / "journal.log"), out_dir=exported["root"] / "x"))
    ws = result.workspace
    shipped = mlflow.pyfunc.load_model(result.model_uri).unwrap_python_model().predictor.pipelines[0]
    rows = np.arange(64)
    ids, lengths = ws.sequences()
    transform = build_transform(ws.cfg.image.augmentation, ws.cfg.data.image_size, train=False)
    with torch.inference_mode():
        text = shipped.text.features(ids[rows], lengths[rows]).numpy()
        image = shipped.image.features(image_input(torch.from_numpy(np.asarray(ws.images()[rows])), transform,
                                                   shipped.runtime)).numpy()
    up = ws.upstream()
    np.testing.assert_allclose(text, np.asarray(STAGES.get("text").features(up)[0])[rows], atol=1e-5)
    np.testing.assert_allclose(image, np.asarray(STAGES.get("image").features(up)[0])[rows], atol=1e-4)
    # The fusion head itself is new (it is what the export trains) and standardises as it was trained.
    prepared, meta = STAGES.get("fusion").prepared_inputs(ws)
    np.testing.assert_array_equal(result.results["fusion"].info["feature_mean"], np.asarray(meta["feature_mean"], np.float32))


@pytest.fixture(scope="module")
def captions(tmp_path_factory: pytest.TempPathFactory, small: dict, speed: dict) -> dict:
    """A caption-only copy of the demo data and a finished text-seq-len sweep on it."""
    root = tmp_path_factory.mktemp("captions")
    data = root / "captions"
    data.mkdir()
    for name in ("train.csv", "test.csv", "test_labels.csv"):
        shutil.copy(Path(small["data.path"]) / name, data / name)
    overrides = {**speed, "text.optim.epochs": 8}
    storage = str(root / "journal.log")
    run_sweep(SweepRequest(sweep="text-seq-len", experiment="cpu", overrides=overrides, data=str(data),
                           storage=storage, trials=2, progress=False))
    return {"root": root, "data": data, "overrides": overrides, "storage": storage}


def test_caption_only_export_and_predict(captions: dict, tmp_path: Path) -> None:
    data = captions["data"]
    result = export_model(ExportRequest(sweeps=["text-seq-len"], name="captions-model", experiment="cpu",
                                        data=str(data), overrides=captions["overrides"], storage=captions["storage"],
                                        full=True, out_dir=tmp_path / "exports"))
    assert list(result.results) == ["text"] and result.config.text.optim.early_stopping is None
    # --full trains exactly the epochs the validation run kept, and restores nothing.
    refit = result.results["text"].fit
    assert not result.config.text.optim.restore_best and not refit.restored
    assert len(refit.history) == result.config.text.optim.epochs
    # The --set values are part of the provenance; a key the sweep decided is cited to the sweep.
    summary = (result.folder / "summary.md").read_text()
    assert "| `text.optim.epochs` | 8 | --set (base override) |" in summary
    assert "| `text.seq_len` |" in summary and "`text.seq_len` | " + str(result.config.text.seq_len) + " | text-seq-len" in summary
    outcome = predict_csv("models:/captions-model@champion", data, "test.csv", tmp_path / "p.csv")
    assert outcome.rows == 50 and outcome.samples_f1 is not None and outcome.samples_f1 > 0.5
    # A caption-only model takes captions only: its signature, its input example and a request.
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model("models:/captions-model@champion")
    assert model.metadata.get_input_schema().input_names() == ["ImageID", "Caption"]
    example = model.input_example
    assert list(example.columns) == ["ImageID", "Caption"] and len(example) == 2
    answer = model.predict(pd.DataFrame({"ImageID": ["a.jpg"], "Caption": ["A man riding a horse."]}))
    assert list(answer.columns) == ["ImageID", "Labels"] and answer["Labels"][0]


def test_ensemble_export_averages_its_members(captions: dict, tmp_path: Path) -> None:
    import mlflow.pyfunc

    from mmsearch.training import scores

    result = export_model(ExportRequest(sweeps=["text-seq-len"], name="captions-ensemble", experiment="cpu",
                                        data=str(captions["data"]), overrides=captions["overrides"],
                                        storage=captions["storage"], ensemble=3, out_dir=tmp_path / "exports"))
    members = result.members
    assert [m.workspace.cfg.run.seed for m in members] == [0, 1, 2]
    # Different seeds give different networks, or averaging them would be pointless.
    first, second = (m.results["text"].model.head.weight.cpu() for m in members[:2])
    assert not torch.equal(first, second)
    ws = members[0].workspace
    truth = ws.targets[ws.split.val]
    val_probs = np.mean([m.results["text"].fit.val_probs for m in members], axis=0)
    assert result.metrics["ensemble/final_val_f1"] == pytest.approx(scores(truth, val_probs)["f1"])
    assert result.metrics["ensemble/final_val_f1"] > 0.5
    # Served probabilities are the mean of the members' own, on the held-out rows.
    model = mlflow.pyfunc.load_model("models:/captions-ensemble@champion")
    predictor = model.unwrap_python_model().predictor
    assert len(predictor.pipelines) == 3
    # Each member is a whole model too, with the thresholds tuned for it alone.
    np.testing.assert_allclose(predictor.bundle.members[1].meta["thresholds"], members[1].thresholds)
    n = ws.dataset.n_train
    expected = []
    for m in members:
        ids, lengths = m.workspace.sequences()
        with torch.inference_mode():
            expected.append(torch.sigmoid(m.results["text"].model.cpu().eval()(ids[n:], lengths[n:])).numpy())
    frame = pd.DataFrame({"ImageID": ws.dataset.test.image_ids, "Caption": ws.dataset.test.captions})
    served = predictor.predict_proba(frame)
    np.testing.assert_allclose(served, np.mean(expected, axis=0), atol=1e-5)
    assert list(model.predict(frame)["Labels"]) == [
        " ".join(str(LABELS[j]) for j in np.flatnonzero(r)) for r in binarize(served, predictor.thresholds)]
    assert "ensemble of 3 members" in (result.folder / "summary.md").read_text()


def test_export_without_a_study_says_what_to_run(tmp_path: Path, small: dict, speed: dict) -> None:
    with pytest.raises(MmsearchError) as err:
        export_model(ExportRequest(sweeps=["fusion-lr"], name="x", experiment="cpu", data=small["data.path"],
                                   overrides=dict(speed), storage=str(tmp_path / "none.log")))
    assert "mmsearch sweep run fusion-lr" in str(err.value)


def test_export_takes_the_study_its_own_message_names(exported: dict, small: dict, speed: dict) -> None:
    import optuna

    from mmsearch.cli import build_parser
    from mmsearch.export import final_config
    from mmsearch.search import open_storage

    [name] = [n for n in optuna.study.get_all_study_names(open_storage(exported["storage"]).optuna)
              if n.startswith("fusion-dropout-count@")]
    args = build_parser().parse_args(["export", "fusion-dropout-count", "--name", "x", "--study", name])
    assert args.study == [name]
    request = ExportRequest(sweeps=["fusion-dropout-count"], name="x", storage=exported["storage"], studies=[name],
                            overrides={"run.threads": 1})  # a placement setting never hides the study
    _, decisions, _ = final_config(request)
    assert {d.study for d in decisions} == {name}
    with pytest.raises(MmsearchError, match="one --study per sweep"):
        final_config(ExportRequest(sweeps=["fusion-dropout-count"], name="x", storage=exported["storage"],
                                   studies=[name, name]))


def _readme_serving_lines() -> tuple[str, str]:
    """The README's `mlflow models serve` line and its `curl` request, as a user copies them."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = text.split("### Serving it with `mlflow models serve`", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    lines = block.replace("\\\n", "").splitlines()
    serve = next(line for line in lines if line.startswith("mlflow models serve"))
    curl = next(line for line in lines if line.startswith("curl "))
    return serve.rstrip(" &"), curl


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_mlflow_models_serve_answers_the_readme_request(exported: dict, tmp_path: Path) -> None:
    """MLflow's own server on the registered model, found in MLflow's default store (a plain
    ``./mlflow.db`` in the folder it starts in, no tracking URI): the README's curl request with
    an inline image, the model's own input example, image paths, and a request it must refuse."""
    import base64
    import time
    import urllib.error
    import urllib.request

    import mlflow.pyfunc

    serve, curl = _readme_serving_lines()
    port = _free_port()
    folder = tmp_path / "project"
    folder.mkdir()
    # The folder the server may read image_path files from (MMSEARCH_SERVE_IMAGE_ROOT): the test
    # rows' images, a FIFO (a read would block for ever) and a link out of it.
    ws = exported["result"].workspace
    frame = _test_frame(ws, 3)
    images = tmp_path / "images"
    images.mkdir()
    for p in frame[IMAGE_COLUMN]:
        shutil.copy(p, images / Path(p).name)
    frame[IMAGE_COLUMN] = [str(images / Path(p).name) for p in frame[IMAGE_COLUMN]]
    os.mkfifo(images / "fifo.jpg")
    secret = tmp_path / "secret.jpg"
    shutil.copy(frame[IMAGE_COLUMN][0], secret)
    (images / "link.jpg").symlink_to(secret)
    store = Path(os.environ["MLFLOW_TRACKING_URI"][len("sqlite:///"):])
    shutil.copy(store, folder / "mlflow.db")  # the store where MLflow looks by default, artifacts where they were
    # As in the user's activated venv: its bin/ on PATH (mlflow starts uvicorn from there).
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MMSEARCH_SERVE_IMAGE_ROOT"] = str(images)
    args = serve.replace("models:/demo@", "models:/demo-model@").replace("-p 5001", f"-p {port}").split()
    assert args[0] == "mlflow" and shutil.which("mlflow", path=env["PATH"]), args
    server = subprocess.Popen([shutil.which("mlflow", path=env["PATH"]), *args[1:]], cwd=folder, env=env,
                              start_new_session=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            assert server.poll() is None, server.stdout.read()[-4000:] if server.stdout else ""
            try:
                if urllib.request.urlopen(url + "/ping", timeout=5).status == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert time.time() < deadline, "mlflow models serve did not answer /ping within 180 s"
            time.sleep(1)
        # In this process, as a served model: no image folder named, so no file is read.
        with pytest.raises(Exception, match="served without an image folder"):
            mlflow.pyfunc.load_model("models:/demo-model@champion").predict(frame)
        os.environ["MMSEARCH_SERVE_IMAGE_ROOT"] = str(images)
        try:
            expected = mlflow.pyfunc.load_model("models:/demo-model@champion").predict(frame)  # by path
        finally:
            del os.environ["MMSEARCH_SERVE_IMAGE_ROOT"]
        # The README's request, word for word but for the port and the image.
        image, caption, image_id = frame[IMAGE_COLUMN][0], frame["Caption"][0], frame["ImageID"][0]
        request = (curl.replace("5001", str(port)).replace('"0.jpg"', json.dumps(image_id))
                   .replace('"A man riding a horse on a beach."', json.dumps(caption)))
        proc = subprocess.run(["bash", "-c", f"IMAGE={image}\n{request}"], capture_output=True, text=True, timeout=60)
        answer = json.loads(proc.stdout)
        assert answer == {"predictions": [{"ImageID": image_id, "Labels": expected["Labels"][0]}]}, (answer, proc.stderr)

        def post(body: dict) -> tuple[int, dict]:
            req = urllib.request.Request(url + "/invocations", json.dumps(body).encode(),
                                         {"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=60) as response:
                    return response.status, json.loads(response.read())
            except urllib.error.HTTPError as error:
                return error.code, json.loads(error.read())

        # Inline images for every row equal the predictions by path.
        inline = frame.drop(columns=[IMAGE_COLUMN]).assign(
            image_base64=[base64.b64encode(Path(p).read_bytes()).decode() for p in frame[IMAGE_COLUMN]])
        status, body = post({"dataframe_split": inline.to_dict(orient="split", index=False)})
        assert status == 200 and [p["Labels"] for p in body["predictions"]] == list(expected["Labels"]), body
        status, body = post({"dataframe_split": frame.to_dict(orient="split", index=False)})
        assert status == 200 and [p["Labels"] for p in body["predictions"]] == list(expected["Labels"]), body
        # image_path outside its folder, missing, special or linked out: one refusal, the same words
        # whether or not the file exists (no oracle of the server's files), nothing opened or hung.
        refusals = {}
        for path in [str(secret), str(tmp_path / "missing.jpg"), "/etc/hostname", "../secret.jpg", "link.jpg",
                     "fifo.jpg", str(images / "nope.jpg"), "x\x00.jpg", "/dev/zero"]:
            status, body = post({"dataframe_split": {"columns": ["ImageID", "Caption", IMAGE_COLUMN],
                                                     "data": [["x.jpg", "a dog", path]]}})
            assert status == 400, (path, body)
            message = body["message"]  # MLflow's own prefix quotes the request's frame; ours follows it
            refusals[path] = message[message.index("rows the model cannot predict"):].replace(repr(path), "PATH")
        assert len(set(refusals.values())) == 1 and "not a file this server may read" in refusals["/etc/hostname"], \
            refusals
        # The input example the model carries is a request the server answers.
        example_dir = mlflow.artifacts.download_artifacts("models:/demo-model@champion", dst_path=str(tmp_path / "m"))
        example = json.loads((Path(example_dir) / "serving_input_example.json").read_text())
        status, body = post(example)
        assert status == 200 and len(body["predictions"]) == 2 and all(p["Labels"] for p in body["predictions"]), body
        # No image at all: refused with the row named and what to send.
        status, body = post({"dataframe_split": {"columns": ["ImageID", "Caption"], "data": [["x.jpg", "a dog"]]}})
        assert status == 400 and "image_base64" in body["message"] and "image_path" in body["message"], body
        status, body = post({"dataframe_split": {"columns": ["ImageID", "Caption", "image_base64"],
                                                 "data": [["x.jpg", "a dog", "bm90IGFuIGltYWdl"]]}})
        assert status == 400 and "x.jpg" in body["message"] and "cannot decode" in body["message"], body
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, 15)
        server.wait(30)


def test_export_in_a_log_prints_its_epochs_and_logs_the_cached_stages_curves(exported: dict, small: dict,
                                                                            speed: dict, tmp_path: Path) -> None:
    """`mmsearch export` without a terminal: timestamped epoch lines per stage (a stage whose
    weights are cached says so), and every stage's per-epoch curves in its MLflow run, the
    replayed ones included."""
    args = ["export", "fusion-dropout-count", "--name", "log-model", "--experiment", "cpu", "--data", small["data.path"],
            "--storage", exported["storage"], "--out-dir", str(tmp_path / "exports")]
    for key, value in speed.items():
        args += ["--set", f"{key}={value}"]
    proc = subprocess.run([sys.executable, "-m", "mmsearch", *args], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if " export " in f" {line}" and ": epoch " in line]
    assert {line.split("export ", 1)[1].split(":", 1)[0] for line in lines} == {"image", "text", "fusion"}, proc.stderr
    assert all(line[:2].isdigit() and line[2] == ":" for line in lines)  # timestamped: not a terminal
    assert any("(cached: trained earlier" in line for line in lines)  # upstream stages come from the sweep's cache
    run_id = proc.stdout.split("(run ", 1)[1].split(")", 1)[0]
    client = Tracker().client
    for stage in ("image", "text", "fusion"):
        assert len(client.get_metric_history(run_id, f"{stage}/val_f1")) >= 2, stage
