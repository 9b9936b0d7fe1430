"""Which downloadable assets (ImageNet weights, gensim word vectors) this machine has, asked
before anything trains: a sweep whose levels need weights that are neither cached nor
downloadable says so up front instead of failing those cells one by one."""

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


def backbone_asset(name: str) -> Asset:
    from mmsearch.models import checkpoint_path

    path = checkpoint_path(name)
    return Asset("ImageNet weights", name, path.exists(), str(path),
                 f"copy {path.name} into {path.parent} from a connected machine, or --set image.pretrained=false")


def corpus_asset(name: str) -> Asset | None:
    """None for corpora that are not downloaded (captions-word2vec trains on the captions; file:PATH)."""
    from mmsearch.text._vectors import gensim_data_dir, resolve_corpus

    spec = resolve_corpus(name)
    if spec.kind != "gensim":
        return None
    folder = gensim_data_dir() / name
    return Asset("word vectors", name, folder.is_dir(), str(folder),
                 f"on a connected machine run gensim.downloader.load('{name}') and copy {folder} here")


def missing(assets: Iterable[Asset | None]) -> list[Asset]:
    return [a for a in dict.fromkeys(a for a in assets if a is not None) if not a.usable]
