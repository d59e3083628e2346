"""BM25 (Robertson & Zaragoza 2009), the lexical baseline of demonstration retrieval.

Scored by ``bm25s`` with Lucene's variant: for a query term t in document d,
idf(t) * tf / (tf + k1 * (1 - b + b * |d| / avgdl)), idf(t) = ln(1 + (N - df + 0.5) / (df +
0.5)), k1 = 1.5, b = 0.75 (Lucene 8 dropped the classic (k1 + 1) factor, which changes no
ranking); a document's score sums its query terms, each occurrence in the query once more.
Texts are lower-cased and cut into word tokens (``\\w+``), English stop words removed (bm25s's
list).
"""

from __future__ import annotations

import re

import numpy as np

K1 = 1.5
B = 0.75
_WORD = re.compile(r"\w+")


def stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN)


def tokens(text: str, drop: frozenset[str] = frozenset()) -> list[str]:
    """Lower-cased word tokens of a text, stop words dropped."""
    return [w for w in _WORD.findall(text.lower()) if w not in drop]


class BM25:
    """A BM25 index over a corpus; ``scores(query)`` gives every document's score."""

    def __init__(self, corpus: list[str], k1: float = K1, b: float = B, stop=None) -> None:
        import bm25s

        self.stop = stopwords() if stop is None else frozenset(stop)
        self.n = len(corpus)
        self.index = bm25s.BM25(k1=k1, b=b, method="lucene")
        self.index.index([tokens(t, self.stop) for t in corpus], show_progress=False)
        self.vocab = self.index.vocab_dict

    def scores(self, query: str) -> np.ndarray:
        """Every corpus document's score for the query (0 where no term is shared)."""
        known = [t for t in tokens(query, self.stop) if t in self.vocab]
        if not known:
            return np.zeros(self.n, dtype=np.float32)
        ids = [self.vocab[t] for t in known]
        return np.asarray(self.index.get_scores(ids), dtype=np.float32)
