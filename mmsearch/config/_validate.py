"""Semantic validation of an experiment config: ranges, registered names, cross-field rules."""

from __future__ import annotations

import dataclasses
from typing import Any

from mmsearch.config._schema import ExperimentConfig, OptimConfig
from mmsearch.errors import MmsearchError, Problem


def _check_range(value: Any, rule: str | None) -> str | None:
    if rule is None or value is None or not isinstance(value, (int, float)):
        return None
    if rule == ">0" and not value > 0:
        return "must be > 0"
    if rule == ">=0" and not value >= 0:
        return "must be >= 0"
    if rule == "0..1" and not 0 <= value <= 1:
        return "must be between 0 and 1"
    return None


def _walk(obj: Any, prefix: str, where: str, problems: list[Problem]) -> None:
    for fl in dataclasses.fields(obj):
        value = getattr(obj, fl.name)
        path = f"{prefix}{fl.name}"
        if dataclasses.is_dataclass(value):
            _walk(value, f"{path}.", where, problems)
            continue
        message = _check_range(value, fl.metadata.get("check"))
        if message:
            problems.append(Problem(f"{where}: {path}", f"{value!r} {message}"))


def _name(registry: Any, value: str, path: str, where: str, problems: list[Problem]) -> None:
    if value not in registry:
        problems.append(Problem(f"{where}: {path}", f"unknown {registry.kind} {value!r}; registered: {', '.join(registry.names())}"))


def _optim(o: OptimConfig, path: str, where: str, problems: list[Problem]) -> None:
    from mmsearch.training._losses import LOSSES, SCHEDULERS

    _name(LOSSES, o.loss, f"{path}.loss", where, problems)
    _name(SCHEDULERS, o.scheduler, f"{path}.scheduler", where, problems)
    cw = o.class_weights
    from mmsearch.data._labels import LABEL_INDEX, NUM_LABELS

    if cw is None or cw == "auto":
        return
    if isinstance(cw, list):
        if len(cw) != NUM_LABELS or not all(isinstance(x, (int, float)) and x >= 0 for x in cw):
            problems.append(Problem(f"{where}: {path}.class_weights", f"{cw!r}: a list needs {NUM_LABELS} non-negative numbers"))
    elif isinstance(cw, dict):
        for k, v in cw.items():
            if k not in LABEL_INDEX or not isinstance(v, (int, float)) or v < 0:
                problems.append(Problem(f"{where}: {path}.class_weights", f"{k!r}: {v!r} — keys are labels 1..19 without 12, values >= 0"))
    else:
        problems.append(Problem(f"{where}: {path}.class_weights", f"{cw!r}: expected null, 'auto', a list of {NUM_LABELS} or {{label: weight}}"))


def validate(cfg: ExperimentConfig, where: str) -> list[Problem]:
    from mmsearch.data._augment import AUGMENTATION_SETS
    from mmsearch.models._backbones import BACKBONES
    from mmsearch.models._networks import POOLINGS
    from mmsearch.text._preprocess import TOKENIZERS
    from mmsearch.text._vectors import resolve_corpus

    problems: list[Problem] = []
    _walk(cfg, "", where, problems)
    _name(BACKBONES, cfg.image.backbone, "image.backbone", where, problems)
    _name(AUGMENTATION_SETS, cfg.image.augmentation, "image.augmentation", where, problems)
    _name(TOKENIZERS, cfg.text.preprocess.tokenizer, "text.preprocess.tokenizer", where, problems)
    _name(POOLINGS, cfg.text.pooling, "text.pooling", where, problems)
    for section in ("image", "text", "fusion"):
        _optim(getattr(cfg, section).optim, f"{section}.optim", where, problems)
    try:
        spec = resolve_corpus(cfg.text.corpus)
        dim = cfg.text.embedding_dim
        if spec.dim is not None and dim is not None and dim != spec.dim:
            problems.append(Problem(f"{where}: text.embedding_dim", f"{dim} does not match {spec.name!r}, which has {spec.dim} dimensions (use null or {spec.dim})"))
        if spec.kind == "captions" and dim is None:
            problems.append(Problem(f"{where}: text.embedding_dim", "captions-word2vec needs an embedding_dim (e.g. 100)"))
    except MmsearchError as exc:
        problems += [Problem(f"{where}: {p.where}", p.message) for p in getattr(exc, "problems", [])] or [Problem(f"{where}: text.corpus", str(exc))]
    if cfg.fusion.dropout_count > cfg.fusion.hidden_layers + 1:
        problems.append(Problem(f"{where}: fusion.dropout_count", f"{cfg.fusion.dropout_count} dropout layers but only {cfg.fusion.hidden_layers + 1} places (after each hidden layer, then the input)"))
    if cfg.run.device not in {"auto", "cpu", "cuda"}:
        problems.append(Problem(f"{where}: run.device", f"{cfg.run.device!r}; valid: auto, cpu, cuda"))
    return problems
