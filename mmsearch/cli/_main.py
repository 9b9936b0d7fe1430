"""Command-line entry point. Each command parses, calls the library, prints the outcome."""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys

from pathlib import Path
from typing import Any

from mmsearch.errors import MmsearchError


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def _cmd(sub: Any, name: str, help_text: str, example: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help_text, description=f"{help_text}\n\nexample:\n  {example}",
                          formatter_class=_formatter)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmsearch", formatter_class=_formatter,
        description="Hyperparameter sweeps and ablations for image + caption multi-label classifiers.\n\n"
                    "example:\n  mmsearch sweep run fusion-dropout-count --experiment cpu")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True)

    data = _cmd(sub, "data", "Dataset tools: generate the demo dataset, inspect a dataset.",
                "mmsearch data inspect ../shared/data/comp5329-captions --corpus glove-wiki-gigaword-50")
    dsub = data.add_subparsers(dest="data_command", required=True)
    synth = _cmd(dsub, "synth", "Write a demo dataset in the COMP5329 layout (deterministic per seed).",
                 "mmsearch data synth demo --n-train 2000 --n-test 500 --image-size 64 --seed 0")
    synth.add_argument("out", type=Path, help="output folder")
    synth.add_argument("--n-train", type=int, default=2000)
    synth.add_argument("--n-test", type=int, default=500)
    synth.add_argument("--image-size", type=int, default=64)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--from-csv", type=Path, help="render images for the label sets of this train.csv, keeping its captions")
    hold = _cmd(dsub, "holdout", "Hold out labelled rows as test.csv + test_labels.csv to score a final model on.",
                "mmsearch data holdout ../shared/data/comp5329-captions real-80-20 --fraction 0.2 --seed 2026")
    hold.add_argument("source", type=Path, help="dataset folder with a labelled train.csv")
    hold.add_argument("out", type=Path, help="output dataset folder (images are linked, not copied)")
    hold.add_argument("--fraction", type=float, default=0.2, help="share of rows held out (default 0.2)")
    hold.add_argument("--seed", type=int, default=2026, help="seed of the held-out split")
    inspect = _cmd(dsub, "inspect", "Validate a dataset and print rows, labels, caption lengths, OOV counts, images.",
                   "mmsearch data inspect data/ --corpus glove-wiki-gigaword-50 --corpus captions-word2vec")
    inspect.add_argument("path", type=Path, nargs="?", help="dataset folder (default: the demo dataset)")
    inspect.add_argument("--corpus", action="append", default=[], help="word-vector corpus for the OOV report (repeatable)")

    train = _cmd(sub, "train", "Train one configuration and record it as one MLflow run.",
                 "mmsearch train cpu --stage all --set fusion.optim.lr=0.01")
    train.add_argument("experiment", help="experiment name in experiments/ (paper, cpu) or a YAML path")
    train.add_argument("--data", help="dataset folder (default: the generated demo dataset)")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. text.seq_len=12 (repeatable)")
    train.add_argument("--stage", choices=["image", "text", "fusion", "all"], default="all")
    train.add_argument("--tracking-uri", help="MLflow tracking URI (default: ./mlruns)")

    sweep = _cmd(sub, "sweep", "Named sweeps: list, show, run, status.", "mmsearch sweep list")
    ssub = sweep.add_subparsers(dest="sweep_command", required=True)
    _cmd(ssub, "list", "List the named sweeps with their paper figure, mode and size.", "mmsearch sweep list")
    show = _cmd(ssub, "show", "Show a sweep file, validated against its base experiment.",
                "mmsearch sweep show fusion-dropout-count --experiment cpu")
    show.add_argument("name")
    show.add_argument("--experiment")
    for name, text, example in (
        ("run", "Run (or resume) a sweep as an Optuna study logged to MLflow.",
         "mmsearch sweep run fusion-dropout-count --experiment cpu --workers 2"),
        ("status", "Trials by state and the best so far.", "mmsearch sweep status fusion-dropout-count --experiment cpu"),
    ):
        p = _cmd(ssub, name, text, example)
        p.add_argument("name", help="sweep name in sweeps/ or a YAML path")
        p.add_argument("--experiment", help="base experiment (default: the sweep's own)")
        p.add_argument("--data", help="dataset folder (default: the generated demo dataset)")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a base config value (repeatable)")
        p.add_argument("--storage", help="Optuna storage: a journal file path (default ./optuna-journal.log) or postgresql://...")
        p.add_argument("--study", help="study name (default: derived from sweep, experiment, config and data)")
        if name == "run":
            p.add_argument("--trials", type=int, help="ablation: run at most N missing cells now; search: total trials")
            p.add_argument("--workers", type=int, default=1, help="worker processes sharing the study")
            p.add_argument("--tracking-uri", help="MLflow tracking URI (default: ./mlruns)")

    export = _cmd(sub, "export", "Train the best configuration of finished sweeps and register it as an MLflow model.",
                  "mmsearch export text-seq-len text-lr --name captions --experiment cpu --data data/ --full")
    export.add_argument("sweeps", nargs="+", help="finished sweeps, applied in this order")
    export.add_argument("--name", required=True, help="registered model name (a new version gets alias 'champion')")
    export.add_argument("--experiment", help="base experiment (default: the first sweep's)")
    export.add_argument("--data", help="dataset folder (default: the generated demo dataset)")
    export.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="base config override, as given to `sweep run` (repeatable)")
    export.add_argument("--full", action="store_true", help="after early stopping fixed the epochs, retrain on train+val")
    export.add_argument("--caption-only", action="store_true", help="export the text stage only")
    export.add_argument("--ensemble", type=int, default=1, metavar="N",
                        help="train N copies with seeds run.seed..run.seed+N-1 and average their probabilities (default 1)")
    export.add_argument("--storage", help="Optuna storage the sweeps ran in (default ./optuna-journal.log)")
    export.add_argument("--tracking-uri", help="MLflow tracking URI (default: ./mlruns)")
    export.add_argument("--out-dir", type=Path, default=Path("exports"), help="where config.yaml and summary.md go")

    predict = _cmd(sub, "predict", "Predict a Kaggle-format CSV (ImageID,Labels) with a registered or logged model.",
                   "mmsearch predict models:/captions@champion --data data/ --csv test.csv --out predictions.csv")
    predict.add_argument("model_uri", help="any MLflow model URI: models:/NAME@champion, runs:/RUN_ID/model, ...")
    predict.add_argument("--data", required=True, type=Path, help="dataset folder (images under data/)")
    predict.add_argument("--csv", default="test.csv", help="CSV inside --data with ImageID,Caption (default test.csv)")
    predict.add_argument("--out", required=True, type=Path, help="output CSV")
    predict.add_argument("--tracking-uri", help="MLflow tracking URI for models:/ URIs (default: ./mlruns)")

    ui = _cmd(sub, "ui", "Serve the MLflow UI on the default store (./mlruns).", "mmsearch ui --port 5000")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=5000)
    _cmd(sub, "models", "List registered backbones, augmentation sets, corpora, losses, samplers and pruners.",
         "mmsearch models")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose + 1, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("gensim", "alembic", "mlflow", "urllib3", "smart_open"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(COMMANDS[args.command](args) or 0)
    except MmsearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _data(args: argparse.Namespace) -> int:
    from mmsearch.data import Dataset, SynthSpec, demo_dataset, holdout, synthesize

    if args.data_command == "holdout":
        kept, held = holdout(args.source, args.out, args.fraction, args.seed)
        print(f"wrote {args.out}: {kept} rows in train.csv, {held} held out in test.csv (answers in test_labels.csv)")
        return 0
    if args.data_command == "synth":
        spec = SynthSpec(n_train=args.n_train, n_test=args.n_test, image_size=args.image_size, seed=args.seed)
        out = synthesize(args.out, spec, from_csv=args.from_csv)
        ds = Dataset.open(out)
        print(f"wrote {out}: {ds.n_train} train rows, {ds.n_test} test rows, images {args.image_size}px")
        return 0
    from mmsearch.text import PreprocessConfig, Preprocessor, length_stats, oov_report

    ds = Dataset.open(args.path or demo_dataset())
    t = ds.targets
    print(f"dataset {ds.root}: {ds.n_train} train rows, {ds.n_test} test rows, fingerprint {ds.fingerprint}")
    print(f"labels per row {t.sum(1).mean():.3f}; rows per label:")
    from mmsearch.data import LABEL_NAMES, LABELS

    for j, label in enumerate(LABELS):
        print(f"  {label:>2} {LABEL_NAMES[label]:<14} {int(t[:, j].sum()):>6}")
    tokens = Preprocessor(PreprocessConfig()).many(ds.captions)
    stats = length_stats(tokens[: ds.n_train])
    box = stats.box()
    print(f"caption length (tokens after preprocessing): mean {box['mean']:.2f}, median {box['median']:.0f}, "
          f"q1 {box['q1']:.0f}, q3 {box['q3']:.0f}, max {box['max']:.0f}")
    print("captions with fewer than k words: " + ", ".join(f"{k}: {n}" for k, n in stats.fewer_than().items()))
    for corpus in args.corpus:
        r = oov_report(corpus, tokens, dim=100 if corpus == "captions-word2vec" else None,
                       sentences_key={"data": ds.fingerprint})
        if r.error:
            print(f"OOV {corpus}: unavailable ({r.error})")
        else:
            print(f"OOV {corpus}: {r.oov_words} of {r.vocab_size} words, {r.oov_tokens} of {r.total_tokens} tokens; "
                  f"e.g. {', '.join(r.examples[:5])}")
    if ds.has_images:
        present = set(os.listdir(ds.root / "data"))
        found = sum(1 for i in ds.image_ids if i in present)
        print(f"images: {found} found, {len(ds.image_ids) - found} missing")
    else:
        print("images: none (caption-only dataset)")
    return 0


def _train(args: argparse.Namespace) -> int:
    from mmsearch.config import STAGE_NAMES, request_overrides
    from mmsearch.pipeline import train_experiment

    stages = STAGE_NAMES if args.stage == "all" else (args.stage,)
    outcome = train_experiment(args.experiment, request_overrides(args.overrides, args.data), stages, args.tracking_uri)
    print(f"always-label-1 baseline: val samples-F1 {outcome.baseline_f1:.4f}")
    for stage, result in outcome.results.items():
        m = result.metrics
        print(f"{stage:<6} val samples-F1 {m['val_f1']:.4f}  micro {m['val_f1_micro']:.4f}  macro {m['val_f1_macro']:.4f}"
              f"  best epoch {int(m['best_epoch'])}/{int(m['epochs_run'])}  {result.params:,} params "
              f"{result.size_mb:.1f} MB  {result.fit.seconds:.1f}s")
    print(f"MLflow run {outcome.run_id}")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from mmsearch.config import parse_overrides
    from mmsearch.search import SweepRequest, available_sweeps, load_sweep, run_sweep, sweep_status

    if args.sweep_command == "list":
        print(f"{'name':<22} {'paper':<34} {'mode':<9} {'stage':<7} size")
        for path in available_sweeps():
            spec, _ = load_sweep(str(path))
            print(f"{spec.name:<22} {spec.paper[:34]:<34} {spec.mode:<9} {spec.stage:<7} {spec.size}")
        return 0
    if args.sweep_command == "show":
        spec, base = load_sweep(args.name, args.experiment)
        print(spec.path.read_text())
        print(f"# base experiment: {spec.experiment}; {spec.size} trials; base level: {spec.base}")
        for lv in spec.levels:
            print(f"#   level {lv.label}: {lv.overrides}")
        return 0
    overrides, problems = parse_overrides(args.overrides)
    if problems:
        from mmsearch.errors import ConfigError

        raise ConfigError("invalid --set", problems)
    request = SweepRequest(sweep=args.name, experiment=args.experiment, overrides=overrides, data=args.data,
                           storage=args.storage, study_name=args.study,
                           **({"workers": args.workers, "trials": args.trials, "tracking_uri": args.tracking_uri}
                              if args.sweep_command == "run" else {}))
    if args.sweep_command == "status":
        print(json.dumps(sweep_status(request), indent=2, default=str))
        return 0
    summary = run_sweep(request)
    print(f"study {summary.study_name}: {summary.counts} in {summary.seconds:.0f}s ({summary.ran_trials} trials run now)")
    if summary.best_level is not None:
        print(f"best level {summary.best_level}: mean {summary.best_value:.4f}")
    elif summary.best_value is not None:
        print(f"best value {summary.best_value:.4f} with {summary.best_params}")
    print(f"MLflow parent run {summary.parent_run_id} (experiment sweep/{request.sweep}); `mmsearch ui` to browse")
    return 0


def _export(args: argparse.Namespace) -> int:
    from mmsearch.config import parse_overrides
    from mmsearch.errors import ConfigError
    from mmsearch.export import ExportRequest, base_overrides, export_model

    overrides, problems = parse_overrides(args.overrides)
    if problems:
        raise ConfigError("invalid --set", problems)
    request = ExportRequest(sweeps=args.sweeps, name=args.name, experiment=args.experiment, data=args.data,
                            overrides=overrides, full=args.full, caption_only=args.caption_only, ensemble=args.ensemble,
                            storage=args.storage, tracking_uri=args.tracking_uri, out_dir=args.out_dir)
    result = export_model(request)
    for d in result.decisions:
        print(f"{d.key} = {d.value!r}  <- {d.sweep} {d.how}, trial {d.trial}, run {d.run_id}, {d.metric} {d.score:.4f}")
    for key, value in base_overrides(request, result.decisions).items():
        print(f"{key} = {value!r}  <- --set (base override)")
    for key, value in sorted(result.metrics.items()):
        if key.endswith("final_val_f1") or key.endswith("final_val_f1_tuned"):
            print(f"{key}: {value:.4f}")
    print(f"registered {result.name} version {result.version} as {result.model_uri} (run {result.run_id}); "
          f"summary in {result.folder}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from mmsearch.export import predict_csv

    outcome = predict_csv(args.model_uri, args.data, args.csv, args.out, args.tracking_uri)
    print(f"wrote {outcome.rows} rows to {outcome.out}")
    if outcome.samples_f1 is not None:
        print(f"samples-F1 against the known labels: {outcome.samples_f1:.4f}")
    return 0


def _ui(args: argparse.Namespace) -> int:
    from mmsearch.tracking import default_tracking_uri

    uri = os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", args.host,
           "--port", str(args.port)]
    print(" ".join(cmd))
    return subprocess.call(cmd)


def _models(args: argparse.Namespace) -> int:
    from mmsearch.data import AUGMENTATION_SETS
    from mmsearch.models import BACKBONES
    from mmsearch.search import PRUNERS, SAMPLERS
    from mmsearch.text import CAPTIONS_WORD2VEC, GENSIM_DATA
    from mmsearch.optim import LOSSES

    print("backbones: " + ", ".join(BACKBONES.names()))
    for name, members in AUGMENTATION_SETS.items():
        print(f"augmentation {name}: {', '.join(members) or '(nothing)'}")
    print("corpora: " + ", ".join([*GENSIM_DATA, CAPTIONS_WORD2VEC, "file:PATH"]))
    print("losses: " + ", ".join(LOSSES.names()))
    print("samplers: " + ", ".join(SAMPLERS.names()) + "; pruners: " + ", ".join(PRUNERS.names()))
    return 0


COMMANDS = {"data": _data, "train": _train, "sweep": _sweep, "export": _export, "predict": _predict, "ui": _ui,
            "models": _models}
__all__ = ["main", "build_parser"]
