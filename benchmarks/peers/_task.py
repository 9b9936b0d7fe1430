"""The caption search every B8 side runs: mmsearch's own data, vocabulary, embedding matrix and
caption network, trained by a plain loop a competent user would write (Adam with weight decay,
weighted BCE, StepLR, gradient clipping, validation samples-F1 each epoch). The settings not
searched are the ``cpu`` experiment's text settings, as in ``mmsearch sweep run text-search
--experiment cpu``; the search space is text-search's.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SEARCH_SPACE = {  # sweeps/text-search.yaml
    "lr": ("float", 0.002, 0.05, True),
    "seq_len": ("int", 8, 20, 2),
    "pooling": ("categorical", ["last", "mean", "max"]),
    "hidden_size": ("categorical", [50, 100, 128, 150]),
    "dropout": ("float", 0.0, 0.4, False),
    "trainable_embeddings": ("categorical", [False, True]),
    "batch_size": ("categorical", [50, 100, 150, 250]),
}


def suggest(trial: Any) -> dict[str, Any]:
    """The space through Optuna's define-by-run API (the plain script and Ray's OptunaSearch)."""
    out = {}
    for name, (kind, *spec) in SEARCH_SPACE.items():
        if kind == "float":
            out[name] = trial.suggest_float(name, spec[0], spec[1], log=spec[2])
        elif kind == "int":
            out[name] = trial.suggest_int(name, spec[0], spec[1], step=spec[2])
        else:
            out[name] = trial.suggest_categorical(name, spec[0])
    return out


@dataclass
class Task:
    tokens: list[list[str]]
    vocab: Any
    vectors: np.ndarray  # the embedding matrix: each trial trains a copy of it, never this array
    targets: np.ndarray
    train_rows: np.ndarray
    val_rows: np.ndarray


def load_task(data: Path) -> Task:
    """Tokens, vocabulary and embedding matrix from mmsearch's caches (built once), the split the
    sweep uses (seed 42, 20% validation)."""
    from mmsearch.config import load_experiment
    from mmsearch.pipeline import Workspace

    ws = Workspace(load_experiment("cpu", {"data.path": str(data)}))
    split = ws.split
    return Task(ws.tokens, ws.vocab, ws.embeddings.vectors, ws.targets, split.train, split.val)


def train(task: Task, config: dict[str, Any], epochs: int, seed: int, report: Callable[[int, float], None]) -> float:
    """Train one configuration; ``report(epoch, val_f1)`` after each epoch (it may raise to stop
    the trial, as a pruner does). Returns the best validation F1 of the epochs run."""
    import torch
    from torch import nn

    from mmsearch.models import CaptionNet

    torch.manual_seed(seed)
    ids, lengths = task.vocab.encode(task.tokens, int(config["seq_len"]))
    ids_t, len_t, y = torch.from_numpy(ids), torch.from_numpy(lengths), torch.from_numpy(task.targets)
    tr, va = torch.from_numpy(task.train_rows), torch.from_numpy(task.val_rows)
    model = CaptionNet(np.array(task.vectors, copy=True), int(config["hidden_size"]), 1, float(config["dropout"]),
                       str(config["pooling"]), bool(config["trainable_embeddings"]))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=float(config["lr"]), weight_decay=1e-5)
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.95)
    weight = torch.ones(task.targets.shape[1])
    weight[0] = 0.4  # label 1 (person), as the cpu experiment weighs it
    loss_fn = nn.BCEWithLogitsLoss(weight=weight)
    batch = int(config["batch_size"])
    generator = torch.Generator().manual_seed(seed)
    best = 0.0
    for epoch in range(1, epochs + 1):
        model.train()
        order = tr[torch.randperm(len(tr), generator=generator)]
        for start in range(0, len(order), batch):
            rows = order[start : start + batch]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(ids_t[rows], len_t[rows]), y[rows])
            loss.backward()
            nn.utils.clip_grad_norm_(params, 0.5)
            optimizer.step()
        schedule.step()
        model.eval()
        with torch.inference_mode():
            probs = torch.sigmoid(model(ids_t[va], len_t[va])).numpy()
        f1 = samples_f1(task.targets[task.val_rows], probs)
        best = max(best, f1)
        report(epoch, f1)
    return best


def samples_f1(truth: np.ndarray, probs: np.ndarray) -> float:
    pred = probs >= 0.5
    empty = ~pred.any(1)
    pred[np.flatnonzero(empty), probs[empty].argmax(1)] = True  # every row gets a label
    tp = (truth.astype(bool) & pred).sum(1)
    return float((2 * tp / (truth.sum(1) + pred.sum(1))).mean())



def arguments(description: str) -> argparse.Namespace:
    """The command line every peer takes (the harness passes the same values to each)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    return args
