"""Command-line entry point. Each command parses, calls one library function, prints the outcome.

Commands that train nothing (``--help``, ``sweep list``, ``sweep show``, ``models``, ``config``)
never import torch; every handler imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import enum
import json
import logging
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from mmsearch.errors import LockStuck, MmsearchError, first_line

if TYPE_CHECKING:
    from mmsearch.reproduce import Plan
    from mmsearch.stats import LevelStats

class ExitCode(enum.IntEnum):
    """What an mmsearch command exits with (the README's "Exit codes"); not a worker process's
    exit codes (``search.WorkerExit``), which only its coordinator reads."""

    OK = 0
    USAGE = 2  # a user's error: bad input, an unusable store, a full disk; one message, nothing lost
    INCOMPLETE = 3  # the run ended, cells it was asked for are not COMPLETE; the same command resumes
    INTERRUPTED = 130  # 128 + SIGINT




class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2) that point at the command's help."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {self.prog}: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(ExitCode.USAGE)


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=34)


def _cmd(sub: Any, name: str, help_text: str, example: str, func: Callable[[argparse.Namespace], int] | None = None
         ) -> argparse.ArgumentParser:
    # argparse %-formats help strings (not descriptions): a literal "95%" must be "95%%" there.
    parser = sub.add_parser(name, help=help_text.replace("%", "%%"), description=f"{help_text}\n\nexample:\n  {example}",
                            formatter_class=_formatter)
    parser.set_defaults(func=func, example=example)
    return parser


def _positive(convert: Callable[[str], float], what: str, least: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{value}: must be {least}")
        return value

    return parse


positive_int = _positive(int, "a whole number", "1 or more")


def port(text: str) -> int:
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{value}: a TCP port is 1..65535")
    return value
positive_seconds = _positive(float, "a number of seconds", "more than 0 seconds")


# The options several commands share, each declared once: the same flag means the same thing,
# with the same help, wherever it appears.
_DEFAULT_TRACKING = "default: $MLFLOW_TRACKING_URI, else MLflow's own default: ./mlflow.db, artifacts in ./mlruns"


def _tracking_option(p: argparse.ArgumentParser, what: str = "MLflow tracking URI") -> None:
    p.add_argument("--tracking-uri", help=f"{what} ({_DEFAULT_TRACKING})")


def _storage_option(p: argparse.ArgumentParser, writes: bool) -> None:
    """``writes``: the command runs sweeps (any storage kind); else it reads the studies they left."""
    p.add_argument("--storage", help="Optuna storage: a journal file (default ./optuna-journal.log), postgresql://... or "
                                     "redis://..." if writes else "Optuna storage the sweeps ran in (default "
                                                                  "./optuna-journal.log)")


def _liveness_options(p: argparse.ArgumentParser, heartbeat: bool = True) -> None:
    if heartbeat:
        p.add_argument("--heartbeat", type=positive_seconds, default=None, metavar="SECONDS",
                       help="how often a running trial says it is alive (default 10)")
    p.add_argument("--grace", type=positive_seconds, default=None, metavar="SECONDS",
                   help="a running trial silent this long is judged dead, and a study lock or the MLflow SQLite "
                        "store's lock held this long ends the run incomplete (default 600)")


def _data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="dataset folder (default: the generated demo dataset)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. text.optim.lr=0.01 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    from mmsearch.config import STAGE_NAMES

    parser = _Parser(prog="mmsearch", formatter_class=_formatter,
                     description="Hyperparameter sweeps and ablations for image + caption multi-label classifiers.\n\n"
                                 "example:\n  mmsearch sweep run fusion-dropout-count --experiment cpu")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    data = _cmd(sub, "data", "Dataset tools: generate the demo dataset, hold out a test set, inspect a dataset.",
                "mmsearch data inspect ../shared/data/comp5329-captions --corpus glove-wiki-gigaword-50")
    dsub = data.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    synth = _cmd(dsub, "synth", "Write a demo dataset in the COMP5329 layout (deterministic per seed).",
                 "mmsearch data synth demo --n-train 2000 --n-test 500 --image-size 64 --seed 0", _data_synth)
    synth.add_argument("out", type=Path, help="output folder")
    synth.add_argument("--n-train", type=positive_int, default=2000, help="labelled rows in train.csv")
    synth.add_argument("--n-test", type=int, default=500, help="rows in test.csv (answers in test_labels.csv)")
    synth.add_argument("--image-size", type=positive_int, default=64, help="square image size in pixels")
    synth.add_argument("--seed", type=int, default=0, help="seed of the generator")
    synth.add_argument("--from-csv", type=Path, help="render images for the label sets of this train.csv, keeping its captions")
    synth.add_argument("--coco", action="store_true",
                       help="COCO-sized photos instead of --image-size squares: 640 px on the long side, ~160 KB JPEG, "
                            "rendered by every core (the paper's 40,000 images in minutes: "
                            "mmsearch data synth big --n-train 30000 --n-test 10000 --coco)")
    synth.add_argument("--jobs", type=positive_int, help="processes rendering --coco images (default: every core)")
    hold = _cmd(dsub, "holdout", "Hold out labelled rows as test.csv + test_labels.csv to score a final model on.",
                "mmsearch data holdout ../shared/data/comp5329-captions real-80-20 --fraction 0.2 --seed 2026", _data_holdout)
    hold.add_argument("source", type=Path, help="dataset folder with a labelled train.csv")
    hold.add_argument("out", type=Path, help="output dataset folder (images are linked, not copied)")
    hold.add_argument("--fraction", type=float, default=0.2, help="share of rows held out (default 0.2)")
    hold.add_argument("--seed", type=int, default=2026, help="seed of the held-out split")
    inspect = _cmd(dsub, "inspect", "Validate a dataset (decoding every image) and print rows, labels, caption "
                   "lengths, OOV counts.", "mmsearch data inspect data/ --corpus glove-wiki-gigaword-50", _data_inspect)
    inspect.add_argument("path", type=Path, nargs="?", help="dataset folder (default: the demo dataset)")
    inspect.add_argument("--corpus", action="append", default=[], help="word-vector corpus for the OOV report (repeatable)")

    train = _cmd(sub, "train", "Train one configuration and record it as one MLflow run.",
                 "mmsearch train cpu --stage all --set fusion.optim.lr=0.01", _train)
    train.add_argument("experiment", help="experiment name in experiments/ (paper, cpu) or a YAML path")
    _data_options(train)
    train.add_argument("--stage", choices=[*STAGE_NAMES, "all"], default="all",
                       help="the stage to train; its upstream stages come from the cache or train first "
                            "(default: all, one after the other)")
    _tracking_option(train)

    config = _cmd(sub, "config", "Print an experiment's resolved settings, each with its documentation.",
                  "mmsearch config cpu --set text.seq_len=12", _config)
    config.add_argument("experiment", help="experiment name in experiments/ (paper, cpu) or a YAML path")
    _data_options(config)

    sweep = _cmd(sub, "sweep", "Named sweeps: list, show, run, status.", "mmsearch sweep list")
    ssub = sweep.add_subparsers(dest="sweep_command", required=True, parser_class=_Parser)
    _cmd(ssub, "list", "List the named sweeps with their mode, stage, size and paper figure.", "mmsearch sweep list",
         _sweep_list)
    show = _cmd(ssub, "show", "Show a sweep file, validated against its base experiment, and what the experiment "
                "changes from the paper's.", "mmsearch sweep show fusion-dropout-count --experiment cpu", _sweep_show)
    show.add_argument("name", help="sweep name in sweeps/ or a YAML path")
    show.add_argument("--experiment", help="base experiment (default: the sweep's own)")
    for name, text, example, func in (
        ("run", "Run (or resume) a sweep as an Optuna study logged to MLflow.",
         "mmsearch sweep run fusion-dropout-count --experiment cpu --workers 2", _sweep_run),
        ("status", "Per-level results with 95% CIs, trials by state and errors; repairs what dead processes left.",
         "mmsearch sweep status fusion-dropout-count", _sweep_status),
    ):
        p = _cmd(ssub, name, text, example, func)
        p.add_argument("name", help="sweep name in sweeps/ or a YAML path")
        p.add_argument("--experiment", help="base experiment (default: the sweep's own)")
        _data_options(p)
        _storage_option(p, writes=True)
        p.add_argument("--study", help="study name (default: derived from sweep, experiment, config and data)")
        _tracking_option(p)
        _liveness_options(p, heartbeat=name == "run")
        if name == "run":
            p.add_argument("--trials", type=positive_int, help="ablation: run at most N missing cells now; search: total trials")
            p.add_argument("--workers", type=positive_int, default=None,
                           help="worker processes sharing the study (default: one per GPU given by --gpus, else 1)")
            p.add_argument("--gpus", metavar="LIST",
                           help="GPUs for the workers, e.g. 0,1,2,3 (CUDA_VISIBLE_DEVICES entries; more workers than "
                                "GPUs share them round-robin; 'none': no GPU). Default: every visible GPU when "
                                "run.device is auto or cuda")
            _sequential_options(p)
        else:
            p.add_argument("--json", action="store_true", help="print the summary as JSON for machines")

    export = _cmd(sub, "export", "Train the best configuration of finished sweeps and register it as an MLflow model.",
                  "mmsearch export text-seq-len text-lr --name captions --experiment cpu --data data/ --full", _export)
    export.add_argument("sweeps", nargs="+", help="finished sweeps, applied in this order")
    export.add_argument("--name", required=True, help="registered model name (a new version gets alias 'champion')")
    export.add_argument("--experiment", help="base experiment (default: what the first sweep's study ran with)")
    _data_options(export)
    export.add_argument("--full", action="store_true", help="retrain on train+val for exactly the chosen epochs")
    export.add_argument("--caption-only", action="store_true", help="export the text stage only")
    export.add_argument("--ensemble", type=positive_int, default=1, metavar="N",
                        help="train N copies with seeds run.seed..run.seed+N-1 and average their probabilities (default 1)")
    _storage_option(export, writes=False)
    export.add_argument("--force", action="store_true",
                        help="export even when the best configuration is no better than predicting the most frequent "
                             "label for every row")
    export.add_argument("--study", action="append", default=[], metavar="NAME",
                        help="the study of each sweep, in order (repeatable; default: found as `sweep status` finds it)")
    _tracking_option(export)
    export.add_argument("--out-dir", type=Path, default=Path("exports"), help="where config.yaml and summary.md go")

    predict = _cmd(sub, "predict", "Predict a Kaggle-format CSV (ImageID,Labels) with a registered or logged model.",
                   "mmsearch predict models:/captions@champion --data data/ --csv test.csv --out predictions.csv", _predict)
    predict.add_argument("model_uri", help="any MLflow model URI: models:/NAME@champion, runs:/RUN_ID/model, ...")
    predict.add_argument("--data", required=True, type=Path, help="dataset folder (images under data/)")
    predict.add_argument("--csv", default="test.csv", help="CSV inside --data with ImageID,Caption (default test.csv)")
    predict.add_argument("--out", required=True, type=Path, help="output CSV")
    _tracking_option(predict, "MLflow tracking URI for models:/ URIs")

    report = _cmd(sub, "report", "Reproduce the paper: each finding beside what the sweeps measured, with a verdict, "
                  "in one HTML page (also logged to MLflow).", "mmsearch report --experiment cpu --out reports/reproduction.html",
                  _report)
    report.add_argument("--experiment", help="the profile the studies ran with (default: each sweep's only study)")
    _data_options(report)
    _storage_option(report, writes=False)
    _tracking_option(report)
    report.add_argument("--out", type=Path, default=Path("reports/reproduction.html"),
                        help="where the page goes (default reports/reproduction.html; the command prints where)")
    report.add_argument("--markdown", action="store_true", help="also print the verdict table as Markdown")

    repro = _cmd(sub, "reproduce", "The whole paper in one command: every sweep of findings/paper.yaml that can run on "
                 "this data, planned and costed first, on one schedule; then the paper's final model and the measured "
                 "one, compared on the test split; then the report. Rerun to resume; run it on several machines with "
                 "one --storage and --tracking-uri to share the cells.",
                 "mmsearch reproduce --experiment cpu --workers 2 --plan", _reproduce)
    repro.add_argument("--experiment", help="base experiment of every sweep (default: each sweep's own, the paper)")
    _data_options(repro)
    _storage_option(repro, writes=True)
    _tracking_option(repro)
    repro.add_argument("--workers", type=positive_int, default=None,
                       help="worker processes shared by every sweep (default: one per GPU given by --gpus, else 1)")
    repro.add_argument("--gpus", metavar="LIST", help="GPUs for the workers, as for `sweep run` (e.g. 0,1; 'none': no GPU)")
    repro.add_argument("--only", action="append", default=[], metavar="GLOB",
                       help="only the sweeps whose name matches (repeatable), e.g. 'text-*'")
    repro.add_argument("--skip", action="append", default=[], metavar="GLOB", help="leave out the sweeps that match (repeatable)")
    repro.add_argument("--plan", action="store_true", help="print the plan with its time estimates and exit (trains "
                                                           "nothing beyond the calibration, which is cached)")
    repro.add_argument("--repeats", type=positive_int, default=3, metavar="N",
                       help="members of each final model, seeds run.seed..run.seed+N-1, for the 95%% intervals (default 3)")
    repro.add_argument("--export", metavar="NAME", help="also register the better final model as NAME@champion")
    repro.add_argument("--findings", type=Path, help="findings file (default: the bundled findings/paper.yaml)")
    repro.add_argument("--out", type=Path, default=Path("reports/reproduction.html"),
                       help="where the report goes (default reports/reproduction.html)")
    _sequential_options(repro)
    _liveness_options(repro)

    ui = _cmd(sub, "ui", "Serve the MLflow UI on the default store (./mlflow.db, as `mlflow ui` would); stopping it stops the server.",
              "mmsearch ui --port 5000", _ui)
    ui.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1: this machine only)")
    ui.add_argument("--port", type=port, default=5000, help="port, 1..65535 (default 5000)")
    _tracking_option(ui, "MLflow store to serve")
    cache = _cmd(sub, "cache", "Show what the cache holds (decoded images, features, stage weights, ...) and prune it.",
                 "mmsearch cache prune --kind stages --unused-days 14", _cache)
    csub = cache.add_subparsers(dest="cache_command", parser_class=_Parser)
    _cmd(csub, "show", "Entries and size of each kind of cached value (the default).", "mmsearch cache show", _cache)
    prune = _cmd(csub, "prune", "Remove cached values not used for a number of days (they are rebuilt when needed).",
                 "mmsearch cache prune --kind stages --kind features --unused-days 14 --dry-run", _cache_prune)
    prune.add_argument("--unused-days", type=float, required=True, metavar="DAYS",
                       help="remove entries not used for this many days (0: every entry)")
    prune.add_argument("--kind", action="append", default=[], help="only this kind (repeatable; see `mmsearch cache`)")
    prune.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    _cmd(sub, "models", "List registered backbones, augmentation sets, corpora, poolings, losses, samplers, pruners "
         "and storages.", "mmsearch models", _models)
    return parser


def _place(args: argparse.Namespace) -> dict[str, Any]:
    """Which studies, where (``search.StudyPlace``): read from the options every such command shares."""
    from mmsearch.config import request_overrides

    return {"experiment": args.experiment, "data": args.data, "overrides": request_overrides(args.overrides),
            "storage": _storage(args.storage), "tracking_uri": args.tracking_uri}


def _storage(url: str | None) -> str | None:
    """``--storage`` as given; a password in it is used, with a word on where it belongs."""
    if url and "://" in url:
        import urllib.parse

        if urllib.parse.urlsplit(url).password is not None:
            print("warning: the password in --storage is visible to every user of this machine (`ps` shows "
                  "arguments): put the URL in MMSEARCH_STORAGE, or leave the password out and set PGPASSWORD or "
                  "~/.pgpass (PostgreSQL) instead", file=sys.stderr)
    return url


def _interruptible() -> None:
    """As ``sweep run``: Ctrl-C and SIGTERM end the command once, cleanly (its MLflow runs KILLED,
    exit 130); SIGUSR1 prints every thread's stack and goes on (for a command that seems stuck)."""
    import faulthandler
    import signal

    from mmsearch._interrupts import interrupt_once

    interrupt_once()
    try:
        faulthandler.register(signal.SIGUSR1)
    except (AttributeError, ValueError, OSError):  # stderr without a file descriptor (embedded, captured)
        pass


def quiet_libraries() -> None:
    """Libraries speak at WARNING; MLflow's SQL store logs a traceback at ERROR for every failed
    write, which mmsearch reports itself in one line (a full disk, a locked store)."""
    for noisy in ("gensim", "alembic", "mlflow", "urllib3", "smart_open", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)


def main(argv: list[str] | None = None) -> int:
    from mmsearch._interrupts import note_interrupts, stopping

    note_interrupts()
    try:
        return _run(argv)
    except KeyboardInterrupt:  # before a command could answer it: during the imports, or parsing
        print("interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except Exception:
        if not stopping():
            raise
        print("interrupted", file=sys.stderr)  # a Ctrl-C that a library turned into its own error
        return ExitCode.INTERRUPTED


def _run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose + 1, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    quiet_libraries()
    if not args.verbose:  # MLflow's "Downloading artifacts" bars in export, predict and serving
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from mmsearch.search import SweepInterrupted

    try:
        from tqdm.contrib.logging import logging_redirect_tqdm

        with logging_redirect_tqdm():  # log lines above the progress bars, not through them
            code = int(args.func(args) or 0)
        sys.stdout.flush()  # here, where a closed pipe is caught below, not at interpreter exit
        return code
    except SweepInterrupted as exc:
        print(str(exc), file=sys.stderr)
        return ExitCode.INTERRUPTED
    except BrokenPipeError:  # `mmsearch sweep show NAME | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.OK
    except LockStuck as exc:  # the run could not go on, and lost nothing: incomplete, not a user's error
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.INCOMPLETE
    except MmsearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except Exception as exc:
        if "torch" not in sys.modules:
            raise
        from mmsearch.runtime import is_out_of_memory, out_of_memory_advice

        if not is_out_of_memory(exc):
            raise
        advice = out_of_memory_advice("lower the batch size of the stage it was training (--set STAGE.optim.batch_size=...)")
        print(f"error: out of memory ({first_line(exc)}); {advice}", file=sys.stderr)
        return ExitCode.USAGE


# -- data ------------------------------------------------------------------------------------------
def _data_synth(args: argparse.Namespace) -> int:
    from mmsearch.data import Dataset, SynthSpec, synthesize

    out = synthesize(args.out, SynthSpec(n_train=args.n_train, n_test=args.n_test, image_size=args.image_size,
                                         seed=args.seed, coco=args.coco, jobs=args.jobs), from_csv=args.from_csv)
    ds = Dataset.open(out)
    sizes = "COCO-sized (640 px on the long side)" if args.coco else f"{args.image_size}px"
    print(f"wrote {out}: {ds.n_train} train rows, {ds.n_test} test rows, images {sizes}")
    return 0


def _data_holdout(args: argparse.Namespace) -> int:
    from mmsearch.data import holdout

    kept, held = holdout(args.source, args.out, args.fraction, args.seed)
    print(f"wrote {args.out}: {kept} rows in train.csv, {held} held out in test.csv (answers in test_labels.csv)")
    return 0


def _data_inspect(args: argparse.Namespace) -> int:
    from mmsearch.data import LABEL_NAMES, LABELS
    from mmsearch.pipeline import inspect_dataset

    r = inspect_dataset(args.path, args.corpus)
    print(f"dataset {r.root}: {r.n_train} train rows, {r.n_test} test rows, fingerprint {r.fingerprint}")
    print(f"labels per row {r.labels_per_row:.3f}; rows per label:")
    for label, count in zip(LABELS, r.rows_per_label):
        print(f"  {label:>2} {LABEL_NAMES[label]:<14} {count:>6}")
    box = r.lengths["box"]
    print(f"caption length (tokens after preprocessing): mean {box['mean']:.2f}, median {box['median']:.0f}, "
          f"q1 {box['q1']:.0f}, q3 {box['q3']:.0f}, max {box['max']:.0f}")
    print("captions with fewer than k words: " + ", ".join(f"{k}: {n}" for k, n in r.lengths["fewer_than"].items()))
    for o in r.oov:
        print(f"OOV {o.corpus}: unavailable ({o.error})" if o.error else
              f"OOV {o.corpus}: {o.oov_words} of {o.vocab_size} words, {o.oov_tokens} of {o.total_tokens} tokens; "
              f"e.g. {', '.join(o.examples[:5])}")
    print(f"images: {r.images_found} found, {r.images_missing} missing, every one decoded" if r.has_images
          else "images: none (caption-only dataset)")
    return 0


# -- training and configs -----------------------------------------------------------------------------
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


def _config(args: argparse.Namespace) -> int:
    from mmsearch.config import describe, load_experiment, request_overrides

    cfg = load_experiment(args.experiment, request_overrides(args.overrides, args.data))
    rows = describe(cfg)
    width = max(len(k) + len(repr(v)) for k, v, _ in rows) + 3
    for key, value, doc in rows:
        print(f"{f'{key}: {value!r}':<{width}} # {doc}")
    return 0


# -- sweeps ---------------------------------------------------------------------------------------
def _sweep_list(args: argparse.Namespace) -> int:
    from mmsearch.search import available_sweeps, load_sweep

    print(f"{'name':<20} {'mode':<9} {'stage':<7} {'size':>4}  paper")
    for path in available_sweeps():
        spec, _ = load_sweep(str(path))
        print(f"{spec.name:<20} {spec.mode:<9} {spec.stage:<7} {spec.size:>4}  {spec.paper}")
    return 0


def _sweep_show(args: argparse.Namespace) -> int:
    from mmsearch.config import REFERENCE, deviations
    from mmsearch.search import load_sweep, power_statement

    spec, base = load_sweep(args.name, args.experiment)
    print(spec.path.read_text())
    print(f"# base experiment: {spec.experiment}; {spec.size} trials; metric {spec.metric} ({spec.direction}); "
          f"pruner {spec.pruner}; base level: {spec.base}")
    if spec.mode == "ablation":
        print(f"# verdicts: {spec.design.with_looks(spec.looks).describe()}")
        print(f"# power: {power_statement(spec).text}")
    for lv in spec.level_list:
        print(f"#   level {lv.label}: {lv.set}")
    if spec.experiment != REFERENCE:
        changes = deviations(spec.experiment)
        print(f"# experiment {spec.experiment} deviates from {REFERENCE} in {len(changes)} settings:")
        for d in changes:
            print(f"#   {d.key}: {d.paper!r} -> {d.value!r}" + (f"  ({d.reason})" if d.reason else ""))
    return 0


def _sequential_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--until-decided", action="store_true",
                   help="after each round, add a repeat (a new seed) to the levels whose comparison with the base is "
                        "still inconclusive, until each is decided or --max-repeats is reached (the error rate holds "
                        "over all the rounds); a sweep file's 'repeats: auto' asks the same")
    p.add_argument("--max-repeats", type=positive_int, default=None, metavar="N",
                   help="with --until-decided: at most N repeats per level (default: the sweep file's max_repeats, 10)")


def _sweep_request(args: argparse.Namespace) -> Any:
    from mmsearch.search import SweepRequest

    options = {k: v for k, v in (("workers", getattr(args, "workers", None)), ("trials", getattr(args, "trials", None)),
                                 ("gpus", getattr(args, "gpus", None)), ("max_repeats", getattr(args, "max_repeats", None)),
                                 ("until_decided", getattr(args, "until_decided", None) or None),
                                 ("grace_s", args.grace), ("heartbeat_s", getattr(args, "heartbeat", None)))
               if v is not None}
    return SweepRequest(sweep=args.name, **_place(args), study_name=args.study, **options)


def _sweep_run(args: argparse.Namespace) -> int:
    from mmsearch.search import run_sweep, versus_base

    s = run_sweep(_sweep_request(args))
    print(f"study {s.study_name}: {s.progress}; this run ran {s.ran} trial(s) ({_states(s.mine)}) in {s.seconds:.0f}s")
    if s.spec.mode == "ablation" and s.levels:
        for line in _level_table(s):
            print(line)
    if s.data and args.data is None:
        print(f"data: the generated demo dataset in {s.data} (pass it as --data to `mmsearch predict`)")
    if s.best_level is not None:
        bar = next(b for b in s.levels if b.level == s.best_level)
        print(f"best level {s.spec.factor}={s.best_level}: mean {s.best_value:.4f} {_ci(bar)}, "
              f"{versus_base(bar, s.spec.base)}")
    elif s.best_value is not None:
        print(f"best value {s.best_value:.4f} with {s.best_params}")
    from mmsearch.tracking import resolve_tracking_uri, ui_link

    uri = resolve_tracking_uri(args.tracking_uri)
    local = "" if uri.startswith("http") else " (after `mmsearch ui`)"
    print(f"MLflow runs of sweep/{s.spec.name}, its metric and levels in columns: {ui_link(uri, s.experiment_id)}{local}")
    print(f"  its parent run {s.parent_run_id} (charts/report.html): {ui_link(uri, s.experiment_id, s.parent_run_id)}")
    return _incomplete(s)


def _incomplete(s: Any) -> int:
    """ExitCode.INCOMPLETE, with each missing cell and why, when a cell the run was asked for is not
    COMPLETE; 0 otherwise. A script that chains sweeps must not go on from a partial one."""
    if not s.missing:
        return 0
    print(f"incomplete: {len(s.missing)} cell(s) not COMPLETE (exit {ExitCode.INCOMPLETE:d}); rerun the same command to "
          "retry them:", file=sys.stderr)
    for cell, why in s.missing[:20]:
        print(f"  {cell}: {why}", file=sys.stderr)
    if len(s.missing) > 20:
        print(f"  ... and {len(s.missing) - 20} more (`mmsearch sweep status {s.spec.name}`)", file=sys.stderr)
    return ExitCode.INCOMPLETE


def _ci(bar: LevelStats) -> str:
    if math.isnan(bar.ci_low):
        return f"(n={bar.n}, no interval)"
    return f"(95% CI {bar.ci_low:.4f}..{bar.ci_high:.4f}, n={bar.n})"


def _states(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {k.lower()}" for k, n in sorted(counts.items())) or "none"


def _sweep_status(args: argparse.Namespace) -> int:
    from mmsearch.search import sweep_status

    request = _sweep_request(args)
    summary, info = sweep_status(request, f"sweep status {args.name}")
    if info["note"]:
        print(info["note"], file=sys.stderr)
    if args.json:
        print(json.dumps(_finite(_status_json(summary, info)), indent=2, default=str))
        return 0
    for line in _status_table(summary, info):
        print(line)
    return 0


def _finite(value: Any) -> Any:
    """JSON has no NaN: a value that has none (a one-repeat level's interval) becomes null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _status_json(s: Any, info: dict[str, Any]) -> dict[str, Any]:
    return {"study": s.study_name, "sweep": s.spec.name, "done": s.done, "total": s.total, "counts": s.counts,
            "levels": [b.as_dict() for b in s.levels], "method": s.design.describe(), "best_level": s.best_level, "best_value": s.best_value,
            "best_trial": {"number": s.best_trial.number, "value": s.best_trial.value, "params": s.best_trial.params}
            if s.best_trial else None, "errors": s.errors, **info, "parent_run_id": s.parent_run_id}


def _status_table(s: Any, info: dict[str, Any]) -> list[str]:
    spec = s.spec
    lines = [f"study {s.study_name} in {info['storage']}: {s.progress} (trials: {_states(s.counts)})",
             f"MLflow parent run {s.parent_run_id or '-'}: {info['parent_status'] or '-'}; coordinators alive: "
             f"{info['coordinators_alive']}" + (f"; repaired {info['repaired']} dead trial(s)" if info["repaired"] else "")
             + (f"; ended {info['stray_runs']} MLflow run(s) a dead worker left RUNNING" if info["stray_runs"] else "")
             + ("; closed a stale parent run" if info["closed_parent"] else "")]
    if spec.mode == "ablation":
        lines += _level_table(s)
    elif s.best_trial is not None:
        lines.append(f"best trial {s.best_trial.number}: {spec.metric} {s.best_value:.4f} with {s.best_trial.params}")
    for number, error in sorted(s.errors.items()):
        lines.append(f"  trial {number} FAIL: {error}")
    return lines


def _level_table(s: Any) -> list[str]:
    """Every level with its mean, 95% interval and verdict against the base level (``sweep run``
    ends with it, ``sweep status`` shows it)."""
    from mmsearch.search import level_cells

    spec = s.spec
    factor = spec.factor or "level"
    width = max([len(factor)] + [len(str(b.level)) for b in s.levels]) + 1
    vs_width = max([44] + [len(level_cells(b)[2]) for b in s.levels])
    lines = [f"  {factor:<{width}} {'n':>2}  {'mean ± std':<17} {'95% CI':<17} "
             f"{'vs base (corrected CI of the difference)':<{vs_width}} failed"]
    for b in s.levels:
        mark = "★" if b.is_best else " "
        mean, ci, vs = level_cells(b)
        flag = "  ≤ baseline" if b.degenerate else ""
        lines.append(f"{mark} {str(b.level):<{width}} {b.n:>2}  {mean:<17} {ci:<17} {vs:<{vs_width}} {b.failed}{flag}")
    lines.append(f"  ★ best mean {spec.metric} ({spec.direction}). Verdicts: {s.design.describe()}: better/worse when "
                 "the interval excludes 0, equivalent when it lies inside the margin, inconclusive otherwise "
                 "(~N repeats: per level, likely to decide it)")
    flat = [b for b in s.levels if b.degenerate]
    if flat:
        lines.append(f"  ≤ baseline: {', '.join(str(b.level) for b in flat)} score(s) no better than predicting the "
                     f"most frequent label for every row (samples-F1 {max(b.baseline for b in flat):.4f}): "
                     "learned nothing beyond the label frequencies")
    return lines


# -- final model --------------------------------------------------------------------------------------
def _export(args: argparse.Namespace) -> int:
    from mmsearch.export import ExportRequest, export_model

    _interruptible()
    request = ExportRequest(sweeps=args.sweeps, name=args.name, **_place(args), full=args.full,
                            caption_only=args.caption_only, ensemble=args.ensemble, out_dir=args.out_dir,
                            studies=args.study, force=args.force)
    result = export_model(request)
    for d in result.decisions:
        print(f"{d.key} = {d.value!r}  <- {d.describe()}, run {d.run_id}")
    for key, value in result.kept_overrides.items():
        print(f"{key} = {value!r}  <- --set (base override)")
    for key, value in sorted(result.metrics.items()):
        if key.endswith("final_val_f1") or key.endswith("final_val_f1_tuned"):
            print(f"{key}: {value:.4f}")
    if result.version is None:
        print(f"queued: the tracking server is away; {result.name} is registered as {result.model_uri} (run "
              f"{result.run_id}) when it is back, by the next mmsearch command that uses it; summary in {result.folder}")
        return 0
    print(f"registered {result.name} version {result.version} as {result.model_uri} (run {result.run_id}); "
          f"summary in {result.folder}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from mmsearch.export import predict_csv

    _interruptible()
    outcome = predict_csv(args.model_uri, args.data, args.csv, args.out, args.tracking_uri)
    print(f"wrote {outcome.rows} rows to {outcome.out}")
    if outcome.samples_f1 is not None:
        print(f"samples-F1 against the known labels: {outcome.samples_f1:.4f}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from mmsearch.report import ReportRequest, reproduce, verdict_table

    report = reproduce(ReportRequest(**_place(args), out=args.out))
    for s in report.sections:
        f = s.finding
        print(f"{f.section:<6} {f.figure:<18} {f.sweep:<21} {s.verdict.outcome:<20} {s.verdict.why}")
    print(", ".join(f"{n} {k}" for k, n in sorted(report.outcomes.items())) + f"; wrote {report.path.resolve()} "
          f"(MLflow run {report.run_id})")
    if args.markdown:
        print("\n".join(verdict_table(report.sections)))
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from mmsearch.reproduce import ReproduceRequest, make_plan, reproduce_paper

    _interruptible()
    options = {k: v for k, v in (("heartbeat_s", args.heartbeat), ("grace_s", args.grace)) if v is not None}
    request = ReproduceRequest(**_place(args), workers=args.workers,
                               gpus=args.gpus, only=args.only, skip=args.skip, repeats=args.repeats, export=args.export,
                               findings=args.findings, out=args.out, until_decided=args.until_decided,
                               max_repeats=args.max_repeats, **options)

    def show(plan: Plan) -> None:
        for line in plan.lines():
            print(line, flush=True)

    if args.plan:
        plan, _ = make_plan(request)
        show(plan)
        return 0
    outcome = reproduce_paper(request, show)
    for name, s in sorted(outcome.summaries.items(), key=lambda item: [p.name for p in outcome.plan.sweeps].index(item[0])):
        best = f"; best {s.spec.factor}={s.best_level} ({s.spec.metric} {s.best_value:.4f})" if s.best_level else ""
        print(f"{name}: {s.progress}{best}")
    for name, why in outcome.failed.items():
        print(f"{name}: failed: {why.splitlines()[0]}")
    if outcome.final is not None:
        from mmsearch.report import final_table

        print("\n".join(final_table(outcome.final)))
    if outcome.report_path is not None:
        print(f"report: {outcome.report_path} (MLflow run {outcome.report_run_id})")
    if outcome.note:
        print(outcome.note)
    t, plan = outcome.timings, outcome.plan
    after = t.get("sweeps", 0.0) + t.get("final", 0.0) + t.get("report", 0.0)
    print(f"took {outcome.seconds:.0f}s: planning {t.get('plan', 0):.0f}s (calibration "
          f"{plan.calibration.seconds if plan.calibration else 0:.0f}s), sweeps {t.get('sweeps', 0):.0f}s, final models "
          f"{t.get('final', 0):.0f}s, report {t.get('report', 0):.0f}s; after the plan {after:.0f}s, which it estimated "
          f"at {plan.total_s:.0f}s ({plan.schedule_s:.0f}s of sweeps, {plan.final_s:.0f}s of final models)")
    if outcome.missing:
        print(f"incomplete: {len(outcome.missing)} cell(s) not COMPLETE (exit {ExitCode.INCOMPLETE:d}); the final models and "
              "the report wait for every cell; rerun the same command to retry them:", file=sys.stderr)
        for sweep, cell, why in outcome.missing[:20]:
            print(f"  {sweep} {cell}: {why}", file=sys.stderr)
        if len(outcome.missing) > 20:
            print(f"  ... and {len(outcome.missing) - 20} more", file=sys.stderr)
        return ExitCode.INCOMPLETE
    return 0


# -- tools ----------------------------------------------------------------------------------------------
def _ui(args: argparse.Namespace) -> int:
    from mmsearch.tracking import resolve_tracking_uri, serve_ui

    return serve_ui(resolve_tracking_uri(args.tracking_uri), args.host, args.port)


def _models(args: argparse.Namespace) -> int:
    from mmsearch.data import AUGMENTATION_SETS
    from mmsearch.models import BACKBONES, POOLINGS, backbone_asset
    from mmsearch.optim import LOSSES, SCHEDULERS
    from mmsearch.search import PRUNERS, SAMPLERS, STORAGE_KINDS
    from mmsearch.text import CAPTIONS_WORD2VEC, GENSIM_DATA, TOKENIZERS, corpus_asset

    def offline(asset: Any) -> str:
        return "" if asset is None else " (cached)" if asset.cached else " (not cached)" if not asset.usable else ""

    print("backbones (ImageNet weights in TORCH_HOME): " + ", ".join(f"{n}{offline(backbone_asset(n))}"
                                                                       for n in BACKBONES.names()))
    for name, members in AUGMENTATION_SETS.items():
        print(f"augmentation {name}: {', '.join(members) or '(nothing)'}")
    print("corpora (word vectors in GENSIM_DATA_DIR): " + ", ".join(
        [*(f"{n}{offline(corpus_asset(n))}" for n in GENSIM_DATA), CAPTIONS_WORD2VEC, "file:PATH"]))
    print("(not cached: this machine is offline, so training that needs it fails; cached: usable offline)")
    print("tokenizers: " + ", ".join(TOKENIZERS.names()) + "; poolings: " + ", ".join(POOLINGS.names()))
    print("losses: " + ", ".join(LOSSES.names()) + "; schedulers: " + ", ".join(SCHEDULERS.names()))
    print("samplers: " + ", ".join(SAMPLERS.names()) + "; pruners: " + ", ".join(PRUNERS.names()))
    print("storages: " + ", ".join(n for n in STORAGE_KINDS.names() if n != "sqlite") + " (sqlite is refused)")
    return 0


__all__ = ["main", "build_parser"]


# -- cache -------------------------------------------------------------------------------------------
def _size(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return ""


def _cache(args: argparse.Namespace) -> int:
    from mmsearch._cache import cache_usage
    from mmsearch._paths import cache_root

    usage = cache_usage()
    print(f"cache {cache_root()} (MMSEARCH_CACHE_DIR): {_size(sum(u.bytes for u in usage))} in all")
    for u in usage:
        print(f"  {u.kind:<15} {u.entries:>6} entries  {_size(u.bytes):>10}")
    print("prune with `mmsearch cache prune --unused-days DAYS [--kind KIND]`; what is removed is rebuilt when needed")
    return 0


def _cache_prune(args: argparse.Namespace) -> int:
    from mmsearch._cache import cache_usage, prune

    known = {u.kind for u in cache_usage()}
    unknown = [k for k in args.kind if k not in known]
    if unknown:
        raise MmsearchError(f"unknown cache kind(s) {', '.join(unknown)}; the cache holds: {', '.join(sorted(known))}")
    if args.unused_days < 0:
        raise MmsearchError(f"--unused-days {args.unused_days}: must be 0 or more")
    entries, freed = prune(args.kind or None, args.unused_days, args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    print(f"{verb} {entries} entries not used for {args.unused_days:g} days, {_size(freed)}")
    return 0
