"""The studies' tables: pure functions from the collected runs (a DataFrame) to a DataFrame
or text (Min et al.'s settings, Gonen et al.'s perplexity correlation, Gao et al.'s label
words, the shots curve and its early ascent, Zhao et al.'s rules)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from icl.demos import CHART_ORDER, NO_DEMOS, correct_percent
from icl.scoring import SCORING_RULES


def mean_std(values: pd.Series) -> tuple[float, float, int]:
    values = values.dropna()
    std = float(values.std()) if len(values) > 1 else 0.0
    return float(values.mean()), std, int(len(values))


def mean_std_text(mean: float, std: float, scale: float = 100.0, digits: int = 1) -> str:
    """'mean ± std', scaled (percent by default); a missing std (one seed) reads 0."""
    std = 0.0 if pd.isna(std) else std
    return f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}"


def setting_name(row) -> str:
    """The label a study chart gives a run: 'no demos' for k=0, else the label setting."""
    return NO_DEMOS if row["k"] == 0 else row["labels"]


def settings_table(runs: pd.DataFrame, metric: str = "macro_f1") -> pd.DataFrame:
    """Mean, std and seed count of a metric per (task, setting): the Min et al. bar charts."""
    frame = runs.assign(setting=runs.apply(setting_name, axis=1))
    rows = []
    for (task, setting), group in frame.groupby(["task", "setting"]):
        mean, std, n = mean_std(group[metric])
        rows.append({"task": task, "setting": setting, "mean": mean, "std": std, "n_seeds": n})
    table = pd.DataFrame(rows)
    order = {s: i for i, s in enumerate(CHART_ORDER)}
    table["order"] = table["setting"].map(lambda s: order.get(s, len(order)))
    return table.sort_values(["task", "order"]).drop(columns="order").reset_index(drop=True)


def pivot_text(table: pd.DataFrame, index: str, columns: str) -> pd.DataFrame:
    """A mean ± std (percent) table with one row per ``index`` and a column per ``columns``."""
    frame = table.assign(cell=[mean_std_text(m, s) for m, s in zip(table["mean"], table["std"])])
    wide = frame.pivot(index=index, columns=columns, values="cell")
    ordered = [c for c in CHART_ORDER if c in wide.columns]
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
    cells = bars.assign(cell=[mean_std_text(m, s) for m, s in zip(bars["mean"], bars["std"])])
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


def curve_table(seeds: pd.DataFrame, metric: str = "accuracy") -> str:
    """A metric's mean ± std per k (rows) and label setting (columns), as plain text."""
    frame = seeds.assign(
        cell=[
            mean_std_text(m, s, scale=1.0, digits=3)
            for m, s in zip(seeds[f"{metric}_mean"], seeds[f"{metric}_std"])
        ]
    )
    index = [c for c in ["task", "model", "template", "k"] if c in frame and frame[c].notna().any()]
    # runs without a label setting (a synthetic study) give one column, named by the metric
    columns = frame["labels"].astype(object).fillna(metric) if "labels" in frame else metric
    frame = frame.assign(labels=columns)
    table = frame.pivot_table(index=index, columns="labels", values="cell", aggfunc="first")
    # a combination with no finished run (icl-collect lists the unfinished cells below)
    return table.fillna("not finished").to_string()


def rule_table(rule_seeds: pd.DataFrame) -> pd.DataFrame:
    """Accuracy (%) mean ± std over seeds per k (rows) and rule (columns): Zhao et al.'s Table 4."""
    frame = rule_seeds.copy()
    frame["cell"] = [
        mean_std_text(m, s) for m, s in zip(frame["accuracy_mean"], frame["accuracy_std"])
    ]
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
