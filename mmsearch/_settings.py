"""The base of every validated settings block (experiment sections, sweep files).

Strict: YAML already gives typed values, so ``"10"`` is not silently an epoch count; and
closed: an unknown key is an error that lists the valid ones, never ignored.
"""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from mmsearch.errors import Problem


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=False, validate_default=False)


def problems_from(exc: ValidationError, where: str, model: type[BaseModel] | None = None,
                  prefix: str = "") -> list[Problem]:
    """pydantic's errors as mmsearch problems: ``file: dotted.key: value: what is valid``."""
    problems = []
    for error in exc.errors():
        loc = [str(p) for p in error["loc"] if not str(p).startswith("function-")]
        key = prefix + ".".join(loc)
        message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if error["type"] == "extra_forbidden":
            valid = _keys_at(model, loc[:-1]) if model is not None else []
            near = difflib.get_close_matches(loc[-1], valid, n=1, cutoff=0.5) if loc else []
            if not near and loc:  # learning_rate -> lr: a key made of the words' initials, or one of the words
                words = [w for w in loc[-1].lower().split("_") if w]
                near = [v for v in valid if len(words) > 1 and v == "".join(w[0] for w in words) or v in words][:1]
            message = "unknown key" + (f"; did you mean {'.'.join([*loc[:-1], near[0]])}?" if near else "") + (
                f"; valid keys here: {', '.join(valid)}" if valid else "")
        elif error["type"] == "missing":
            message = "missing"
        elif "input" in error and error["type"] not in ("value_error", "assertion_error"):
            message = f"{_quoted(error['input'])}: {message}"
        problems.append(Problem(f"{where}: {key}" if key else where, message))
    return problems


def _quoted(value: Any, limit: int = 120) -> str:
    """A value as a message quotes it: whole when short, else its start and its size (a field of
    a million values is one line, not a megabyte)."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f"{len(value):,} items" if isinstance(value, (list, dict, tuple)) else f"{len(text):,} characters"
    return f"{text[:limit]}... ({size})"


def _keys_at(model: type[BaseModel], loc: list[str]) -> list[str]:
    """The field names of the nested model at ``loc`` (for "valid keys here")."""
    current: Any = model
    for part in loc:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return []
        current = field.annotation
    return list(getattr(current, "model_fields", {}))
