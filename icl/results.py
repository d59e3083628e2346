"""Run files (predictions, metrics, config), resume checks, and the collected results table."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pandas as pd

from icl.config import SCORING_RULES

METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.jsonl"
CONFIG_FILE = "config.yaml"
SUMMARY_STEM = "summary"
SEEDS_SUMMARY_STEM = "summary_seeds"
RULES_SUMMARY_STEM = "summary_rules"

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
    "extra_rules",
    "content_free",
    "domain_premise",
    # in the long form of the rule columns (rule_runs): the rule a row's metrics belong to
    "scored_rule",
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


# identity keys added after runs were written, with the value those runs had
LATER_IDENTITY_KEYS = {
    "extra_rules": [],
    "content_free": ["N/A", "", "[MASK]"],
    "domain_premise": None,
}


def finished_cell(out_dir: Path, identity: dict) -> dict | None:
    """The metrics of a finished run of the same cell in out_dir, if there is one."""
    metrics = read_metrics(out_dir)
    if metrics is None:
        return None
    same = all(
        metrics.get(key, LATER_IDENTITY_KEYS.get(key)) == value for key, value in identity.items()
    )
    return metrics if same else None


def read_config(out_dir: Path):
    """The RunConfig a run saved (keys added since then take their defaults)."""
    from omegaconf import OmegaConf

    from icl.config import RunConfig

    stored = OmegaConf.load(Path(out_dir) / CONFIG_FILE)
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(RunConfig), stored))


def read_predictions(out_dir: Path) -> list[dict]:
    with open(Path(out_dir) / PREDICTIONS_FILE) as handle:
        return [json.loads(line) for line in handle]


def _flatten(metrics: dict, run_dir: Path, root: Path) -> dict:
    row = {k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}
    for key in ("extra_rules", "content_free"):  # identity lists, as one comparable value
        if key in metrics:
            row[key] = json.dumps(metrics[key])
    for name, share in (metrics.get("prediction_share") or {}).items():
        row[f"prediction_share_{name}"] = share
    for rule, scored in (metrics.get("rules") or {}).items():
        row[f"{rule}_accuracy"] = scored["accuracy"]
        row[f"{rule}_macro_f1"] = scored["macro_f1"]
        total = sum(scored["prediction_counts"].values())
        for name, count in scored["prediction_counts"].items():
            row[f"{rule}_share_{name}"] = count / total if total else float("nan")
    for name, p in (metrics.get("p_cf") or {}).items():
        row[f"p_cf_{name}"] = p
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


def rule_columns(runs: pd.DataFrame) -> list[str]:
    """The per-rule metric columns of the collected table (``calibrated_accuracy``, ...)."""
    prefixes = tuple(f"{rule}_" for rule in SCORING_RULES) + ("p_cf_",)
    return [c for c in runs.columns if c.startswith(prefixes)]


def rule_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, rule): the rule's accuracy, macro-F1 and prediction shares.

    The long form of the rule columns, under the names the primary rule's metrics have
    (``accuracy``, ``macro_f1``, ``prediction_share_<class>``) and ``scored_rule``; runs with
    no per-rule metrics give one row each, for their primary rule.
    """
    base = runs.drop(columns=rule_columns(runs))
    p_cf = runs[[c for c in runs.columns if c.startswith("p_cf_")]]
    frames = []
    for rule in SCORING_RULES:
        if f"{rule}_accuracy" not in runs:
            continue
        done = runs[f"{rule}_accuracy"].notna()
        ours = [c for c in runs.columns if c.startswith(f"{rule}_share_")]
        frame = base[done].drop(columns=[c for c in base if c.startswith("prediction_share_")])
        frame = frame.assign(
            scored_rule=rule,
            accuracy=runs.loc[done, f"{rule}_accuracy"],
            macro_f1=runs.loc[done, f"{rule}_macro_f1"],
            **{f"prediction_share_{c[len(rule) + 7 :]}": runs.loc[done, c] for c in ours},
        )
        frames.append(pd.concat([frame, p_cf[done]], axis=1))
    if not frames:
        # runs from before scoring.rules: each holds its one (primary) rule's metrics
        return runs.assign(scored_rule=runs.get("rule", "direct"))
    order = {rule: i for i, rule in enumerate(SCORING_RULES)}
    long = pd.concat(frames, ignore_index=True)
    return long.sort_values(
        [c for c in ["task", "model", "template", "k"] if c in long] + ["scored_rule"],
        key=lambda col: col.map(order) if col.name == "scored_rule" else col,
        kind="stable",
    ).reset_index(drop=True)


