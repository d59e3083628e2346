"""Run files (predictions, metrics, config), resume checks, and the collected results table."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pandas as pd

METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.jsonl"
CONFIG_FILE = "config.yaml"
SUMMARY_STEM = "summary"
SEEDS_SUMMARY_STEM = "summary_seeds"

# the config values that identify a cell; runs that share all but the seed are averaged
IDENTITY_COLUMNS = [
    "task",
    "template",
    "label_words",
    "model",
    "k",
    "labels",
    "sampling",
    "per_example",
    "nested",
    "ood_corpus",
    "n_test",
    "eval_seed",
    "engine",
    "rule",
    "task_version",
    "harness_version",
]
SEED_COLUMN = "seed"
SUMMARY_METRICS = [
    "accuracy",
    "macro_f1",
    "share_demo_labels_correct",
    "zero_shot_perplexity",
    "kshot_perplexity",
    "accuracy_vs_permuted",
]


def _write_atomic(path: Path, text: str) -> None:
    """Write beside the target and rename over it, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_predictions(out_dir: Path, rows: list[dict]) -> None:
    text = "".join(json.dumps(row) + "\n" for row in rows)
    _write_atomic(Path(out_dir) / PREDICTIONS_FILE, text)


def write_metrics(out_dir: Path, metrics: dict) -> None:
    """Written last: its presence means the cell finished."""
    _write_atomic(Path(out_dir) / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")


def read_metrics(out_dir: Path) -> dict | None:
    path = Path(out_dir) / METRICS_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text())


def finished_cell(out_dir: Path, identity: dict) -> dict | None:
    """The metrics of a finished run of the same cell in out_dir, if there is one."""
    metrics = read_metrics(out_dir)
    if metrics is None:
        return None
    same = all(metrics.get(key) == value for key, value in identity.items())
    return metrics if same else None


def read_predictions(out_dir: Path) -> list[dict]:
    with open(Path(out_dir) / PREDICTIONS_FILE) as handle:
        return [json.loads(line) for line in handle]


def _flatten(metrics: dict, run_dir: Path, root: Path) -> dict:
    row = {k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}
    for name, share in (metrics.get("prediction_share") or {}).items():
        row[f"prediction_share_{name}"] = share
    row["run_dir"] = str(run_dir.relative_to(root)) if run_dir != root else "."
    return row


def collect_runs(root: Path) -> pd.DataFrame:
    """One row per finished run under root (every metrics.json below it)."""
    root = Path(root)
    rows = [
        _flatten(json.loads(path.read_text()), path.parent, root)
        for path in sorted(root.rglob(METRICS_FILE))
    ]
    if not rows:
        raise FileNotFoundError(f"no {METRICS_FILE} under {root}: nothing has finished there yet")
    frame = pd.DataFrame(rows)
    sort_by = [c for c in ["task", "model", "template", "labels", "k", SEED_COLUMN] if c in frame]
    return frame.sort_values(sort_by).reset_index(drop=True)


def summarise_seeds(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and count over seeds for every cell."""
    keys = [c for c in IDENTITY_COLUMNS if c in runs]
    metrics = [c for c in SUMMARY_METRICS if c in runs]
    grouped = runs.groupby(keys, dropna=False)[metrics].agg(["mean", "std"])
    grouped.columns = [f"{metric}_{stat}" for metric, stat in grouped.columns]
    grouped["n_seeds"] = runs.groupby(keys, dropna=False)[SEED_COLUMN].nunique()
    return grouped.reset_index()


def write_summary(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Collect runs under root into summary.{csv,parquet} and summary_seeds.{csv,parquet}."""
    root = Path(root)
    runs = collect_runs(root)
    seeds = summarise_seeds(runs)
    for frame, stem in ((runs, SUMMARY_STEM), (seeds, SEEDS_SUMMARY_STEM)):
        _write_atomic(root / f"{stem}.csv", frame.to_csv(index=False))
        frame.to_parquet(root / f"{stem}.parquet", index=False)
    return runs, seeds


def format_table(seeds: pd.DataFrame) -> str:
    """Accuracy mean ± std per k (rows) and label setting (columns), as plain text."""
    frame = seeds.copy()
    frame["cell"] = [
        f"{m:.3f} ± {0.0 if pd.isna(s) else s:.3f}"
        for m, s in zip(frame["accuracy_mean"], frame["accuracy_std"])
    ]
    index = [c for c in ["task", "model", "template", "k"] if c in frame]
    table = frame.pivot_table(index=index, columns="labels", values="cell", aggfunc="first")
    return table.to_string()
