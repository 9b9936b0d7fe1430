"""Vocabulary, fixed-length index sequences and caption-length statistics."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1  # their fixed indices in every vocabulary


@dataclass
class Vocabulary:
    words: list[str]  # index -> word; 0 = PAD, 1 = UNK

    @classmethod
    def build(cls, token_lists: Sequence[Sequence[str]], min_freq: int = 1) -> Vocabulary:
        counts = Counter(t for tokens in token_lists for t in tokens)
        # Most frequent first, ties alphabetical: the same corpus gives the same indices everywhere.
        ordered = sorted((w for w, n in counts.items() if n >= min_freq), key=lambda w: (-counts[w], w))
        return cls([PAD, UNK, *ordered])

    def __post_init__(self) -> None:
        self.index = {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, token_lists: Sequence[Sequence[str]], seq_len: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows x seq_len int64 ids, padded at the end; true lengths clipped to 1..seq_len)."""
        ids = np.zeros((len(token_lists), seq_len), dtype=np.int64)
        lengths = np.ones(len(token_lists), dtype=np.int64)
        for r, tokens in enumerate(token_lists):
            kept = [self.index.get(t, UNK_ID) for t in tokens[:seq_len]]
            ids[r, : len(kept)] = kept
            lengths[r] = max(1, len(kept))
        return ids, lengths


@dataclass
class LengthStats:
    """Caption lengths in tokens: histogram, box plot and the paper's "fewer than k" counts."""

    lengths: np.ndarray

    def histogram(self) -> dict[int, int]:
        values, counts = np.unique(self.lengths, return_counts=True)
        return {int(v): int(c) for v, c in zip(values, counts)}

    def box(self) -> dict[str, float]:
        q1, median, q3 = np.percentile(self.lengths, [25, 50, 75])
        iqr = q3 - q1
        inside = self.lengths[(self.lengths >= q1 - 1.5 * iqr) & (self.lengths <= q3 + 1.5 * iqr)]
        return {
            "min": float(self.lengths.min()), "q1": float(q1), "median": float(median), "q3": float(q3),
            "max": float(self.lengths.max()), "mean": float(self.lengths.mean()),
            "whisker_low": float(inside.min()), "whisker_high": float(inside.max()),
        }

    def fewer_than(self, ks: Sequence[int] = (6, 7, 8, 9, 10)) -> dict[int, int]:
        return {int(k): int((self.lengths < k).sum()) for k in ks}


def length_stats(token_lists: Sequence[Sequence[str]]) -> LengthStats:
    return LengthStats(np.array([len(t) for t in token_lists], dtype=np.int64))
