"""Study reports: the tables (Markdown and CSV) and figures (PNG) of a results folder.

Each report kind reads the collected runs under a folder, computes its tables with
``icl.studies.tables`` and draws with ``icl.plots``; files land in the same folder.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from icl import plots
from icl.demos import ABLATION_SETTINGS, NO_DEMOS
from icl.errors import ICLError, unknown_name
from icl.methods import summary_metrics
from icl.results import collect_runs, rule_runs, summarise_seeds, write_summary
from icl.studies import tables as study_tables

REPORTS = ("curve", "labels", "templates", "label_words", "shots", "rules")
METRIC_NAMES = {"accuracy": "accuracy (%)", "macro_f1": "macro-F1 (%)"}


def metrics_of(runs: pd.DataFrame) -> list[str]:
    """The metrics the methods of these runs average over seeds (the first: the headline)."""
    return summary_metrics(runs["method"].unique() if "method" in runs else [None])


def summary(root: Path) -> pd.DataFrame:
    """Collect the runs under root into the summary files; return the runs table."""
    runs = collect_runs(root)
    write_summary(root, runs, metrics_of(runs))
    return runs


def check_metric(runs: pd.DataFrame, metric: str) -> None:
    """Fail with the metrics there are when the runs lack the one asked for."""
    if metric not in runs:
        numeric = runs.select_dtypes("number").columns
        raise ICLError(f"no metric {metric!r} in these runs; numeric columns: {', '.join(numeric)}")


def _write_table(root: Path, stem: str, frame: pd.DataFrame, index: bool = True) -> str:
    text = study_tables.markdown(frame, index=index)
    (root / f"{stem}.md").write_text(text + "\n")
    frame.to_csv(root / f"{stem}.csv", index=index)
    return text


def tables(kind: str, root: Path, runs: pd.DataFrame | None = None) -> str:
    """Write the tables of a report kind under root; return them as Markdown.

    ``runs`` is the collected table of root's runs; without it they are collected here.
    """
    root = Path(root)
    runs = summary(root) if runs is None else runs
    if kind == "curve":
        metrics = metrics_of(runs)
        return study_tables.curve_table(summarise_seeds(runs, metrics), metrics[0])
    if kind == "labels":
        parts = []
        for metric in ("macro_f1", "accuracy"):
            wide = study_tables.pivot_text(
                study_tables.settings_table(runs, metric), "task", "setting"
            )
            parts.append(f"{metric} (mean ± std over seeds, %)\n\n")
            parts.append(_write_table(root, f"labels_{metric}", wide) + "\n\n")
        return "".join(parts)
    if kind == "templates":
        table = study_tables.template_table(runs)
        stats = study_tables.perplexity_correlations(table)
        _write_table(root, "templates", table, index=False)
        return _write_table(root, "perplexity_correlation", stats, index=False)
    if kind == "label_words":
        return _write_table(root, "label_words", study_tables.label_words_table(runs))
    if kind == "shots":
        shots = study_tables.shots_table(runs)
        _write_table(root, "shots", shots, index=False)
        return _write_table(
            root, "early_ascent", study_tables.early_ascent_table(shots), index=False
        )
    if kind == "rules":
        return rules_tables(root, runs)
    raise unknown_name("report", kind, REPORTS)


def rules_tables(root: Path, runs: pd.DataFrame) -> str:
    """Accuracy per k and scoring rule (Zhao et al.'s Table 4 form); the prediction balance
    before and after calibration, with p_cf."""
    by_rule = summarise_seeds(rule_runs(runs), metrics_of(runs))
    parts = [
        "accuracy per scoring rule (mean ± std over seeds, %)\n\n",
        _write_table(root, "rules_accuracy", study_tables.rule_table(by_rule)) + "\n",
    ]
    if "calibrated" in set(by_rule["scored_rule"]):
        parts.append("\nprediction shares per class before and after calibration, and p_cf\n\n")
        parts.append(
            _write_table(root, "rules_balance", study_tables.balance_table(by_rule)) + "\n"
        )
    return "".join(parts)


def figures(
    kind: str,
    root: Path,
    metric: str | None = None,
    out: Path | None = None,
    runs: pd.DataFrame | None = None,
) -> list[Path]:
    """Draw the figures of a report kind into root (the curve into ``out`` when given); return
    their paths. ``metric`` defaults to the runs' headline; ``runs`` as for ``tables``."""
    root = Path(root)
    runs = summary(root) if runs is None else runs
    metric = metric or metrics_of(runs)[0]
    check_metric(runs, metric)
    ylabel = METRIC_NAMES.get(metric, metric.replace("_", " "))
    if kind == "curve":
        out = out or root / f"{metric}_vs_k.png"
        return [plots.plot_accuracy_vs_k(runs, out, metric=metric)]
    if kind == "labels":
        # Min et al. report macro-F1 for classification; the figures follow them
        table = study_tables.settings_table(runs, "macro_f1")
        correct = study_tables.correct_percent_table(runs, "macro_f1")
        zero = table[table["setting"] == NO_DEMOS]
        return [
            plots.plot_setting_bars(
                table,
                root / "labels_gold_vs_random.png",
                [NO_DEMOS, "gold", "random"],
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
        table = study_tables.template_table(runs)
        stats = study_tables.perplexity_correlations(table)
        return [plots.plot_perplexity_scatter(table, stats, root / "templates_perplexity.png")]
    if kind == "label_words":
        table = study_tables.label_words_bars(runs)
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
        shots = study_tables.shots_table(runs, metric)
        ascent = study_tables.early_ascent_table(shots)
        return [plots.plot_shots_curve(shots, ascent, root / f"shots_{metric}.png", ylabel)]
    if kind == "rules":
        out = root / f"{metric}_vs_k_by_rule.png"
        return [plots.plot_accuracy_vs_k(rule_runs(runs), out, metric=metric, by="scored_rule")]
    raise unknown_name("report", kind, REPORTS)
