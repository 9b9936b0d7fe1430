import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mmsearch.errors import AssetMissingError, ConfigError
from mmsearch.text import (
    PreprocessConfig,
    Preprocessor,
    Vocabulary,
    embedding_matrix,
    load_vectors,
    oov_report,
    resolve_corpus,
)

from conftest import REAL_CAPTIONS, needs_glove, needs_nltk, needs_real_data


@needs_nltk
def test_preprocessing_steps_are_switchable() -> None:
    caption = "Two DOGS, 3 cats and the horses running!"
    assert Preprocessor()(caption) == ["two", "dog", "cat", "horse", "running"]
    off = PreprocessConfig(lowercase=False, remove_punctuation=False, remove_digits=False, remove_stopwords=False,
                           tokenizer="whitespace", lemmatize=False)
    assert Preprocessor(off)(caption) == caption.split()
    assert "the" in Preprocessor(PreprocessConfig(remove_stopwords=False))(caption)
    assert "3" in Preprocessor(PreprocessConfig(remove_digits=False))(caption)
    assert "dogs" in Preprocessor(PreprocessConfig(lemmatize=False))(caption)


def test_missing_nltk_data_names_the_downloads(tmp_path: Path) -> None:
    code = ("from mmsearch.text import Preprocessor\n"
            "try:\n    Preprocessor()\nexcept Exception as e:\n    print(type(e).__name__, e)")
    env = {**os.environ, "NLTK_DATA": str(tmp_path), "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120).stdout
    assert "AssetMissingError" in out and "nltk.download('punkt_tab')" in out and "NLTK_DATA" in out


def test_vocabulary_and_sequences() -> None:
    vocab = Vocabulary.build([["dog", "cat"], ["dog"]])
    assert vocab.words[:4] == ["<pad>", "<unk>", "dog", "cat"]
    ids, lengths = vocab.encode([["dog", "zebra", "cat"], []], seq_len=2)
    assert ids.tolist() == [[2, 1], [0, 0]] and lengths.tolist() == [2, 1]


@needs_glove
@needs_nltk
@needs_real_data
def test_oov_report_on_real_captions_with_glove50() -> None:
    from mmsearch.data import Dataset

    tokens = Preprocessor().many(Dataset.open(REAL_CAPTIONS).train.captions[:3000])
    report = oov_report("glove-wiki-gigaword-50", tokens)
    assert report.error is None and 0 < report.oov_words < 0.1 * report.vocab_size
    assert report.oov_tokens >= report.oov_words
    events: Counter[str] = Counter()
    kv = load_vectors("glove-wiki-gigaword-50", events=events)  # converted once: now memory-mapped from the cache
    assert kv.vector_size == 50 and events == {"hit:vectors": 1}
    assert isinstance(kv.vectors, np.memmap)


def test_captions_word2vec_is_reproducible() -> None:
    sentences = [["dog", "runs", "park"], ["cat", "sleeps", "sofa"], ["dog", "cat", "play"]] * 30
    vocab = Vocabulary.build(sentences)
    a = embedding_matrix(vocab, "captions-word2vec", dim=16, sentences=sentences, sentences_key="k1", seed=3)
    assert a.vectors.shape == (len(vocab), 16) and a.oov_words == []
    code = ("from mmsearch.text import Vocabulary, embedding_matrix\n"
            "s=[['dog','runs','park'],['cat','sleeps','sofa'],['dog','cat','play']]*30\n"
            "m=embedding_matrix(Vocabulary.build(s),'captions-word2vec',dim=16,sentences=s,sentences_key='k1',seed=3)\n"
            "print(repr(float(m.vectors[2,0])))")
    env = {**os.environ, "MMSEARCH_CACHE_DIR": os.environ["MMSEARCH_CACHE_DIR"] + "-fresh", "PYTHONHASHSEED": "123"}
    other = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert float(other.stdout.strip()) == pytest.approx(float(a.vectors[2, 0]), abs=1e-6)


def test_offline_corpus_fails_with_clear_message_without_touching_the_network(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("offline (MMSEARCH_OFFLINE=1), yet a connection was attempted")

    monkeypatch.setenv("GENSIM_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(socket, "create_connection", no_network)
    with pytest.raises(AssetMissingError) as err:
        load_vectors("glove-twitter-100")
    assert "glove-twitter-100" in str(err.value) and str(tmp_path) in str(err.value)
    assert "api.load('glove-twitter-100')" in str(err.value)  # what to run on a connected machine


def test_offline_gensim_load_prints_no_traceback(tmp_path: Path) -> None:
    """An installed corpus loads offline through its gensim-data reader, without gensim's
    catalogue refresh (which logs a 50-line traceback when GitHub is unreachable)."""
    import gzip

    folder = tmp_path / "gensim-data" / "glove-wiki-gigaword-50"
    folder.mkdir(parents=True)
    with gzip.open(folder / "glove-wiki-gigaword-50.gz", "wt") as handle:
        handle.write("2 3\ndog 0.1 0.2 0.3\ncat 0.3 0.2 0.1\n")
    (folder / "__init__.py").write_text(  # gensim-data's own reader layout
        "import os\nfrom gensim.models import KeyedVectors\n\n\ndef load_data():\n"
        "    return KeyedVectors.load_word2vec_format(os.path.join(os.path.dirname(__file__), "
        "'glove-wiki-gigaword-50.gz'))\n")
    code = ("import logging; logging.basicConfig(level=logging.INFO)\n"
            "from mmsearch.text import load_vectors\n"
            "kv = load_vectors('glove-wiki-gigaword-50')\n"
            "print(kv.vector_size, sorted(kv.key_to_index))")
    env = {**os.environ, "MMSEARCH_CACHE_DIR": str(tmp_path / "cache"), "MMSEARCH_OFFLINE": "1",
           "GENSIM_DATA_DIR": str(tmp_path / "gensim-data")}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "3 ['cat', 'dog']", proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "non-fatal exception" not in proc.stderr


def test_unknown_corpus_lists_valid_names() -> None:
    with pytest.raises(ConfigError) as err:
        resolve_corpus("glove-twiter-100")
    assert "glove-twitter-100" in str(err.value) and "captions-word2vec" in str(err.value)


@pytest.mark.parametrize("header", ["", "2 3\n"])  # GloVe text has none; word2vec text starts with "rows dim"
def test_local_vector_text_file(tmp_path: Path, header: str) -> None:
    path = tmp_path / "vecs.txt"
    path.write_text(f"{header}dog 0.1 0.2 0.3\ncat 0.3 0.2 0.1\n")
    assert resolve_corpus(f"file:{path}").dim == 3
    kv = load_vectors(f"file:{path}")
    assert kv.vector_size == 3 and "cat" in kv.key_to_index


@pytest.mark.parametrize("suffix", [".kv", ".model"])
def test_a_pickle_based_vector_file_is_refused_before_it_is_read_with_the_safe_formats(
        tmp_path: Path, suffix: str) -> None:
    """gensim's .kv/.model files are pickles: loading one runs what it holds. A config naming one
    fails validation, reading nothing, and says which formats are read and how to convert."""
    import pickle

    from mmsearch.config import load_experiment

    marker = tmp_path / "ran"
    path = tmp_path / f"vectors{suffix}"
    path.write_bytes(pickle.dumps(_RunsCode(marker)))
    with pytest.raises(ConfigError) as err:
        load_experiment("cpu", {"text.corpus": f"file:{path}"})
    text = str(err.value)
    assert "text.corpus" in text and "pickle" in text and ".bin" in text and "save_word2vec_format" in text, text
    assert not marker.exists()
    bin_path = tmp_path / "vectors.bin"  # the conversion the message gives reads back
    from gensim.models import KeyedVectors

    kv = KeyedVectors(vector_size=3)
    kv.add_vectors(["dog", "cat"], np.array([[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]], dtype=np.float32))
    kv.save_word2vec_format(str(bin_path), binary=True)
    assert load_vectors(f"file:{bin_path}").vector_size == 3


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


@needs_nltk
def test_the_cache_holds_arrays_and_json_and_never_runs_what_it_reads(tmp_path: Path, small: dict,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import pickle

    from mmsearch.config import load_experiment
    from mmsearch.pipeline import Workspace

    cache = tmp_path / "cache"
    monkeypatch.setenv("MMSEARCH_CACHE_DIR", str(cache))
    cfg = load_experiment("cpu", {"data.path": small["data.path"]})
    tokens = Workspace(cfg).tokens
    assert Workspace(cfg).tokens == tokens  # a cache hit, from JSON
    vecs = tmp_path / "vecs.txt"
    vecs.write_text("dog 0.1 0.2 0.3\ncat 0.3 0.2 0.1\n")
    first = load_vectors(f"file:{vecs}")
    again = load_vectors(f"file:{vecs}")  # from the cache: an array and a word list
    assert isinstance(again.vectors, np.memmap) and again.index_to_key == first.index_to_key == ["dog", "cat"]
    assert np.allclose(again["cat"], [0.3, 0.2, 0.1])
    files = [p for p in cache.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} >= {".json", ".npy"}
    assert not [p for p in files if p.read_bytes()[:1] == b"\x80"], "a pickle in the cache"
    # A cache file replaced by a pickle that would run code is read as data and refused, never run.
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self) -> tuple:
            return (os.system, (f"touch {marker}",))

    [entry] = (cache / "tokens").rglob("*.json")
    entry.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ValueError):
        _ = Workspace(cfg).tokens
    assert not marker.exists()
