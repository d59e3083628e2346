"""One cell from start to end: skip it if it finished, plan it, run its method, write its files.

Everything that can be wrong with the input is checked when the method plans the cell, before
a model loads; the run files are written last, ``metrics.json`` after the rest.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from omegaconf import OmegaConf

from icl import results
from icl.config import RunConfig
from icl.lm.store import PROCESS_MODELS, ModelStore
from icl.methods import get_method

log = logging.getLogger(__name__)


def run_cell(cfg: RunConfig, load_model=None) -> dict:
    """Run one cell into cfg.out_dir and return its metrics; a finished cell is skipped.

    Cells of one process share its loaded model and score memo; a ``load_model`` of the
    caller's (model config -> LanguageModel) gets a store of its own for this cell.
    """
    out_dir = Path(cfg.out_dir or ".")
    method = get_method(cfg.method.name)
    cell = method.identity(cfg)
    done = None if cfg.overwrite else results.finished_cell(out_dir, cell)
    if done is not None:
        log.info("skipping finished cell %s (overwrite=true reruns it)", out_dir)
        return done
    started = time.perf_counter()
    plan = method.plan(cfg, cell)
    models = PROCESS_MODELS if load_model is None else ModelStore(load_model)
    output = method.run(plan, models)
    metrics = {**cell.to_dict(), **output.metrics, "wall_s": time.perf_counter() - started}
    out_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.structured(cfg), out_dir / results.CONFIG_FILE, resolve=True)
    results.write_predictions(out_dir, output.rows)
    results.write_metrics(out_dir, metrics)
    return metrics
