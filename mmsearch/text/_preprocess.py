"""Caption preprocessing as in the paper (6.1.2), each step switchable.

Steps, in order: case folding, removing punctuation, removing digits, tokenizing, removing stop
words, lemmatizing. NLTK provides the stop-word list, the WordNet lemmatizer and the Punkt
tokenizer; when their data is missing the error says exactly what to download and where.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Annotated

from pydantic import ConfigDict, Field

from mmsearch._registry import Registry
from mmsearch._settings import Settings
from mmsearch.errors import AssetMissingError

NLTK_RESOURCES = {
    "stopwords": "corpora/stopwords",
    "wordnet": "corpora/wordnet",
    "punkt_tab": "tokenizers/punkt_tab",
}


def require_nltk(*names: str) -> None:
    """Fail fast (no download attempt) naming the nltk.download calls and NLTK_DATA."""
    import nltk

    missing = []
    for name in names:
        try:
            nltk.data.find(NLTK_RESOURCES[name])
        except LookupError:
            missing.append(name)
    if missing:
        calls = "; ".join(f"nltk.download({m!r})" for m in missing)
        raise AssetMissingError(
            f"NLTK data missing: {', '.join(missing)}. On a connected machine run: "
            f"python -c \"import nltk; {calls}\" or copy the data into a folder listed in NLTK_DATA "
            f"(searched now: {', '.join(nltk.data.path[:4])}, ...). "
            f"Or switch the step off in the config (text.preprocess)."
        )


TOKENIZERS: Registry[Callable[[], Callable[[str], list[str]]]] = Registry("tokenizer")


@TOKENIZERS.register("word_tokenize")
def _word_tokenize() -> Callable[[str], list[str]]:
    require_nltk("punkt_tab")
    from nltk.tokenize import word_tokenize

    return word_tokenize


@TOKENIZERS.register("wordpunct")
def _wordpunct() -> Callable[[str], list[str]]:
    from nltk.tokenize import wordpunct_tokenize

    return wordpunct_tokenize


@TOKENIZERS.register("whitespace")
def _whitespace() -> Callable[[str], list[str]]:
    return str.split


class PreprocessConfig(Settings):
    """Caption cleaning; defaults are the paper's (6.1.2: all steps on)."""

    model_config = ConfigDict(frozen=True)  # hashable: serving tokenises a batch once per config

    lowercase: bool = Field(True, description="case folding")
    remove_punctuation: bool = Field(True, description="remove punctuation marks")
    remove_digits: bool = Field(True, description="remove digits")
    remove_stopwords: bool = Field(True, description="remove NLTK's English stop words (179 words)")
    tokenizer: Annotated[str, TOKENIZERS.validator] = Field(
        "word_tokenize", description="registered tokenizer: word_tokenize (NLTK Punkt), wordpunct, whitespace")
    lemmatize: bool = Field(True, description="WordNet lemmatizer (nouns), so 'dogs' and 'dog' share one vector")


_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")
_DIGITS = re.compile(r"\d+")


class Preprocessor:
    def __init__(self, config: PreprocessConfig = PreprocessConfig()) -> None:
        self.config = config
        self._tokenize = TOKENIZERS.get(config.tokenizer)()
        self._stopwords: frozenset[str] = frozenset()
        if config.remove_stopwords:
            require_nltk("stopwords")
            from nltk.corpus import stopwords

            self._stopwords = frozenset(stopwords.words("english"))
        self._lemma: Callable[[str], str] | None = None
        if config.lemmatize:
            require_nltk("wordnet")
            from nltk.stem import WordNetLemmatizer

            lemmatizer = WordNetLemmatizer()
            self._lemma = lru_cache(maxsize=None)(lemmatizer.lemmatize)

    def __call__(self, caption: str) -> list[str]:
        c = self.config
        text = caption.lower() if c.lowercase else caption
        if c.remove_punctuation:
            text = _PUNCT.sub(" ", text)
        if c.remove_digits:
            text = _DIGITS.sub(" ", text)
        tokens = [t for t in self._tokenize(text) if t.strip()]
        if c.remove_stopwords:
            tokens = [t for t in tokens if t.lower() not in self._stopwords]
        if self._lemma is not None:
            tokens = [self._lemma(t) for t in tokens]
        return tokens

    def many(self, captions: Sequence[str]) -> list[list[str]]:
        return [self(c) for c in captions]
