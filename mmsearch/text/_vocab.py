"""Vocabulary and fixed-length index sequences."""

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

