"""One cell from start to end: skip it if it finished, plan it, run its method, write its files.

Everything that can be wrong with the input is checked when the method plans the cell, before
a model loads; the run files are written last, ``metrics.json`` after the rest. A folder that
holds another cell's results is refused (``overwrite=true`` replaces them), and the folder's
lock keeps a second process from computing the same cell at the same time.
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
    with results.cell_lock(out_dir):
        return _run_locked(cfg, method, cell, out_dir, load_model)


def _run_locked(cfg: RunConfig, method, cell, out_dir: Path, load_model) -> dict:
    state = results.folder_state(out_dir, cell)
    if state.finished is not None and not cfg.overwrite:
        missing = method.missing(cfg, state.finished)
        if not missing:
            log.info("skipping finished cell %s (overwrite=true reruns it)", out_dir)
            return state.finished
        log.info("rerunning finished cell %s: it holds no %s", out_dir, ", ".join(missing))
    if state.other is not None and not cfg.overwrite:
        raise results.other_cell_error(out_dir, cell, state.other)
    started = time.perf_counter()
    plan = method.plan(cfg, cell)
    models = PROCESS_MODELS if load_model is None else ModelStore(load_model)
    output = method.run(plan, models)
    warnings = [*state.warnings, *getattr(plan, "warnings", ())]
    for warning in warnings:
        log.warning("%s: %s", out_dir, warning)
    metrics = {
        **cell.to_dict(),
        # the identity leaves these out at their defaults (older cells keep matching); here
        # every cell names them
        "prompt": prompt_layout(cfg),
        **output.metrics,
        "warnings": warnings,
        "wall_s": time.perf_counter() - started,
    }
    config_text = OmegaConf.to_yaml(OmegaConf.structured(cfg), resolve=True)
    results.write_run_files(out_dir, config_text, output.rows, metrics, output.files)
    return metrics


def prompt_layout(cfg: RunConfig) -> dict:
    """How the cell's prompts were laid out: which demonstrations, in what order and format."""
    return {"format": cfg.format, "selection": cfg.demos.selection, "order": cfg.demos.order}
