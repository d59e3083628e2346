"""The ready-made studies: which sweeps each runs, and the tables each reports.

A study is one or more ``icl-run`` multiruns of its experiment config (``conf/experiment``),
then tables (here) and figures (``icl.plots``) from the collected runs. Everything below the
registry is pure: a DataFrame of runs in, a DataFrame or text out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from icl.demos import correct_percent
from icl.errors import unknown_name

LOCAL_TASKS = ("sst2", "rotten_tomatoes", "agnews", "rte", "cb")


@dataclass(frozen=True)
class Study:
    """An experiment config, the extra sweeps it needs, and what it reports."""

    name: str
    # extra override sets, each one more multirun of the experiment (e.g. the zero-shot cells)
    extra_sweeps: tuple[tuple[str, ...], ...] = ()
    # one multirun per task, for sweeps whose values depend on the task (its templates)
    per_task: tuple[str, ...] = ()
    # the report kinds (tables and figures) of this study
    reports: tuple[str, ...] = field(default_factory=tuple)


STUDIES = {
    "demo": Study("demo", reports=("curve",)),
    "min2022_labels": Study(
        "min2022_labels",
        extra_sweeps=(("demos.k=0", "demos.labels=gold", "demos.seed=1"),),
        reports=("labels",),
    ),
    "template_sweep": Study("template_sweep", per_task=LOCAL_TASKS, reports=("templates",)),
    "label_words": Study("label_words", reports=("label_words",)),
    "shots_curve": Study("shots_curve", reports=("shots",)),
    "scoring_rules": Study("scoring_rules", reports=("rules",)),
}
QUICK_TASKS = {"template_sweep": ("sst2", "cb")}


def get_study(name: str) -> Study:
    if name not in STUDIES:
        raise unknown_name("study", name, STUDIES)
    return STUDIES[name]


def sweep_commands(study: Study, quick: bool, overrides: list[str]) -> list[list[str]]:
    """The icl-run argument lists that run a study (quick: its ``NAME_quick`` config)."""
    experiment = f"+experiment={study.name}_quick" if quick else f"+experiment={study.name}"
    tasks = QUICK_TASKS.get(study.name, study.per_task) if quick else study.per_task
    base = [[experiment, f"task={t}"] for t in tasks] or [[experiment]]
    commands = []
    for args in base:
        commands.append(args + overrides)
        for extra in study.extra_sweeps:
            # the extra sweep's own values win over the user's (e.g. its single zero-shot seed)
            fixed = {o.split("=", 1)[0] for o in extra}
            kept = [o for o in overrides if o.split("=", 1)[0] not in fixed]
            commands.append(args + list(extra) + kept)
    return commands


# ---------------------------------------------------------------- tables


def mean_std(values: pd.Series) -> tuple[float, float, int]:
    values = values.dropna()
    std = float(values.std()) if len(values) > 1 else 0.0
    return float(values.mean()), std, int(len(values))


def cell_text(mean: float, std: float, scale: float = 100.0) -> str:
    return f"{mean * scale:.1f} ± {std * scale:.1f}"


def setting_name(row) -> str:
    """The label a study chart gives a run: 'no demos' for k=0, else the label setting."""
    return "no demos" if row["k"] == 0 else row["labels"]


SETTING_ORDER = [
    "no demos",
    "gold",
    "random",
    "random_true_dist",
    "correct_75",
    "correct_50",
    "correct_25",
    "correct_0",
    "ood_inputs",
    "random_words",
    "no_labels",
    "labels_only",
]


def settings_table(runs: pd.DataFrame, metric: str = "macro_f1") -> pd.DataFrame:
    """Mean, std and seed count of a metric per (task, setting): the Min et al. bar charts."""
    frame = runs.assign(setting=runs.apply(setting_name, axis=1))
    rows = []
    for (task, setting), group in frame.groupby(["task", "setting"]):
        mean, std, n = mean_std(group[metric])
        rows.append({"task": task, "setting": setting, "mean": mean, "std": std, "n_seeds": n})
    table = pd.DataFrame(rows)
    order = {s: i for i, s in enumerate(SETTING_ORDER)}
    table["order"] = table["setting"].map(lambda s: order.get(s, len(order)))
    return table.sort_values(["task", "order"]).drop(columns="order").reset_index(drop=True)


def pivot_text(table: pd.DataFrame, index: str, columns: str) -> pd.DataFrame:
    """A mean ± std (percent) table with one row per ``index`` and a column per ``columns``."""
    frame = table.assign(cell=[cell_text(m, s) for m, s in zip(table["mean"], table["std"])])
    wide = frame.pivot(index=index, columns=columns, values="cell")
    ordered = [c for c in SETTING_ORDER if c in wide.columns]
    return wide[ordered + [c for c in wide.columns if c not in ordered]]


def correct_percent_table(runs: pd.DataFrame, metric: str = "macro_f1") -> pd.DataFrame:
    """Metric against the share of gold labels (0-100%; gold is 100%), per task."""
    table = settings_table(runs, metric)
    percent = table["setting"].map(correct_share)
    return table.assign(percent=percent).dropna(subset=["percent"]).sort_values(["task", "percent"])


def correct_share(setting: str) -> float | None:
    """The share of gold labels a setting shows: 100 for gold, P for correct_P, else None."""
    if setting == "gold":
        return 100.0
    percent = correct_percent(setting)
    return None if percent is None else float(percent)


def template_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Accuracy and mean prompt perplexity per (task, template), ranked by perplexity."""
    keys = ["task", "model", "template"]
    table = (
        runs.groupby(keys)[["accuracy", "macro_f1", "zero_shot_perplexity"]].mean().reset_index()
    )
    table["perplexity_rank"] = table.groupby(["task", "model"])["zero_shot_perplexity"].rank()
    return table.sort_values(["task", "model", "perplexity_rank"]).reset_index(drop=True)


