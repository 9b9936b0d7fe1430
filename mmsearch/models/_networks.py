"""The paper's three networks. Each defines ``forward`` (logits) and ``features`` only;
training, loss, metrics and logging belong to the shared engine."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from mmsearch.data import NUM_LABELS
from mmsearch.models._backbones import build_backbone, swap_relu
from mmsearch.models._pooling import POOLINGS
from mmsearch.text import PAD_ID, UNK_ID


class ImageNet(nn.Module):
    """Backbone + linear head to 18 logits (sigmoid lives in the loss)."""

    def __init__(self, backbone: str, pretrained: bool, leaky_relu: bool = True, leaky_slope: float = 0.01,
                 freeze_backbone: bool = False) -> None:
        super().__init__()
        self.backbone, self.feature_dim = build_backbone(backbone, pretrained)
        if leaky_relu:
            swap_relu(self.backbone, leaky_slope)
        self.frozen = freeze_backbone
        if freeze_backbone:
            self.backbone.requires_grad_(False)
        self.head = nn.Linear(self.feature_dim, NUM_LABELS)

    def train(self, mode: bool = True) -> ImageNet:
        super().train(mode)
        if self.frozen:  # a frozen backbone keeps its BatchNorm statistics
            self.backbone.eval()
        return self

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


class HeadNet(nn.Module):
    """The image head alone, trained on cached frozen-backbone features."""

    def __init__(self, feature_dim: int) -> None:
        super().__init__()
        self.head = nn.Linear(feature_dim, NUM_LABELS)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)


class CaptionNet(nn.Module):
    """Embedding (from word vectors) -> Bi-LSTM -> pooled 2H features -> linear to 18."""

    def __init__(self, vectors: np.ndarray, hidden_size: int = 50, num_layers: int = 1, dropout: float = 0.1,
                 pooling: str = "last", trainable_embeddings: bool = False, word_dropout: float = 0.0) -> None:
        super().__init__()
        self.word_dropout = word_dropout
        self.pool = POOLINGS.get(pooling)
        # A copy: fine-tuned embeddings must never write into the caller's (possibly shared) array.
        self.embedding = nn.Embedding.from_pretrained(torch.tensor(vectors, dtype=torch.float32),
                                                      freeze=not trainable_embeddings, padding_idx=0)
        self.lstm = nn.LSTM(vectors.shape[1], hidden_size, num_layers=num_layers, batch_first=True,
                            bidirectional=True, dropout=dropout if num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.feature_dim = 2 * hidden_size
        self.head = nn.Linear(self.feature_dim, NUM_LABELS)

    def features(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.training and self.word_dropout > 0:
            # Hiding whole words makes the network use every clue in a caption, not only the one
            # word it learnt first; padding stays padding so the lengths still hold.
            hidden = (torch.rand(ids.shape, device=ids.device) < self.word_dropout) & (ids != PAD_ID)
            ids = ids.masked_fill(hidden, UNK_ID)
        embedded = self.embedding(ids)
        packed = pack_padded_sequence(embedded, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, (h, _) = self.lstm(packed)
        pooled = self.pool(out, h, lengths, ids.shape[1])
        return self.dropout(pooled)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(ids, lengths))


class FusionNet(nn.Module):
    """MLP over concatenated image and caption features (paper: 2148 -> 2000 -> 18)."""

    def __init__(self, in_dim: int, hidden_size: int = 2000, hidden_layers: int = 1, dropout_count: int = 1,
                 dropout_p: float = 0.05) -> None:
        super().__init__()
        # Dropout places, most useful first: after each hidden layer (last first), then the input.
        places = [f"hidden{i}" for i in reversed(range(hidden_layers))] + ["input"]
        chosen = set(places[:dropout_count])
        layers: list[nn.Module] = []
        if "input" in chosen:
            layers.append(nn.Dropout(dropout_p))
        width = in_dim
        for i in range(hidden_layers):
            layers += [nn.Linear(width, hidden_size), nn.ReLU()]
            if f"hidden{i}" in chosen:
                layers.append(nn.Dropout(dropout_p))
            width = hidden_size
        layers.append(nn.Linear(width, NUM_LABELS))
        self.mlp = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp(features)
