"""A resolved experiment: its dataset, split and runtime, with the shared inputs every stage
reads (tokens, vocabulary, embedding matrix, decoded images) built lazily and cached."""

from __future__ import annotations

import json
import logging
from collections import Counter
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mmsearch._cache import cached, entry
from mmsearch.config import ExperimentConfig, with_overrides
from mmsearch.data import Dataset, Split, demo_dataset, load_images
from mmsearch.runtime import Runtime, runtime_for
from mmsearch.text import EmbeddingMatrix, Preprocessor, Vocabulary, embedding_matrix

if TYPE_CHECKING:
    from mmsearch.training import Callback

log = logging.getLogger("mmsearch.runtime")


def foreground_threads(cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg`` with the threads a foreground run (``export``, ``train``) gets (``runtime.thread_budget``)."""
    from mmsearch.runtime import thread_budget

    # Where it runs, not what it is: run.threads is a placement field, so the model and its caches are the same.
    return with_overrides(cfg, {"run.threads": thread_budget(cfg.run.threads, foreground=True)},
                          where="threads of a foreground run")


class Workspace:
    def __init__(self, cfg: ExperimentConfig, dataset: Dataset | None = None, refit: bool = False,
                 events: Counter[str] | None = None, observers: list[Callback] | None = None) -> None:
        """``refit``: train on the training and validation rows together (the final model, once
        the epochs are fixed); the validation rows are still scored each epoch, optimistically,
        so the engine keeps its curves. ``events`` counts cache builds and hits (see ``_cache``).
        ``observers``: callbacks every stage trained in this workspace (its upstream stages too)
        reports to, beside its own (a sweep's upstream job reports its epochs with one)."""
        self.cfg = cfg
        self.refit = refit
        self.events: Counter[str] = events if events is not None else Counter()
        self.observers: list[Callback] = observers if observers is not None else []
        if dataset is None:
            dataset = Dataset.open(Path(cfg.data.path) if cfg.data.path else demo_dataset())
        self.dataset = dataset

    @cached_property
    def runtime(self) -> Runtime:
        """Where this workspace's networks run (one per device and precision in a process), with
        its ``run.threads``."""
        return runtime_for(self.cfg.run)

    @property
    def prefetch(self) -> int:
        """Image batches sliced ahead in a background thread (``run.num_workers``; auto: 1 on a GPU)."""
        workers = self.cfg.run.num_workers
        return workers if workers is not None else int(self.runtime.is_cuda)

    # -- rows ----------------------------------------------------------------------------
    @cached_property
    def split(self) -> Split:
        split = self.dataset.split(self.cfg.data.val_fraction, self.cfg.data.split_seed)
        if self.cfg.data.limit:
            keep = self.cfg.data.limit
            split = Split(split.train[split.train < keep], split.val[split.val < keep])
        if self.refit:
            split = Split(np.sort(np.concatenate([split.train, split.val])), split.val)
        return split

    @property
    def targets(self) -> np.ndarray:
        return self.dataset.targets

    @property
    def seed(self) -> int:
        return self.cfg.run.seed + self.cfg.run.repeat

    def upstream(self) -> Workspace:
        """This workspace as seen by a downstream stage: a sweep repeat re-seeds only the stage
        being swept, so upstream features stay shared across repeats."""
        return self if self.cfg.run.repeat == 0 else self._upstream

    @cached_property
    def _upstream(self) -> Workspace:
        return Workspace(with_overrides(self.cfg, {"run.repeat": 0}), self.dataset, self.refit, self.events,
                         self.observers)

    def split_key(self) -> dict[str, Any]:
        d = self.cfg.data
        return {"data": self.dataset.fingerprint, "val": d.val_fraction, "split_seed": d.split_seed, "limit": d.limit,
                "refit": self.refit}

    # -- text inputs ------------------------------------------------------------------------
    @cached_property
    def tokens(self) -> list[list[str]]:
        pre = self.cfg.text.preprocess
        key = {"data": self.dataset.fingerprint, "preprocess": pre.model_dump(), "v": 3}
        path = cached(entry("tokens", key, ".json"), lambda tmp: _dump(Preprocessor(pre).many(self.dataset.captions), tmp),
                      kind="tokens", what="tokenised captions", events=self.events)
        return json.loads(path.read_text())  # JSON, not a pickle: a cache file never runs code

    @cached_property
    def vocab(self) -> Vocabulary:
        # Built from every caption (train.csv and test.csv): it uses no labels, and test-only words
        # then get their pretrained vectors instead of <unk>.
        return Vocabulary.build(self.tokens)

    def sentences_key(self) -> dict[str, Any]:
        """What the tokenised captions depend on (a captions-trained word2vec is keyed by it)."""
        return {"data": self.dataset.fingerprint, "preprocess": self.cfg.text.preprocess.model_dump()}

    @cached_property
    def embeddings(self) -> EmbeddingMatrix:
        t = self.cfg.text
        return embedding_matrix(self.vocab, t.corpus, dim=t.embedding_dim, sentences=self.tokens,
                                sentences_key=self.sentences_key(), seed=self.cfg.run.seed, events=self.events)

    def sequences(self) -> tuple[torch.Tensor, torch.Tensor]:
        ids, lengths = self.vocab.encode(self.tokens, self.cfg.text.seq_len)
        return torch.from_numpy(ids), torch.from_numpy(lengths)

    # -- image inputs ------------------------------------------------------------------------
    def images(self) -> np.memmap:
        return load_images(self.dataset, self.cfg.data.image_size, events=self.events)


def _dump(value: Any, path: Path) -> None:
    path.write_text(json.dumps(value, ensure_ascii=False))
