"""A theory study from its config to its files: run it (or find it finished), then report it.

The folder holds ``config.yaml``, one CSV per table and ``metrics.json`` (written last: its
presence means the computation finished), whose ``study``, ``config`` and ``harness_version``
name what produced the tables. A finished study of the same config is reported again without
being recomputed; a folder holding another config's results is refused unless overwrite=true.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

import icl
from icl import results
from icl.errors import ICLError
from icl.theory import get_theory

log = logging.getLogger(__name__)

IDENTITY_KEYS = ("study", "config", "harness_version")
# config fields that say how to run, not what is computed
NOT_IDENTITY = ("overwrite",)


def identity(name: str, cfg) -> dict:
    """What names a theory study's results: the study, its whole config, the harness version."""
    config = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_IDENTITY}
    return {"study": name, "config": config, "harness_version": icl.__version__}


def differences(stored: dict, wanted: dict, prefix: str = "") -> list[str]:
    """The keys whose values differ, as 'key: stored there, wanted here' lines."""
    lines = []
    for key in sorted({*stored, *wanted}):
        there, here = stored.get(key), wanted.get(key)
        if isinstance(there, dict) and isinstance(here, dict):
            lines += differences(there, here, f"{prefix}{key}.")
        elif there != here:
            lines.append(f"{prefix}{key}: {there!r} there, {here!r} here")
    return lines


def run_theory(name: str, cfg, root: Path, report_only: bool = False):
    """Compute (or find finished) the theory study ``name`` under ``root`` and report it.
    Returns (the report's text, its figure paths, the metrics)."""
    theory = get_theory(name)
    theory.check(cfg)
    root = Path(root)
    with results.cell_lock(root):
        frames, metrics = _finished_or_computed(theory, cfg, root, report_only)
    text, figures = theory.report(root, frames, cfg)
    return text, figures, metrics


def _stored_metrics(root: Path) -> dict | None:
    try:
        return results.read_metrics(root)
    except results.UnreadableMetrics as err:
        log.warning("%s: the study did not finish there and is run again", err)
        return None


def _finished_or_computed(theory, cfg, root: Path, report_only: bool):
    wanted = identity(theory.name, cfg)
    stored = _stored_metrics(root)
    same = stored is not None and all(stored.get(k) == v for k, v in wanted.items())
    if report_only:
        if stored is None or stored.get("study") != theory.name:
            raise ICLError(f"{root} holds no finished {theory.name} study to report")
        return read_tables(root, stored), stored
    if same and not getattr(cfg, "overwrite", False):
        log.info("%s: finished %s study found; reporting it (overwrite=true reruns)", root,
                 theory.name)  # fmt: skip
        return read_tables(root, stored), stored
    if stored is not None and not same and not getattr(cfg, "overwrite", False):
        differ = differences({k: stored.get(k) for k in IDENTITY_KEYS}, wanted)
        raise ICLError(
            f"{root} holds the results of another study or config ({'; '.join(differ)}); "
            f"choose another --dir, or add overwrite=true to replace them"
        )
    started = time.perf_counter()
    frames, headline = theory.compute(cfg)
    for table, frame in frames.items():
        results.write_text_atomic(root / f"{table}.csv", frame.to_csv(index=False))
    config_text = OmegaConf.to_yaml(OmegaConf.structured(cfg))
    results.write_text_atomic(root / results.CONFIG_FILE, config_text)
    metrics = {**wanted, **headline, "tables": sorted(frames)}
    metrics["wall_s"] = time.perf_counter() - started
    results.write_metrics(root, metrics)
    return frames, metrics


def read_tables(root: Path, metrics: dict) -> dict[str, pd.DataFrame]:
    """The tables a finished study wrote, by the names its metrics.json lists."""
    missing = [t for t in metrics.get("tables", []) if not (root / f"{t}.csv").is_file()]
    if missing:
        raise ICLError(f"{root} lacks {', '.join(missing)}.csv; rerun with overwrite=true")
    return {t: pd.read_csv(root / f"{t}.csv") for t in metrics.get("tables", [])}
