"""The collected results table: one row per finished run under a folder, the runs' per-example
outcomes, the long form of the rule columns, and summaries over seeds. The tables of the
studies are built from it in ``icl.studies.tables``."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from icl.identity import DEFAULTS_LEFT_OUT, LIST_FIELDS, SEED_FIELD, group_columns
from icl.results import (
    CONFIG_FILE,
    LOCK_FILE,
    METRICS_FILE,
    PREDICTIONS_FILE,
    UnreadableMetrics,
    read_metrics,
    read_predictions,
    write_text_atomic,
)
from icl.scoring import SCORING_RULES

SUMMARY_STEM = "summary"
SEEDS_SUMMARY_STEM = "summary_seeds"
RULES_SUMMARY_STEM = "summary_rules"
# in the long form of the rule columns (rule_runs): the rule a row's metrics belong to
SCORED_RULE = "scored_rule"
# a generation run's share of answers that are no label word (not a class)
INVALID_SHARE = "prediction_share_invalid"


def _flatten(metrics: dict, run_dir: Path, root: Path) -> dict:
    row = {k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}
    for key in LIST_FIELDS:  # identity lists, as one comparable value
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


# what a run folder holds from its start (Hydra's .hydra, the lock) or a run that stopped
HYDRA_DIR = ".hydra"
RUN_MARKERS = (HYDRA_DIR, LOCK_FILE, CONFIG_FILE, PREDICTIONS_FILE)


def incomplete_runs(root: Path) -> list[str]:
    """The run folders under root with no finished result: unfinished (no metrics.json) or
    unreadable (a corrupt one); each line says which and how to finish it."""
    root = Path(root)
    found = []
    folders = {p.parent for marker in RUN_MARKERS for p in root.rglob(marker)}
    folders |= {p.parent for p in root.rglob(METRICS_FILE)}
    # Hydra's own .hydra/config.yaml marks the run folder above it, not a run of its own
    folders = {f for f in folders if HYDRA_DIR not in f.relative_to(root).parts}
    for folder in sorted(folders):
        try:
            if read_metrics(folder) is None:
                found.append(f"{folder}: unfinished (no {METRICS_FILE}); rerun its sweep")
        except UnreadableMetrics as err:
            found.append(f"{folder}: unreadable ({err}); rerun its sweep to redo it")
    return found


def collect_runs(root: Path) -> pd.DataFrame:
    """One row per finished run under root (every readable metrics.json below it; the others
    are listed by ``incomplete_runs``)."""
    root = Path(root)
    rows = []
    for path in sorted(root.rglob(METRICS_FILE)):
        try:
            metrics = read_metrics(path.parent)
        except UnreadableMetrics:
            continue
        rows.append(_flatten(metrics, path.parent, root))
    if not rows:
        raise FileNotFoundError(f"no {METRICS_FILE} under {root}: nothing has finished there yet")
    frame = pd.DataFrame(rows)
    # a setting left out of metrics.json at its default (selection, order, format) reads as
    # that default wherever other runs here set it
    for column, default in DEFAULTS_LEFT_OUT.items():
        if column in frame:
            frame[column] = frame[column].fillna(default)
    sort_by = [c for c in ["task", "model", "template", "labels", "k", SEED_FIELD] if c in frame]
    return frame.sort_values(sort_by).reset_index(drop=True)


def _generated_rows(run_dir: str, lines: list[dict], primary: str, n_classes: int) -> list[dict]:
    """A generation run's per-example outcomes (its first answer; an invalid one is -1),
    filed under the run's scoring rule so they pair with other runs of the same cell."""
    return [
        {"run_dir": run_dir, SCORED_RULE: primary, "example_id": str(line["example_id"]),
         "pred": -1 if line["prediction_index"] is None else line["prediction_index"],
         "gold": line["gold_index"], "n_classes": n_classes, "correct": bool(line["correct"])}
        for line in lines
    ]  # fmt: skip


def _example_rows(run_dir: str, lines: list[dict], primary: str, n_classes: int) -> list[dict]:
    """A run's per-example outcomes, one row per (example, rule computed)."""
    if lines and "generations" in lines[0]:
        return _generated_rows(run_dir, lines, primary, n_classes)
    rows = []
    for line in lines:
        if "correct" not in line or "option_logprob" not in line:
            return []  # a method whose rows are not classifications
        classes = list(line["option_logprob"])
        by_rule = line.get("predictions_by_rule") or {primary: line["prediction"]}
        gold = classes.index(line["gold"])
        for rule, predicted in by_rule.items():
            pred = classes.index(predicted)
            rows.append(
                {"run_dir": run_dir, SCORED_RULE: rule, "example_id": str(line["example_id"]),
                 "pred": pred, "gold": gold, "n_classes": len(classes), "correct": pred == gold}
            )  # fmt: skip
    return rows


