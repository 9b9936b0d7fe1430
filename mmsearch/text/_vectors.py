"""Word-vector corpora: gensim-data names, local vector files and ``captions-word2vec``.

Loading 400k GloVe vectors from text takes ~20 s, so every corpus is converted once into an
array (``vectors.npy``, memory-mapped afterwards) and a word list (``words.json``) in the cache,
never a pickle, and the embedding matrix of a vocabulary is cached too: no trial and no worker
loads a corpus again.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmsearch._assets import Asset
from mmsearch._cache import cached, entry, stable_hash
from mmsearch._net import can_reach
from mmsearch._registry import Registry
from mmsearch.errors import AssetMissingError, ConfigError, Problem
from mmsearch.text._vocab import Vocabulary

log = logging.getLogger("mmsearch.text")

# gensim-data's catalogue (gensim-data's information.json), with each model's dimension.
GENSIM_DATA: dict[str, int] = {
    "glove-twitter-25": 25, "glove-twitter-50": 50, "glove-twitter-100": 100, "glove-twitter-200": 200,
    "glove-wiki-gigaword-50": 50, "glove-wiki-gigaword-100": 100, "glove-wiki-gigaword-200": 200,
    "glove-wiki-gigaword-300": 300, "word2vec-google-news-300": 300, "word2vec-ruscorpora-300": 300,
    "fasttext-wiki-news-subwords-300": 300, "conceptnet-numberbatch-17-06-300": 300,
}
CAPTIONS_WORD2VEC = "captions-word2vec"


@dataclass(frozen=True)
class CorpusSpec:
    """How a corpus name resolves: its kind and fixed dimension (None = set by config)."""

    name: str
    kind: str
    dim: int | None
    path: Path | None = None


CORPUS_KINDS: Registry[Callable[..., Any]] = Registry("corpus kind")
# gensim's own save format (KeyedVectors.save / Word2Vec.save): a pickle, never loaded.
PICKLED_SUFFIXES = {".kv", ".model", ".pkl", ".pickle"}


def gensim_data_dir() -> Path:
    return Path(os.environ.get("GENSIM_DATA_DIR", Path.home() / "gensim-data"))


def resolve_corpus(name: str) -> CorpusSpec:
    """Map a corpus name to its spec, or raise listing the valid names."""
    if name == CAPTIONS_WORD2VEC:
        return CorpusSpec(name, "captions", None)
    if name.startswith("file:"):
        path = Path(name[5:]).expanduser()
        if path.suffix in PICKLED_SUFFIXES:
            raise ConfigError("word vectors in a pickle-based file", [Problem("text.corpus", (
                f"{name!r}: gensim's {path.suffix} files load through pickle, which runs whatever code the file holds; "
                f"mmsearch reads only formats that cannot: word2vec binary (.bin) or text (.txt, .vec, .txt.gz; GloVe's "
                f"too). Convert once where you trust the file: python -c \"from gensim.models import KeyedVectors; "
                f"KeyedVectors.load('{path}').save_word2vec_format('{path.with_suffix('.bin')}', binary=True)\""))])
        return CorpusSpec(name, "file", _file_dim(path) if path.exists() else None, path)
    if name in GENSIM_DATA:
        return CorpusSpec(name, "gensim", GENSIM_DATA[name])
    extra = _local_catalogue()
    if name in extra:
        return CorpusSpec(name, "gensim", extra[name])
    raise ConfigError(
        "unknown word-vector corpus",
        [Problem("text.corpus", f"{name!r} is not a corpus; valid: {', '.join(list(GENSIM_DATA) + [CAPTIONS_WORD2VEC])}, "
                 "or file:PATH to a word2vec (.bin, .txt, .vec) or GloVe (.txt) file")],
    )


def _local_catalogue() -> dict[str, int]:
    """Other gensim-data models named in the cached information.json (gensim's offline list)."""
    info = gensim_data_dir() / "information.json"
    if not info.exists():
        return {}
    try:
        models = json.loads(info.read_text()).get("models", {})
    except (OSError, ValueError):
        return {}
    dims = {}
    for key, meta in models.items():
        dim = meta.get("parameters", {}).get("dimension") or meta.get("parameters", {}).get("dimensions")
        if isinstance(dim, int):
            dims[key] = dim
    return dims


def _header_words(path: Path) -> list[str] | None:
    """The fields of a text vector file's first line: a word2vec count header (rows, dimension)
    or the first vector. None for the binary and gensim formats."""
    if path.suffix == ".bin":
        return None
    import gzip

    with (gzip.open(path, "rt", encoding="utf-8", errors="replace") if path.suffix == ".gz"
          else open(path, encoding="utf-8", errors="replace")) as handle:
        return handle.readline().split()


def _is_count_header(fields: list[str]) -> bool:
    return len(fields) == 2 and all(p.isdigit() for p in fields)


def _file_dim(path: Path) -> int | None:
    first = _header_words(path)
    if not first:
        return None
    return int(first[1]) if _is_count_header(first) else len(first) - 1


# -- loading ------------------------------------------------------------------------------------
VECTORS_FILE, WORDS_FILE = "vectors.npy", "words.json"


def load_vectors(name: str, *, dim: int | None = None, sentences: Sequence[Sequence[str]] | None = None,
                 sentences_key: Any = None, seed: int = 0, events: Counter[str] | None = None):  # type: ignore[no-untyped-def]
    """KeyedVectors of a corpus, memory-mapped from the cache after the first load."""
    from gensim.models import KeyedVectors

    spec = resolve_corpus(name)
    extra = {"dim": dim, "sentences": sentences_key, "seed": seed} if spec.kind == "captions" else None
    if spec.kind == "file" and spec.path is not None and spec.path.exists():
        st = spec.path.stat()
        extra = {"size": st.st_size, "mtime": st.st_mtime_ns}
    key = stable_hash({"corpus": spec.name, "extra": extra, "v": 3})
    label = spec.name.replace("/", "_").replace(":", "_")[-40:]

    def write(folder: Path) -> None:
        kv = CORPUS_KINDS.get(spec.kind)(spec, dim=dim, sentences=sentences, seed=seed)
        folder.mkdir()
        # An array and a word list, not gensim's pickle: whoever can write the cache folder
        # must not be able to run code in every process that reads it.
        np.save(folder / VECTORS_FILE, np.ascontiguousarray(kv.vectors, dtype=np.float32))
        (folder / WORDS_FILE).write_text(json.dumps(list(kv.index_to_key)))

    target = entry("vectors", f"{label}-{key}")
    if spec.kind == "gensim" and not target.exists():
        asset = corpus_asset(spec.name)
        if asset is not None and not asset.usable:  # said before the cache logs that it builds what it cannot
            raise _offline(spec.name, Path(asset.where))
    folder = cached(target, write, kind="vectors", what=f"word vectors {name}", events=events)
    vectors = np.load(folder / VECTORS_FILE, mmap_mode="r")  # allow_pickle stays False
    words = json.loads((folder / WORDS_FILE).read_text())
    kv = KeyedVectors(vector_size=vectors.shape[1], count=0)
    kv.vectors, kv.index_to_key = vectors, words
    kv.key_to_index = {w: i for i, w in enumerate(words)}
    return kv


def corpus_asset(name: str) -> Asset | None:
    """The corpus's word vectors as an asset: cached, or how to get them offline; None for
    corpora that are not downloaded (captions-word2vec trains on the captions; file:PATH)."""
    spec = resolve_corpus(name)
    if spec.kind != "gensim":
        return None
    folder = gensim_data_dir() / name
    return Asset("word vectors", name, folder.is_dir(), str(folder),
                 f"on a connected machine run gensim.downloader.load('{name}') and copy {folder} here")


def _offline(name: str, folder: Path) -> AssetMissingError:
    return AssetMissingError(
        f"word vectors {name!r} are not in {folder} and cannot be downloaded (offline). "
        f"On a connected machine run: python -c \"import gensim.downloader as api; api.load('{name}')\" "
        f"and copy {folder} here, or set GENSIM_DATA_DIR to a folder that has it.")


@CORPUS_KINDS.register("gensim")
def _load_gensim(spec: CorpusSpec, **_: Any):  # type: ignore[no-untyped-def]
    base = gensim_data_dir()
    folder = base / spec.name
    online = can_reach("github.com")
    if not folder.exists() and not online:
        raise _offline(spec.name, folder)
    log.info("loading word vectors %s with gensim (once; later runs read the cache)", spec.name)
    if online:
        import gensim.downloader as api

        api.BASE_DIR = str(base)  # gensim reads GENSIM_DATA_DIR once at import; follow it as it is now
        return api.load(spec.name)
    # Offline, gensim.downloader.load would first try to refresh its catalogue from GitHub and log
    # a traceback; an installed corpus needs no catalogue: run its own reader, as load() does.
    module_spec = importlib.util.spec_from_file_location(f"gensim_data_{spec.name.replace('-', '_')}",
                                                         folder / "__init__.py")
    if module_spec is None or module_spec.loader is None or not (folder / "__init__.py").exists():
        raise AssetMissingError(f"{folder} is not a gensim-data folder (no __init__.py with load_data())")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.load_data()


@CORPUS_KINDS.register("file")
def _load_file(spec: CorpusSpec, **_: Any):  # type: ignore[no-untyped-def]
    from gensim.models import KeyedVectors

    path = spec.path
    assert path is not None
    if not path.exists():
        raise AssetMissingError(f"word-vector file {path} does not exist (text.corpus = {spec.name!r})")
    if path.suffix == ".bin":
        return KeyedVectors.load_word2vec_format(str(path), binary=True)
    no_header = not _is_count_header(_header_words(path) or [])
    return KeyedVectors.load_word2vec_format(str(path), binary=False, no_header=no_header)


def _stable_hash_fn(text: str) -> int:
    # gensim seeds each word's initial vector with hash(word + seed); Python's hash is salted per
    # process, so without this two runs with the same seed would differ.
    return zlib.crc32(text.encode("utf-8"))


@CORPUS_KINDS.register("captions")
def _train_captions_word2vec(spec: CorpusSpec, *, dim: int | None, sentences: Sequence[Sequence[str]] | None,
                             seed: int, **_: Any):  # type: ignore[no-untyped-def]
    from gensim.models import Word2Vec

    if sentences is None or dim is None:
        raise ValueError("captions-word2vec needs the training captions and an embedding dimension")
    log.info("training captions-word2vec (%d d) on %d captions", dim, len(sentences))
    model = Word2Vec(sentences=[list(s) for s in sentences if s], vector_size=dim, window=5, min_count=1,
                     workers=1, seed=seed, epochs=10, hashfxn=_stable_hash_fn)
    return model.wv


# -- embedding matrix and OOV -------------------------------------------------------------------
@dataclass
class EmbeddingMatrix:
    vectors: np.ndarray  # (len(vocab), dim) float32; row 0 (PAD) zero
    oov_words: list[str]

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


def embedding_matrix(vocab: Vocabulary, corpus: str, *, dim: int | None, sentences: Sequence[Sequence[str]] | None = None,
                     sentences_key: Any = None, seed: int = 0, events: Counter[str] | None = None) -> EmbeddingMatrix:
    """Vectors for a vocabulary, built once per (vocabulary, corpus) and cached. Each call returns
    its own writable copy: a network that fine-tunes its embeddings changes no other trial's."""
    key = {"vocab": stable_hash(vocab.words), "corpus": corpus, "dim": dim, "sentences": sentences_key, "seed": seed, "v": 2}

    def write(folder: Path) -> None:
        kv = load_vectors(corpus, dim=dim, sentences=sentences, sentences_key=sentences_key, seed=seed, events=events)
        rng = np.random.default_rng(seed)
        scale = float(np.std(kv.vectors[: min(len(kv.vectors), 50_000)]))
        out = rng.normal(0.0, scale, size=(len(vocab), kv.vector_size)).astype(np.float32)
        out[0] = 0.0
        oov = []
        for i, word in enumerate(vocab.words[2:], start=2):
            if word in kv.key_to_index:
                out[i] = kv[word]
            else:
                oov.append(word)
        folder.mkdir()
        np.save(folder / "vectors.npy", out)
        (folder / "oov.json").write_text(json.dumps(oov))

    folder = cached(entry("embeddings", key), write, kind="embeddings", what=f"{corpus} x {len(vocab)} words",
                    events=events)
    return EmbeddingMatrix(np.load(folder / "vectors.npy"), json.loads((folder / "oov.json").read_text()))


@dataclass
class OovReport:
    corpus: str
    vocab_size: int
    oov_words: int
    oov_tokens: int
    total_tokens: int
    examples: list[str]
    error: str | None = None


def oov_report(corpus: str, token_lists: Sequence[Sequence[str]], *, dim: int | None = None, seed: int = 0,
               sentences_key: Any = None) -> OovReport:
    """Words (and token occurrences) of the captions that have no vector in the corpus (Fig. 7)."""
    from collections import Counter

    counts = Counter(t for tokens in token_lists for t in tokens)
    total = sum(counts.values())
    try:
        kv = load_vectors(corpus, dim=dim, sentences=token_lists, sentences_key=sentences_key, seed=seed)
    except AssetMissingError as exc:
        return OovReport(corpus, len(counts), 0, 0, total, [], error=str(exc))
    missing = [w for w in counts if w not in kv.key_to_index]
    missing.sort(key=lambda w: -counts[w])
    return OovReport(corpus, len(counts), len(missing), sum(counts[w] for w in missing), total, missing[:10])
