"""Rankings of the demonstration pool for each test example: nearest by cosine similarity of
sentence embeddings (KATE, Liu et al. 2022), nearest made diverse by maximal marginal
relevance (Carbonell & Goldstein 1998), or best by BM25.

Pure functions of the embeddings or texts. Every ranking leaves out the pool entries a test
example must not see (itself, or a copy of its text), and breaks ties by pool index, so it is
the same on every run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from icl.errors import ICLError

# queries per similarity block: 256 x a 7,000-example pool is 7 MB of float32
CHUNK = 256
# knn_diverse picks among this many nearest candidates per demonstration asked for
MMR_POOL_FACTOR = 4
MMR_MIN_POOL = 32


@dataclass(frozen=True)
class Ranking:
    """Per test example: the chosen pool indices, best first, and each one's score."""

    indices: list[list[int]]
    scores: list[list[float]]


def top_k(scores: np.ndarray, k: int, excluded: list[int], what: str) -> tuple[list, list]:
    """The k best entries of one row of scores (ties by index), leaving out ``excluded``."""
    row = scores.astype(np.float64, copy=True)
    row[list(excluded)] = -np.inf
    available = len(row) - len(set(excluded))
    if k > available:
        raise ICLError(
            f"demos.k={k} is more than the {available} pool examples {what} may retrieve "
            f"(the pool has {len(row)}; {len(set(excluded))} are the example itself or copies "
            f"of it); lower demos.k or use a larger task.demo_split"
        )
    # a stable sort of the negated scores: equal scores keep pool order
    order = np.argsort(-row, kind="stable")[:k]
    return order.tolist(), row[order].tolist()


def knn(queries: np.ndarray, pool: np.ndarray, k: int, excluded: list[list[int]]) -> Ranking:
    """The k pool rows of highest cosine similarity to each query row (rows unit length)."""
    indices, scores = [], []
    for start in range(0, len(queries), CHUNK):
        block = queries[start : start + CHUNK] @ pool.T
        for j, row in enumerate(block):
            i = start + j
            chosen, values = top_k(row, k, excluded[i], f"for test example {i}")
            indices.append(chosen)
            scores.append(values)
    return Ranking(indices, scores)


def mmr(query: np.ndarray, pool: np.ndarray, candidates: list[int], k: int, lam: float):
    """k of the candidates by maximal marginal relevance: each pick maximises
    lam * sim(query, d) - (1 - lam) * max sim(d, picked); the first is the nearest."""
    vectors = pool[candidates]
    relevance = vectors @ query
    overlap = vectors @ vectors.T
    picked: list[int] = []
    closest = np.full(len(candidates), -np.inf)
    for _ in range(k):
        gain = lam * relevance - (1 - lam) * (closest if picked else 0.0)
        gain[picked] = -np.inf
        best = int(np.argmax(gain))  # ties: the earlier candidate, i.e. the nearer one
        picked.append(best)
        closest = np.maximum(closest, overlap[best])
    return [candidates[p] for p in picked], [float(relevance[p]) for p in picked]


def knn_diverse(queries, pool, k: int, excluded, lam: float) -> Ranking:
    """Maximal marginal relevance over each query's nearest candidates (scores: cosine)."""
    width = max(MMR_MIN_POOL, MMR_POOL_FACTOR * k)
    indices, scores = [], []
    for start in range(0, len(queries), CHUNK):
        block = queries[start : start + CHUNK] @ pool.T
        for j, row in enumerate(block):
            i = start + j
            what = f"for test example {i}"
            top_k(row, k, excluded[i], what)  # fails when fewer than k may be retrieved
            available = len(row) - len(set(excluded[i]))
            candidates, _ = top_k(row, min(width, available), excluded[i], what)
            chosen, values = mmr(queries[i], pool, candidates, k, lam)
            indices.append(chosen)
            scores.append(values)
    return Ranking(indices, scores)


def bm25(index, queries: list[str], k: int, excluded: list[list[int]]) -> Ranking:
    """The k pool texts of highest BM25 score for each query text (``index``: lexical.BM25)."""
    indices, scores = [], []
    for i, query in enumerate(queries):
        chosen, values = top_k(index.scores(query), k, excluded[i], f"for test example {i}")
        indices.append(chosen)
        scores.append(values)
    return Ranking(indices, scores)


def cosine_of(queries: np.ndarray, pool: np.ndarray, chosen: list[list[int]]) -> list[list]:
    """The cosine similarity of each query to each of its chosen pool rows."""
    return [(pool[c] @ q).tolist() if c else [] for q, c in zip(queries, chosen)]
