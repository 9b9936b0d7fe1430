"""What a downloadable asset (ImageNet weights, gensim word vectors) is, and whether this machine
can use it, asked before anything trains: a sweep whose levels need weights that are neither
cached nor downloadable says so up front instead of failing those cells one by one. Each asset
is described where it lives (``models.backbone_asset``, ``text.corpus_asset``); which ones a
configuration lacks is ``pipeline.missing_assets``."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass

from mmsearch._net import can_reach


@dataclass(frozen=True)
class Asset:
    kind: str  # "ImageNet weights" or "word vectors"
    name: str  # the backbone or corpus
    cached: bool
    where: str  # the file or folder it is (or would be) in
    fix: str  # how to get it onto an offline machine

    @property
    def usable(self) -> bool:
        return self.cached or _online(self.kind)


@functools.cache  # one probe per host and process, however many assets ask
def _online(kind: str) -> bool:
    return can_reach("download.pytorch.org" if kind == "ImageNet weights" else "github.com", timeout=2.0)


def missing(assets: Iterable[Asset | None]) -> list[Asset]:
    return [a for a in dict.fromkeys(a for a in assets if a is not None) if not a.usable]
