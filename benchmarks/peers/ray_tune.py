"""B8's Ray Tune peer: the caption search with Ray Tune, run in its own environment (Ray's pins
clash with mlflow's in the project's; see BENCHMARKS.md).

OptunaSearch (TPE, the same seed and space), Ray's median stopping rule (after 3 trials and 2
epochs, as the median pruner), 2 concurrent trials of one CPU each, and Ray's MLflow callback
(one run per trial, per-epoch metrics). The data goes to the object store once; each trial trains
a copy of the embedding matrix. Prints one JSON line like the other peer.

    python -m benchmarks.peers.ray_tune --data DIR --trials 12 --epochs 6 --workers 2 --out DIR
"""

from __future__ import annotations

import json
import time
from typing import Any

from benchmarks.peers._task import SEARCH_SPACE, Task, arguments, load_task, train


def _trainable(config: dict[str, Any], task: Task, epochs: int, seed: int) -> None:
    import torch
    from ray import tune

    torch.set_num_threads(1)
    train(task, config, epochs, seed, lambda epoch, f1: tune.report({"val_f1": f1, "epoch": epoch}))


def main() -> None:
    args = arguments(__doc__ or "")
    import optuna
    import ray
    from ray import tune
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.tune.schedulers import MedianStoppingRule
    from ray.tune.search.optuna import OptunaSearch

    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    space = {}
    for name, (kind, *spec) in SEARCH_SPACE.items():
        space[name] = (optuna.distributions.FloatDistribution(spec[0], spec[1], log=spec[2]) if kind == "float" else
                       optuna.distributions.IntDistribution(spec[0], spec[1], step=spec[2]) if kind == "int" else
                       optuna.distributions.CategoricalDistribution(spec[0]))
    search = OptunaSearch(space, metric="val_f1", mode="max",
                          sampler=optuna.samplers.TPESampler(seed=args.seed, multivariate=True, constant_liar=True))
    scheduler = MedianStoppingRule(time_attr="training_iteration", metric="val_f1", mode="max", grace_period=2,
                                   min_samples_required=3)
    task = load_task(args.data)
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(_trainable, task=task, epochs=args.epochs, seed=args.seed), {"cpu": 1}),
        tune_config=tune.TuneConfig(search_alg=search, scheduler=scheduler, num_samples=args.trials,
                                    max_concurrent_trials=args.workers),
        run_config=tune.RunConfig(name="peer-ray", storage_path=str(args.out.resolve() / "ray"), verbose=0,
                                  callbacks=[MLflowLoggerCallback(tracking_uri=args.tracking_uri,
                                                                  experiment_name="peer-ray", save_artifact=False)]))
    results = tuner.fit()
    frames = [r.metrics_dataframe for r in results if r.metrics_dataframe is not None]
    best = max((float(f["val_f1"].max()) for f in frames if len(f)), default=None)
    starts = [float(f["timestamp"].min()) for f in frames if len(f)]
    print(json.dumps({"trials": len(results), "epochs": sum(len(f) for f in frames), "best": best,
                      "pruned": sum(1 for f in frames if len(f) < args.epochs),
                      "first_trial": min(starts) if starts else None, "ended": time.time(),
                      "logged": "one MLflow run per trial (no parent): params, val_f1 per epoch"}))
    ray.shutdown()


if __name__ == "__main__":
    main()
