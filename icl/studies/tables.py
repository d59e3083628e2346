"""The studies' tables: pure functions from the collected runs (a DataFrame) to a DataFrame
or text (Min et al.'s settings, Gonen et al.'s perplexity correlation, Gao et al.'s label
words, the shots curve and its early ascent, Zhao et al.'s rules)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from icl import effects
from icl.demos import CHART_ORDER, NO_DEMOS, correct_percent
from icl.errors import ICLError
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


def with_intervals(table, runs, examples, keys: list[str], metric: str) -> pd.DataFrame:
    """The table with the 95% interval of ``metric`` per ``keys`` (``ci_low``, ``ci_high``:
    the hierarchical bootstrap of ``icl.effects.cell_intervals``) when examples are given."""
    if examples is None:
        return table
    found = effects.cell_intervals(runs, examples, keys, [metric])
    found = found.rename(columns={f"{metric}_ci_low": "ci_low", f"{metric}_ci_high": "ci_high"})
    return table.merge(found, on=keys, how="left")


def settings_table(runs: pd.DataFrame, metric: str = "macro_f1", examples=None) -> pd.DataFrame:
    """Mean, std and seed count of a metric per (task, setting): the Min et al. bar charts;
    with per-example outcomes (``collect.collect_examples``), their 95% intervals too."""
    frame = runs.assign(setting=runs.apply(setting_name, axis=1))
    rows = []
    for (task, setting), group in frame.groupby(["task", "setting"]):
        mean, std, n = mean_std(group[metric])
        rows.append({"task": task, "setting": setting, "mean": mean, "std": std, "n_seeds": n})
    table = pd.DataFrame(rows)
    order = {s: i for i, s in enumerate(CHART_ORDER)}
    table["order"] = table["setting"].map(lambda s: order.get(s, len(order)))
    table = table.sort_values(["task", "order"]).drop(columns="order").reset_index(drop=True)
    return with_intervals(table, frame, examples, ["task", "setting"], metric)


def pivot_text(table: pd.DataFrame, index: str, columns: str) -> pd.DataFrame:
    """A mean ± std (percent) table with one row per ``index`` and a column per ``columns``."""
    frame = table.assign(cell=[mean_std_text(m, s) for m, s in zip(table["mean"], table["std"])])
    wide = frame.pivot(index=index, columns=columns, values="cell")
    ordered = [c for c in CHART_ORDER if c in wide.columns]
    return wide[ordered + [c for c in wide.columns if c not in ordered]]


def correct_percent_table(runs: pd.DataFrame, metric: str = "macro_f1", examples=None):
    """Metric against the share of gold labels (0-100%; gold is 100%), per task."""
    table = settings_table(runs, metric, examples)
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
    # a run with eval.zero_shot_perplexity=false holds null: NaN here, unranked, left out below
    runs = runs.assign(zero_shot_perplexity=pd.to_numeric(runs["zero_shot_perplexity"]))
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
    measured = table[table["zero_shot_perplexity"].notna()]
    for (task, model), group in measured.groupby(["task", "model"]):
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


def label_words_bars(runs: pd.DataFrame, examples=None) -> pd.DataFrame:
    """Accuracy mean and std per label-word pair ("task": a bar group) and k ("setting"), and
    the 95% intervals when per-example outcomes are given."""
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
    frame = frame.sort_values(["order", "k"]).drop(columns=["order", "k"]).reset_index(drop=True)
    if examples is None:
        return frame
    named = runs.dropna(subset=["label_words"])  # as groupby does above
    pairs = named.assign(
        task=named["label_words"].map(gao_notation), setting=named["k"].map("k={}".format)
    )
    return with_intervals(frame, pairs, examples, ["task", "setting"], "accuracy")


def label_words_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Accuracy mean ± std per label-word pair (rows) and k (columns), Gao et al. Table form."""
    bars = label_words_bars(runs)
    cells = bars.assign(cell=[mean_std_text(m, s) for m, s in zip(bars["mean"], bars["std"])])
    wide = cells.pivot(index="task", columns="setting", values="cell")
    wide = wide.loc[list(dict.fromkeys(bars["task"])), list(dict.fromkeys(bars["setting"]))]
    wide.index.name, wide.columns.name = "label words", None
    return wide


def shots_table(runs: pd.DataFrame, metric: str = "accuracy", examples=None) -> pd.DataFrame:
    """Mean and 95% interval (t over seeds: ``ci95``, the half-width) of a metric per (task,
    labels, k); with per-example outcomes, the hierarchical bootstrap's ``ci_low``, ``ci_high``."""
    from scipy.stats import t as student_t

    frame = runs.copy()
    # zero-shot cells are the same under every label setting: they start every curve
    zero = one_zero_shot_run(frame[frame["k"] == 0])
    rows = []
    settings = sorted(frame.loc[frame["k"] > 0, "labels"].unique())
    for (task, labels, k), group in frame[frame["k"] > 0].groupby(["task", "labels", "k"]):
        rows.append(_interval_row(task, labels, k, group[metric], student_t))
    for task, group in zero.groupby("task"):
        for labels in settings:
            rows.append(_interval_row(task, labels, 0, group[metric], student_t))
    table = pd.DataFrame(rows).sort_values(["task", "labels", "k"]).reset_index(drop=True)
    if examples is None:
        return table
    shots = with_intervals(table[table["k"] > 0], frame, examples, ["task", "labels", "k"], metric)
    zeros = with_intervals(table[table["k"] == 0], zero, examples, ["task"], metric)
    both = pd.concat([shots, zeros]).sort_values(["task", "labels", "k"])
    return both.reset_index(drop=True)