def summarise_seeds(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and count over seeds for every cell."""
    keys = [c for c in IDENTITY_COLUMNS if c in runs]
    extra = [c for c in runs.columns if c.startswith("prediction_share_")] + rule_columns(runs)
    metrics = [c for c in SUMMARY_METRICS if c in runs] + extra
    grouped = runs.groupby(keys, dropna=False)[metrics].agg(["mean", "std"])
    grouped.columns = [f"{metric}_{stat}" for metric, stat in grouped.columns]
    grouped["n_seeds"] = runs.groupby(keys, dropna=False)[SEED_COLUMN].nunique()
    return grouped.reset_index()


def write_summary(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Collect runs under root into summary.{csv,parquet} and summary_seeds.{csv,parquet}.

    Runs that report several rules also give summary_rules.{csv,parquet}: mean and std over
    seeds per (cell, rule), from the long form ``rule_runs``.
    """
    root = Path(root)
    runs = collect_runs(root)
    seeds = summarise_seeds(runs)
    frames = [(runs, SUMMARY_STEM), (seeds, SEEDS_SUMMARY_STEM)]
    if rule_columns(runs):
        frames.append((summarise_seeds(rule_runs(runs)), RULES_SUMMARY_STEM))
    for frame, stem in frames:
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


def _mean_std(mean: float, std: float, scale: float = 100.0) -> str:
    return f"{scale * mean:.1f} ± {0.0 if pd.isna(std) else scale * std:.1f}"


def rule_table(rule_seeds: pd.DataFrame) -> pd.DataFrame:
    """Accuracy (%) mean ± std over seeds per k (rows) and rule (columns): Zhao et al.'s Table 4."""
    frame = rule_seeds.copy()
    frame["cell"] = [_mean_std(m, s) for m, s in zip(frame["accuracy_mean"], frame["accuracy_std"])]
    index = [c for c in ["task", "model", "template", "labels", "n_test", "k"] if c in frame]
    table = frame.pivot_table(index=index, columns="scored_rule", values="cell", aggfunc="first")
    table = table[[r for r in SCORING_RULES if r in table.columns]]
    table.columns.name = None
    return table


def balance_table(rule_seeds: pd.DataFrame, rules=("direct", "calibrated")) -> pd.DataFrame:
    """Prediction shares per class (mean over seeds) per k for each of ``rules``, and p_cf."""
    frame = rule_seeds[rule_seeds["scored_rule"].isin(rules)]
    shares = [c for c in frame.columns if c.startswith("prediction_share_") and c.endswith("_mean")]
    names = " / ".join(c[len("prediction_share_") : -len("_mean")] for c in shares)
    p_cf = [f"p_cf_{c[len('prediction_share_') :]}" for c in shares]
    index = [c for c in ["task", "model", "template", "labels", "n_test", "k"] if c in frame]
    columns = {
        f"{rule} predictions ({names})": frame[frame["scored_rule"] == rule].set_index(index)[
            shares
        ]
        for rule in rules
    }
    if all(c in frame for c in p_cf):
        calibrated = frame[frame["scored_rule"] == rules[-1]].set_index(index)
        columns[f"p_cf ({names})"] = calibrated[p_cf]
    cells = {
        label: values.apply(lambda row: " / ".join(f"{v:.2f}" for v in row), axis=1)
        for label, values in columns.items()
    }
    return pd.concat(cells, axis=1)
