"""Loaded models kept for the cells of one process, with one score memo.

Hydra's default launcher runs a sweep's cells one after another in one process: the model is
loaded once, and the scores of identical prompts (every k=0 cell, every zero-shot perplexity)
are computed once. The memo's entries are keyed by model fingerprint and live as long as the
store keeps its models; it is cleared when a model is let go.
"""

from __future__ import annotations

import logging
import time

from omegaconf import OmegaConf

from icl.lm.loading import LanguageModel, load_language_model
from icl.lm.scorer import ScoreMemo

log = logging.getLogger(__name__)


class ModelStore:
    """Keeps the last ``keep`` loaded models (a target and its draft model) and a score memo."""

    def __init__(self, load=load_language_model, keep: int = 2) -> None:
        self._load, self._keep = load, keep
        self._models: dict[str, LanguageModel] = {}
        self.memo = ScoreMemo()

    def get(self, model_cfg) -> LanguageModel:
        """The model of this config, loaded on first use; the oldest goes past ``keep``."""
        key = OmegaConf.to_yaml(OmegaConf.structured(model_cfg), resolve=True)
        if key not in self._models:
            while len(self._models) >= self._keep:
                del self._models[next(iter(self._models))]
                self.memo.clear()  # its entries may belong to the model that went
            started = time.perf_counter()
            self._models[key] = self._load(model_cfg)
            log.info("loaded model %s in %.1f s", model_cfg.name, time.perf_counter() - started)
        return self._models[key]


# the store icl-run's cells share within one process
PROCESS_MODELS = ModelStore()
