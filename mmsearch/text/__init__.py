"""Captions: preprocessing, vocabulary and sequences, word-vector corpora and OOV reports."""

from mmsearch.text._preprocess import (
    TOKENIZERS,
    PreprocessConfig,
    Preprocessor,
    require_nltk,
)
from mmsearch.text._vectors import (
    CAPTIONS_WORD2VEC,
    GENSIM_DATA,
    EmbeddingMatrix,
    OovReport,
    corpus_asset,
    embedding_matrix,
    load_vectors,
    oov_report,
    resolve_corpus,
)
from mmsearch.text._vocab import PAD_ID, UNK_ID, Vocabulary

__all__ = [
    "TOKENIZERS", "PreprocessConfig", "Preprocessor", "require_nltk", "CAPTIONS_WORD2VEC", "GENSIM_DATA",
    "EmbeddingMatrix", "OovReport", "corpus_asset", "embedding_matrix", "load_vectors", "oov_report", "resolve_corpus", "PAD_ID", "UNK_ID", "Vocabulary",
]
