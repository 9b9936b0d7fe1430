"""How the Bi-LSTM's outputs become one sentence vector: a registry, so a sweep names it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mmsearch._lazy import lazy_module
from mmsearch._registry import Registry

torch = lazy_module("torch")
rnn = lazy_module("torch.nn.utils.rnn")

# (packed LSTM output, final hidden states, lengths, padded length) -> (batch x 2H) features
Pooling = Callable[[Any, Any, Any, int], Any]
POOLINGS: Registry[Pooling] = Registry("pooling")


def _padded(out: Any, lengths: Any, total: int) -> tuple[Any, Any]:
    padded, _ = rnn.pad_packed_sequence(out, batch_first=True, total_length=total)
    mask = (torch.arange(total, device=padded.device)[None, :] < lengths.to(padded.device)[:, None]).unsqueeze(-1)
    return padded, mask


@POOLINGS.register("last")
def _last(out: Any, h: Any, lengths: Any, total: int) -> Any:
    return torch.cat([h[-2], h[-1]], dim=1)  # final forward and backward states


@POOLINGS.register("mean")
def _mean(out: Any, h: Any, lengths: Any, total: int) -> Any:
    padded, mask = _padded(out, lengths, total)
    return (padded * mask).sum(1) / lengths.to(padded.device)[:, None].clamp(min=1)


@POOLINGS.register("max")
def _max(out: Any, h: Any, lengths: Any, total: int) -> Any:
    padded, mask = _padded(out, lengths, total)
    return padded.masked_fill(~mask, float("-inf")).max(1).values
