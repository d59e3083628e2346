"""The language-model backend: loading models and running the forward passes scoring needs.

``requests`` (what is scored), ``forward`` (shared forward helpers), ``batching`` (rows,
batches, batch size), ``engines`` (the three engines), ``scorer`` (the memo and the scorer a
cell uses), ``loading`` (hub, folder, GGUF, package and tiny models), ``prefix_attention``.
"""

from __future__ import annotations

from icl.lm.engines import ENGINES, score_requests
from icl.lm.loading import LanguageModel, load_language_model, tokenizer_adds_bos
from icl.lm.requests import ScoreRequest, ScoreResult
from icl.lm.scorer import ScoreMemo, Scorer

__all__ = [
    "ENGINES",
    "LanguageModel",
    "ScoreMemo",
    "ScoreRequest",
    "ScoreResult",
    "Scorer",
    "load_language_model",
    "score_requests",
    "tokenizer_adds_bos",
]