def one_zero_shot_run(zero: pd.DataFrame) -> pd.DataFrame:
    """One k=0 run per task and model. A sweep over seeds and label settings repeats the
    zero-shot cell (no demonstrations: the same prompts, the same predictions), so the table
    counts it once (``n``) and bootstraps one run; the interval itself would come out the same
    from the copies (``stats.distinct_seeds`` collapses them)."""
    keys = [c for c in ("task", "model") if c in zero]
    order = [c for c in ("seed", "labels") if c in zero]
    return zero.sort_values(order).drop_duplicates(subset=keys) if len(zero) else zero


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


DIP_COLUMNS = ("dip_difference", "dip_ci_low", "dip_ci_high", "dip_p")


def dip_test(runs: pd.DataFrame, examples: pd.DataFrame, task, labels, k) -> dict:
    """The paired accuracy difference between a curve's dip at k and k=0 (``icl.effects``),
    with its 95% interval and p-value; NaN unless exactly one matched pair of cells."""
    chosen = (runs["task"] == task) & (
        (runs["k"] == 0) | ((runs["k"] == k) & (runs["labels"] == labels))
    )
    table = effects.effects_table(runs[chosen], examples, ["k"])
    table = table[table["labels"] == labels]
    if len(table) != 1:
        return dict.fromkeys(DIP_COLUMNS, float("nan"))
    row = table.iloc[0]
    return dict(zip(DIP_COLUMNS, (row["difference"], row["ci_low"], row["ci_high"], row["p"])))


def early_ascent_table(shots: pd.DataFrame, runs=None, examples=None) -> pd.DataFrame:
    """The early ascent of every curve; with the runs and their per-example outcomes (accuracy
    curves), the dip's paired difference from k=0 with its CI and p (``dip_*``), and
    ``early_ascent_tested``: an early ascent whose dip's interval lies below zero."""
    rows = []
    for (task, labels), curve in shots.groupby(["task", "labels"]):
        row = {"task": task, "labels": labels, **early_ascent(curve)}
        if examples is not None and len(examples):
            dipped = row["lowest_k"] is not None
            test = dip_test(runs, examples, task, labels, row["lowest_k"]) if dipped else {}
            row.update({c: test.get(c, float("nan")) for c in DIP_COLUMNS})
            row["early_ascent_tested"] = bool(row["early_ascent"] and row["dip_ci_high"] < 0)
        rows.append(row)
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


def decoder_name(row) -> str:
    """How a generation cell decoded: greedy, or its sampling settings (T=0.7, top-p 0.9)."""
    if row.get("decoding") != "sample":
        return str(row.get("decoding"))
    parts = []
    if row.get("top_k"):
        parts.append(f"top-k {int(row['top_k'])}")
    if row.get("top_p") is not None and row["top_p"] < 1:
        parts.append(f"top-p {row['top_p']:g}")
    if not parts or row.get("temperature") != 1.0:
        parts.insert(0, f"T={row['temperature']:g}")
    return ", ".join(parts)


DECODING_METRICS = ("format_valid_rate", "accuracy", "scoring_accuracy")


def decoding_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Format validity, accuracy and label-word scoring accuracy (mean and std over seeds)
    per task, decoder and k."""
    if "format_valid_rate" not in runs:
        raise ICLError("the decoding report reads method=generate runs; these runs have none")
    frame = runs.assign(decoder=runs.apply(decoder_name, axis=1))
    rows = []
    for (task, decoder, k), group in frame.groupby(["task", "decoder", "k"]):
        row = {"task": task, "decoder": decoder, "k": int(k)}
        for metric in DECODING_METRICS:
            mean, std, n = mean_std(group[metric])
            row.update({f"{metric}_mean": mean, f"{metric}_std": std})
        rows.append({**row, "n_seeds": n})
    return pd.DataFrame(rows).sort_values(["task", "decoder", "k"]).reset_index(drop=True)


def decoding_text(table: pd.DataFrame) -> pd.DataFrame:
    """The decoding table as 'valid % / accuracy %' per (task, decoder) row and k column."""
    cells = table.assign(
        cell=[
            f"{100 * v:.0f} / {100 * a:.0f}"
            for v, a in zip(table["format_valid_rate_mean"], table["accuracy_mean"])
        ]
    )
    wide = cells.pivot(index=["task", "decoder"], columns="k", values="cell")
    wide.columns = [f"k={k}" for k in wide.columns]
    return wide