def collect_examples(root: Path, runs: pd.DataFrame) -> pd.DataFrame:
    """Per-example outcomes of the collected runs, read from each run's predictions.jsonl:
    one row per (run_dir, scored_rule, example_id) with the predicted and gold class indices
    and ``correct``. Runs without predictions (or not of a classifying method) give none."""
    root = Path(root)
    rows = []
    primaries = runs["rule"] if "rule" in runs else pd.Series(None, index=runs.index)
    # classes per run: its prediction shares, but for the share of invalid answers
    shares = [c for c in runs.columns if c.startswith("prediction_share_") and c != INVALID_SHARE]
    n_classes = runs[shares].notna().sum(axis=1) if shares else pd.Series(0, index=runs.index)
    for run_dir, primary, n in zip(runs["run_dir"], primaries, n_classes):
        path = root / run_dir / PREDICTIONS_FILE
        if path.exists():
            primary = primary if isinstance(primary, str) else "direct"
            rows += _example_rows(run_dir, read_predictions(path.parent), primary, int(n))
    columns = ["run_dir", SCORED_RULE, "example_id", "pred", "gold", "n_classes", "correct"]
    return pd.DataFrame(rows, columns=columns)


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
            **{SCORED_RULE: rule},
            accuracy=runs.loc[done, f"{rule}_accuracy"],
            macro_f1=runs.loc[done, f"{rule}_macro_f1"],
            **{
                "prediction_share_" + c.removeprefix(f"{rule}_share_"): runs.loc[done, c]
                for c in ours
            },
        )
        frames.append(pd.concat([frame, p_cf[done]], axis=1))
    if not frames:
        # runs from before scoring.rules: each holds its one (primary) rule's metrics
        return runs.assign(**{SCORED_RULE: runs.get("rule", "direct")})
    order = {rule: i for i, rule in enumerate(SCORING_RULES)}
    long = pd.concat(frames, ignore_index=True)
    return long.sort_values(
        [c for c in ["task", "model", "template", "k"] if c in long] + [SCORED_RULE],
        key=lambda col: col.map(order) if col.name == SCORED_RULE else col,
        kind="stable",
    ).reset_index(drop=True)


def summarise_seeds(runs: pd.DataFrame, metrics: list[str], intervals=None) -> pd.DataFrame:
    """Mean, std and count over seeds of ``metrics`` (and the per-class and per-rule columns)
    for every cell; ``intervals(runs, keys, metrics)``, when given, adds a frame of interval
    columns per cell (``icl.effects.cell_intervals``) after the count."""
    keys = [c for c in group_columns(SCORED_RULE) if c in runs]
    extra = [c for c in runs.columns if c.startswith("prediction_share_")] + rule_columns(runs)
    chosen = [c for c in metrics if c in runs] + extra
    grouped = runs.groupby(keys, dropna=False)[chosen].agg(["mean", "std"])
    grouped.columns = [f"{metric}_{stat}" for metric, stat in grouped.columns]
    grouped["n_seeds"] = runs.groupby(keys, dropna=False)[SEED_FIELD].nunique()
    grouped = grouped.reset_index()
    if intervals is None:
        return grouped
    found = intervals(runs, keys, [c for c in metrics if c in runs])
    # merged on a string form of the keys: missing values match each other
    as_text = {c: f"__{c}" for c in keys}
    left = grouped.assign(**{v: grouped[c].map(str) for c, v in as_text.items()})
    right = found.assign(**{v: found[c].map(str) for c, v in as_text.items()}).drop(columns=keys)
    merged = left.merge(right, on=list(as_text.values()), how="left")
    return merged.drop(columns=list(as_text.values()))


def write_summary(root: Path, runs: pd.DataFrame, metrics: list[str], intervals=None):
    """Write the collected runs of root to summary.{csv,parquet} and their mean and std over
    seeds (of ``metrics``, with ``intervals`` as in ``summarise_seeds``) to
    summary_seeds.{csv,parquet}; return the latter.

    Runs that report several rules also give summary_rules.{csv,parquet}: mean and std over
    seeds per (cell, rule), from the long form ``rule_runs``.
    """
    root = Path(root)
    seeds = summarise_seeds(runs, metrics, intervals)
    frames = [(runs, SUMMARY_STEM), (seeds, SEEDS_SUMMARY_STEM)]
    if rule_columns(runs):
        frames.append((summarise_seeds(rule_runs(runs), metrics, intervals), RULES_SUMMARY_STEM))
    for frame, stem in frames:
        write_text_atomic(root / f"{stem}.csv", frame.to_csv(index=False))
        frame.to_parquet(root / f"{stem}.parquet", index=False)
    return seeds
