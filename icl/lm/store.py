"""Loaded models kept for the cells of one process, each with its score memo.

Hydra's default launcher runs a sweep's cells one after another in one process: the model is
loaded once, and the scores of identical prompts (every k=0 cell, every zero-shot perplexity)
are computed once. The memo lives exactly as long as its model stays loaded.
"""

from __future__ import annotations

import logging
import time

from omegaconf import OmegaConf

from icl.lm.loading import LanguageModel, load_language_model
from icl.lm.scorer import ScoreMemo

log = logging.getLogger(__name__)


class ModelStore:
    """Keeps the last loaded model (one at a time) and a score memo for it."""

    def __init__(self, load=load_language_model) -> None:
        self._load = load
        self._key: str | None = None
        self._lm: LanguageModel | None = None
        self.memo = ScoreMemo()

    def get(self, model_cfg) -> LanguageModel:
        """The model of this config, loaded on first use; another config replaces it."""
        key = OmegaConf.to_yaml(OmegaConf.structured(model_cfg), resolve=True)
        if key != self._key:
            self._lm, self._key = None, None
            self.memo.clear()  # its entries belong to the model that goes
            started = time.perf_counter()
            self._lm = self._load(model_cfg)
            self._key = key
            log.info("loaded model %s in %.1f s", model_cfg.name, time.perf_counter() - started)
        return self._lm


# the store icl-run's cells share within one process
PROCESS_MODELS = ModelStore()
