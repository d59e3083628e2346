"""The score memo: scores already computed, kept for as long as its owner keeps it.

Identical prompts recur across the cells of a sweep (every k=0 cell, whatever its label
setting or seed, scores the same prompts; every cell needs the same zero-shot perplexities),
so the runner keeps one memo beside each loaded model and hands it to the cells that use the
model. Entries are keyed by the model's fingerprint, so a changed model (fine-tuned weights,
another dtype) never reads another's scores.
"""

from __future__ import annotations

from dataclasses import dataclass

from icl.lm.engines import score_requests
from icl.lm.requests import ScoreStats
from icl.lm.score_cache import ScoreCache


class ScoreMemo:
    """Scored requests per (model fingerprint, engine, whether the query NLL was read)."""

    def __init__(self) -> None:
        self._tables: dict[tuple[str, str, bool], dict] = {}

    def view(self, lm, engine: str, want_query: bool) -> dict:
        """The table of one model, engine and want_query: request -> ScoreResult."""
        return self._tables.setdefault((lm.fingerprint, engine, want_query), {})

    def __len__(self) -> int:
        return sum(len(table) for table in self._tables.values())

    def clear(self) -> None:
        self._tables.clear()


@dataclass
class Scorer:
    """A loaded model with the engine, batch size and memo a cell scores with."""

    lm: object
    engine: str
    batch_size: int | str
    memo: ScoreMemo | None = None
    # per-example prompts: score the requests of unshared prefixes together (icl.lm.grouping)
    merge_prefixes: bool = False
    # the cross-process score cache (icl.lm.score_cache), for the passes that ask to persist
    cache: ScoreCache | None = None

    def score(
        self,
        requests,
        want_query: bool = False,
        progress: bool | str = False,
        persist: bool = False,
        stats: ScoreStats | None = None,
    ):
        """Each request's ScoreResult (the prompt's NLL too with ``want_query``); ``persist``:
        requests that do not depend on demonstrations, read from and kept in the cache."""
        return score_requests(
            self.lm, requests, self.engine, self.batch_size, want_query, progress, self.memo,
            merge=self.merge_prefixes, cache=self.cache if persist else None, stats=stats,
        )  # fmt: skip
