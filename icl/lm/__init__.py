"""The language-model backend: loading models and running the forward passes scoring needs."""

from __future__ import annotations

from icl.lm.engines import ENGINES, ScoreRequest, ScoreResult, score_requests
from icl.lm.loading import LanguageModel, load_language_model, tokenizer_adds_bos

__all__ = [
    "ENGINES",
    "LanguageModel",
    "ScoreRequest",
    "ScoreResult",
    "load_language_model",
    "score_requests",
    "tokenizer_adds_bos",
]
