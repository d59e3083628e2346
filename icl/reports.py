"""Study reports: the tables (Markdown and CSV) and figures (PNG) of a results folder.

Each report kind reads the collected runs under a folder, computes its tables with
``icl.studies`` and draws with ``icl.plots``; files land in the same folder.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from icl import plots, studies
from icl.errors import unknown_name
from icl.results import (
    balance_table,
    format_table,
    rule_runs,
    rule_table,
    summarise_seeds,
    write_summary,
)

REPORTS = ("curve", "labels", "templates", "label_words", "shots", "rules")
METRIC_NAMES = {"accuracy": "accuracy (%)", "macro_f1": "macro-F1 (%)"}
ABLATION_SETTINGS = [
    "no demos",
    "gold",
    "random",
    "ood_inputs",
    "random_words",
    "no_labels",
    "labels_only",
]


def _write_table(root: Path, stem: str, frame: pd.DataFrame, index: bool = True) -> str:
    text = studies.markdown(frame, index=index)
    (root / f"{stem}.md").write_text(text + "\n")
    frame.to_csv(root / f"{stem}.csv", index=index)
    return text


def tables(kind: str, root: Path, runs: pd.DataFrame | None = None) -> str:
    """Write the tables of a report kind under root; return them as Markdown.

    ``runs`` is the collected table of root's runs; without it they are collected here.
    """
    root = Path(root)
    runs = write_summary(root)[0] if runs is None else runs
    if kind == "curve":
        return format_table(summarise_seeds(runs))
    if kind == "labels":
        parts = []
        for metric in ("macro_f1", "accuracy"):
            wide = studies.pivot_text(studies.settings_table(runs, metric), "task", "setting")
            parts.append(f"{metric} (mean ± std over seeds, %)\n\n")
            parts.append(_write_table(root, f"labels_{metric}", wide) + "\n\n")
        return "".join(parts)
    if kind == "templates":
        table = studies.template_table(runs)
        stats = studies.perplexity_correlations(table)
        _write_table(root, "templates", table, index=False)
        return _write_table(root, "perplexity_correlation", stats, index=False)
    if kind == "label_words":
        return _write_table(root, "label_words", studies.label_words_table(runs))
    if kind == "shots":
        shots = studies.shots_table(runs)
        _write_table(root, "shots", shots, index=False)
        return _write_table(root, "early_ascent", studies.early_ascent_table(shots), index=False)
    if kind == "rules":
        return rules_tables(root, runs)
    raise unknown_name("report", kind, REPORTS)


def rules_tables(root: Path, runs: pd.DataFrame) -> str:
    """Accuracy per k and scoring rule (Zhao et al.'s Table 4 form); the prediction balance
    before and after calibration, with p_cf."""
    by_rule = summarise_seeds(rule_runs(runs))
    parts = [
        "accuracy per scoring rule (mean ± std over seeds, %)\n\n",
        _write_table(root, "rules_accuracy", rule_table(by_rule)) + "\n",
    ]
    if "calibrated" in set(by_rule["scored_rule"]):
        parts.append("\nprediction shares per class before and after calibration, and p_cf\n\n")
        parts.append(_write_table(root, "rules_balance", balance_table(by_rule)) + "\n")
    return "".join(parts)


def figures(
    kind: str,
    root: Path,
    metric: str = "accuracy",
    out: Path | None = None,
    runs: pd.DataFrame | None = None,
) -> list[Path]:
    """Draw the figures of a report kind into root (the curve into ``out`` when given); return
    their paths. ``runs`` as for ``tables``."""
    root = Path(root)
    runs = write_summary(root)[0] if runs is None else runs
    ylabel = METRIC_NAMES[metric]
    if kind == "curve":
        out = out or root / f"{metric}_vs_k.png"
        return [plots.plot_accuracy_vs_k(runs, out, metric=metric)]
    if kind == "labels":
        # Min et al. report macro-F1 for classification; the figures follow them
        table = studies.settings_table(runs, "macro_f1")
        correct = studies.correct_percent_table(runs, "macro_f1")
        zero = table[table["setting"] == "no demos"]
        return [
            plots.plot_setting_bars(
                table,
                root / "labels_gold_vs_random.png",
                ["no demos", "gold", "random"],
                METRIC_NAMES["macro_f1"],
                "no demonstrations, gold and random labels (k=16, ± std over seeds)",
            ),
            plots.plot_setting_bars(
                table,
                root / "labels_ablations.png",
                ABLATION_SETTINGS,
                METRIC_NAMES["macro_f1"],
                "what matters in demonstrations (k=16, ± std over seeds)",
            ),
            plots.plot_correct_percent(
                correct, zero, root / "labels_correct_share.png", METRIC_NAMES["macro_f1"]
            ),
        ]
    if kind == "templates":
        table = studies.template_table(runs)
        stats = studies.perplexity_correlations(table)
        return [plots.plot_perplexity_scatter(table, stats, root / "templates_perplexity.png")]
    if kind == "label_words":
        table = studies.label_words_bars(runs)
        return [
            plots.plot_setting_bars(
                table,
                root / "label_words.png",
                list(dict.fromkeys(table["setting"])),
                METRIC_NAMES["accuracy"],
                "label words (positive/negative), ± std over seeds",
            )
        ]
    if kind == "shots":
        shots = studies.shots_table(runs, metric)
        ascent = studies.early_ascent_table(shots)
        return [plots.plot_shots_curve(shots, ascent, root / f"shots_{metric}.png", ylabel)]
    if kind == "rules":
        out = root / f"{metric}_vs_k_by_rule.png"
        return [plots.plot_accuracy_vs_k(rule_runs(runs), out, metric=metric, by="scored_rule")]
    raise unknown_name("report", kind, REPORTS)