def perplexity_correlations(table: pd.DataFrame, n_lowest: int = 3) -> pd.DataFrame:
    """Spearman's rho between accuracy and perplexity per task, its p-value, and the accuracy
    of the lowest-perplexity templates against the rest (Gonen et al. 2022)."""
    from scipy.stats import spearmanr

    rows = []
    for (task, model), group in table.groupby(["task", "model"]):
        rho, p = spearmanr(group["zero_shot_perplexity"], group["accuracy"])
        lowest = group["perplexity_rank"] <= n_lowest
        rows.append(
            {
                "task": task,
                "model": model,
                "n_templates": len(group),
                "spearman_rho": float(rho),
                "p_value": float(p),
                "accuracy_lowest_ppl": float(group.loc[lowest, "accuracy"].mean()),
                "accuracy_others": float(group.loc[~lowest, "accuracy"].mean()),
                "lowest_ppl_templates": ", ".join(group.loc[lowest, "template"]),
            }
        )
    return pd.DataFrame(rows)


def gao_notation(label_words: str) -> str:
    """'terrible/great' (class order: negative/positive) as Gao et al. write it: great/terrible."""
    return "/".join(reversed(label_words.split("/")))


# the rows of Gao et al.'s label-word table, in their order (positive/negative)
GAO_ORDER = ["great/terrible", "good/bad", "cat/dog", "dog/cat", "terrible/great"]


def label_words_bars(runs: pd.DataFrame) -> pd.DataFrame:
    """Accuracy mean and std per label-word pair ("task": a bar group) and k ("setting")."""
    rows = []
    for (words, k), group in runs.groupby(["label_words", "k"]):
        mean, std, n = mean_std(group["accuracy"])
        pair = gao_notation(words)
        rows.append(
            {"task": pair, "setting": f"k={k}", "k": k, "mean": mean, "std": std, "n_seeds": n}
        )
    frame = pd.DataFrame(rows)
    frame["order"] = frame["task"].map(
        lambda w: GAO_ORDER.index(w) if w in GAO_ORDER else len(GAO_ORDER)
    )
    return frame.sort_values(["order", "k"]).drop(columns=["order", "k"]).reset_index(drop=True)


