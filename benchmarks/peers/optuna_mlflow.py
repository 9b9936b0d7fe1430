"""B8's plain peer: the caption search as a competent user writes it with Optuna and MLflow alone.

Two processes share a journal-file study (TPE, seeded per process as mmsearch seeds its workers;
median pruning after 3 trials and 2 epochs), each runs half the trials with one torch thread,
and every trial is an MLflow child run of one parent run with its parameters and per-epoch
metrics. Prints one JSON line: trials, epochs run, best validation F1, first trial's start.

    python -m benchmarks.peers.optuna_mlflow --data DIR --trials 12 --epochs 6 --workers 2 --out DIR
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time

from benchmarks.peers._task import arguments, load_task, suggest, train


def _worker(index: int, args: argparse.Namespace, parent_id: str, trials: int) -> None:
    import mlflow
    import optuna
    import torch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    task = load_task(args.data)
    torch.set_num_threads(1)  # two processes on two cores: one thread each (after loading, which sets its own)
    client = mlflow.MlflowClient(args.tracking_uri)
    experiment_id = client.get_run(parent_id).info.experiment_id
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(args.out / "journal.log")))
    study = optuna.load_study(study_name="peer", storage=storage,
                              sampler=optuna.samplers.TPESampler(seed=args.seed + index, multivariate=True,
                                                                 constant_liar=True),
                              pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2))

    def objective(trial: optuna.Trial) -> float:
        config = suggest(trial)
        run = client.create_run(experiment_id, run_name=f"trial-{trial.number}",
                                tags={"mlflow.parentRunId": parent_id})
        run_id = run.info.run_id
        client.log_batch(run_id, params=[mlflow.entities.Param(k, str(v)) for k, v in config.items()])

        def report(epoch: int, f1: float) -> None:
            client.log_metric(run_id, "val_f1", f1, step=epoch)
            trial.report(f1, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()

        try:
            best = train(task, config, args.epochs, args.seed + trial.number, report)
        except optuna.TrialPruned:
            client.set_terminated(run_id, "KILLED")
            raise
        except BaseException:
            client.set_terminated(run_id, "FAILED")
            raise
        client.log_metric(run_id, "best_val_f1", best)
        client.set_terminated(run_id, "FINISHED")
        return best

    study.optimize(objective, n_trials=trials)


def main() -> None:
    args = arguments(__doc__ or "")
    import mlflow
    import optuna

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(args.out / "journal.log")))
    optuna.create_study(study_name="peer", storage=storage, direction="maximize")
    client = mlflow.MlflowClient(args.tracking_uri)
    experiment = client.get_experiment_by_name("peer-optuna")
    experiment_id = experiment.experiment_id if experiment else client.create_experiment("peer-optuna")
    parent = client.create_run(experiment_id, run_name="text-search").info.run_id
    share = [args.trials // args.workers + (i < args.trials % args.workers) for i in range(args.workers)]
    procs = [mp.get_context("spawn").Process(target=_worker, args=(i, args, parent, n)) for i, n in enumerate(share)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    client.set_terminated(parent, "FINISHED")
    study = optuna.load_study(study_name="peer", storage=storage)
    trials = study.get_trials()
    complete = [t.value for t in trials if t.state.name == "COMPLETE"]
    print(json.dumps({"trials": len(trials), "epochs": sum(len(t.intermediate_values) for t in trials),
                      "best": max(complete) if complete else None,
                      "pruned": sum(t.state.name == "PRUNED" for t in trials),
                      "first_trial": min(t.datetime_start.timestamp() for t in trials), "ended": time.time(),
                      "logged": "parent run + one child run per trial: params, val_f1 per epoch"}))


if __name__ == "__main__":
    main()