def label_words_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Accuracy mean ± std per label-word pair (rows) and k (columns), Gao et al. Table form."""
    bars = label_words_bars(runs)
    cells = bars.assign(cell=[cell_text(m, s) for m, s in zip(bars["mean"], bars["std"])])
    wide = cells.pivot(index="task", columns="setting", values="cell")
    wide = wide.loc[list(dict.fromkeys(bars["task"])), list(dict.fromkeys(bars["setting"]))]
    wide.index.name, wide.columns.name = "label words", None
    return wide


def shots_table(runs: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """Mean and 95% interval (t over seeds) of a metric per (task, labels, k)."""
    from scipy.stats import t as student_t

    frame = runs.copy()
    # zero-shot cells are the same under every label setting: they start every curve
    zero = frame[frame["k"] == 0]
    rows = []
    settings = sorted(frame.loc[frame["k"] > 0, "labels"].unique())
    for (task, labels, k), group in frame[frame["k"] > 0].groupby(["task", "labels", "k"]):
        rows.append(_interval_row(task, labels, k, group[metric], student_t))
    for task, group in zero.groupby("task"):
        for labels in settings:
            rows.append(_interval_row(task, labels, 0, group[metric], student_t))
    return pd.DataFrame(rows).sort_values(["task", "labels", "k"]).reset_index(drop=True)


def _interval_row(task, labels, k, values: pd.Series, student_t) -> dict:
    mean, std, n = mean_std(values)
    half = float(student_t.ppf(0.975, n - 1) * std / np.sqrt(n)) if n > 1 else 0.0
    return {"task": task, "labels": labels, "k": int(k), "mean": mean, "ci95": half, "n": n}


def early_ascent(curve: pd.DataFrame) -> dict:
    """The early ascent of one curve (one task and label setting): its lowest point after k=0,
    the first k that beats zero-shot, and whether the low point comes before that rise (a dip
    below k=0 and then a rise above it, Lin & Lee 2024)."""
    curve = curve.sort_values("k")
    zero = float(curve.loc[curve["k"] == 0, "mean"].iloc[0])
    later = curve[curve["k"] > 0]
    above = later[later["mean"] > zero]
    first_above = int(above["k"].iloc[0]) if len(above) else None
    lowest = later.loc[later["mean"].idxmin()] if len(later) else None
    dips = lowest is not None and lowest["mean"] < zero
    return {
        "zero_shot": zero,
        "lowest_k": int(lowest["k"]) if dips else None,
        "lowest_minus_zero_shot": float(lowest["mean"] - zero) if dips else 0.0,
        "first_k_above": first_above,
        "early_ascent": bool(dips and first_above is not None and lowest["k"] < first_above),
    }


def early_ascent_table(shots: pd.DataFrame) -> pd.DataFrame:
    rows = [
        {"task": task, "labels": labels, **early_ascent(curve)}
        for (task, labels), curve in shots.groupby(["task", "labels"])
    ]
    return pd.DataFrame(rows).astype({"lowest_k": "Int64", "first_k_above": "Int64"})


def markdown(frame: pd.DataFrame, index: bool = True, digits: int = 3) -> str:
    """A GitHub-flavoured Markdown table (no extra dependency)."""
    frame = frame.reset_index() if index else frame

    def text(value) -> str:
        if isinstance(value, float):
            return (
                ""
                if np.isnan(value)
                else f"{value:.{digits}g}"
                if abs(value) < 1e-3
                else (f"{value:.{digits}f}")
            )
        return "" if value is None or value is pd.NA else str(value)

    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(text(v) for v in row) + " |" for row in frame.itertuples(False)]
    return "\n".join([header, rule, *body])
