"""Study reports: the tables (Markdown and CSV) and figures (PNG) of a results folder.

Each report kind reads the collected runs under a folder, computes its tables with
``icl.studies.tables`` and draws with ``icl.plots``; files land in the same folder.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from icl import effects, plots
from icl.collect import (
    collect_examples,
    collect_runs,
    rule_runs,
    summarise_seeds,
    write_summary,
)
from icl.demos import ABLATION_SETTINGS, NO_DEMOS
from icl.errors import ICLError, unknown_name
from icl.methods import summary_metrics
from icl.results import write_text_atomic
from icl.studies import finetune as finetune_
from icl.studies import selection as selection_
from icl.studies import tables as tables_

METRIC_NAMES = {"accuracy": "accuracy (%)", "macro_f1": "macro-F1 (%)"}


def metrics_of(runs: pd.DataFrame) -> list[str]:
    """The metrics the methods of these runs average over seeds (the first: the headline)."""
    return summary_metrics(runs["method"].unique() if "method" in runs else [None])


def summary(root: Path) -> pd.DataFrame:
    """Collect the runs under root into the summary files, with 95% intervals from their
    per-example predictions; return the runs table."""
    runs = collect_runs(root)
    write_summary(root, runs, metrics_of(runs), interval_maker(root, runs))
    return runs


def interval_maker(root: Path, runs: pd.DataFrame):
    """``summarise_seeds``'s intervals, from the per-example outcomes of root's runs."""
    examples = collect_examples(root, runs)

    def intervals(frame: pd.DataFrame, keys: list[str], metrics: list[str]) -> pd.DataFrame:
        return effects.cell_intervals(frame, examples, keys, metrics)

    return intervals


def check_metric(runs: pd.DataFrame, metric: str) -> None:
    """Fail with the metrics there are when the runs lack the one asked for."""
    if metric not in runs:
        numeric = runs.select_dtypes("number").columns
        raise ICLError(f"no metric {metric!r} in these runs; numeric columns: {', '.join(numeric)}")


def _write_table(root: Path, stem: str, frame: pd.DataFrame, index: bool = True) -> str:
    text = tables_.markdown(frame, index=index)
    (root / f"{stem}.md").write_text(text + "\n")
    frame.to_csv(root / f"{stem}.csv", index=index)
    return text


def effects_markdown(table: pd.DataFrame) -> str:
    """The effects in percentage points, with the matching values shared by every row said
    once above the table."""
    frame = table.copy()
    shared = [c for c in frame.columns[3:-6] if frame[c].map(str).nunique() == 1]
    head = ", ".join(f"{c}={frame[c].iloc[0]}" for c in shared if frame[c].notna().all())
    frame = frame.drop(columns=shared)
    for column, sign in (("difference", "+"), ("ci_low", ""), ("ci_high", "")):
        frame[column] = [f"{100 * v:{sign}.1f}" for v in frame[column]]
    frame["p"] = [f"{p:.2g}" for p in frame["p"]]
    frame = frame.rename(
        columns={"difference": "A - B (points)", "a": "A", "b": "B", "ci_low": "CI low",
                 "ci_high": "CI high"}
    )  # fmt: skip
    note = (
        "paired accuracy differences A - B, 95% CI from a hierarchical bootstrap (seeds, then "
        "test examples within seeds), p from a sign-flip permutation test"
    )
    return f"{note}\n\nin every row: {head or '-'}\n\n" + tables_.markdown(frame, index=False)


def write_effects(root: Path, runs: pd.DataFrame, columns: list[str] | None = None) -> str:
    """effects.csv and effects.md under root: paired effects along ``columns`` (every
    identity column that varies, by default); return the Markdown."""
    root = Path(root)
    table = effects.effects_table(runs, collect_examples(root, runs), columns)
    write_text_atomic(root / "effects.csv", table.to_csv(index=False))
    text = effects_markdown(table)
    write_text_atomic(root / "effects.md", text + "\n")
    return text


def curve_tables(root: Path, runs: pd.DataFrame) -> str:
    """The headline metric per k and label setting (no file: icl-collect prints it)."""
    metrics = metrics_of(runs)
    return tables_.curve_table(summarise_seeds(runs, metrics), metrics[0])


def labels_tables(root: Path, runs: pd.DataFrame) -> str:
    """Min et al.'s settings per task, in macro-F1 and in accuracy."""
    parts = []
    for metric in ("macro_f1", "accuracy"):
        wide = tables_.pivot_text(tables_.settings_table(runs, metric), "task", "setting")
        parts.append(f"{metric} (mean ± std over seeds, %)\n\n")
        parts.append(_write_table(root, f"labels_{metric}", wide) + "\n\n")
    return "".join(parts)


def templates_tables(root: Path, runs: pd.DataFrame) -> str:
    """Accuracy and perplexity per template; Spearman's rho per task."""
    table = tables_.template_table(runs)
    stats = tables_.perplexity_correlations(table)
    _write_table(root, "templates", table, index=False)
    return _write_table(root, "perplexity_correlation", stats, index=False)


def label_words_tables(root: Path, runs: pd.DataFrame) -> str:
    return _write_table(root, "label_words", tables_.label_words_table(runs))


def shots_tables(root: Path, runs: pd.DataFrame) -> str:
    """The shots curve with 95% intervals, and its early ascent with the dip's paired test."""
    examples = collect_examples(root, runs)
    shots = tables_.shots_table(runs, examples=examples)
    _write_table(root, "shots", shots, index=False)
    ascent = tables_.early_ascent_table(shots, runs, examples)
    return _write_table(root, "early_ascent", ascent, index=False)


def rules_tables(root: Path, runs: pd.DataFrame) -> str:
    """Accuracy per k and scoring rule (Zhao et al.'s Table 4 form); the prediction balance
    before and after calibration, with p_cf."""
    by_rule = summarise_seeds(rule_runs(runs), metrics_of(runs))
    parts = [
        "accuracy per scoring rule (mean ± std over seeds, %)\n\n",
        _write_table(root, "rules_accuracy", tables_.rule_table(by_rule)) + "\n",
    ]
    if "calibrated" in set(by_rule["scored_rule"]):
        parts.append("\nprediction shares per class before and after calibration, and p_cf\n\n")
        parts.append(_write_table(root, "rules_balance", tables_.balance_table(by_rule)) + "\n")
    return "".join(parts)


def bands(root: Path, runs: pd.DataFrame, metric: str, by: str) -> pd.DataFrame:
    """The 95% interval of a metric per figure panel, line (``by``) and k."""
    frame = runs.assign(**{by: runs[by].astype(object).fillna(metric) if by in runs else metric})
    keys = [k for k in plots.PANEL_KEYS if k in frame and frame[k].notna().any()]
    examples = collect_examples(root, runs)
    return effects.cell_intervals(frame, examples, [*keys, by, "k"], [metric])


def curve_figures(root: Path, runs: pd.DataFrame, metric: str, out: Path | None) -> list[Path]:
    out = out or root / f"{metric}_vs_k.png"
    band = bands(root, runs, metric, "labels")
    return [plots.plot_accuracy_vs_k(runs, out, metric=metric, bands=band)]


def labels_figures(root: Path, runs: pd.DataFrame, metric: str, out=None) -> list[Path]:
    """Min et al.'s bar charts and the share-of-correct-labels line, in macro-F1 as theirs."""
    examples = collect_examples(root, runs)
    table = tables_.settings_table(runs, "macro_f1", examples)
    correct = tables_.correct_percent_table(runs, "macro_f1", examples)
    zero = table[table["setting"] == NO_DEMOS]
    ylabel = METRIC_NAMES["macro_f1"]
    return [
        plots.plot_setting_bars(
            table,
            root / "labels_gold_vs_random.png",
            [NO_DEMOS, "gold", "random"],
            ylabel,
            "no demonstrations, gold and random labels (k=16, 95% CI)",
        ),
        plots.plot_setting_bars(
            table,
            root / "labels_ablations.png",
            ABLATION_SETTINGS,
            ylabel,
            "what matters in demonstrations (k=16, 95% CI)",
        ),
        plots.plot_correct_percent(correct, zero, root / "labels_correct_share.png", ylabel),
    ]


def templates_figures(root: Path, runs: pd.DataFrame, metric: str, out=None) -> list[Path]:
    table = tables_.template_table(runs)
    stats = tables_.perplexity_correlations(table)
    return [plots.plot_perplexity_scatter(table, stats, root / "templates_perplexity.png")]


def label_words_figures(root: Path, runs: pd.DataFrame, metric: str, out=None) -> list[Path]:
    table = tables_.label_words_bars(runs, collect_examples(root, runs))
    return [
        plots.plot_setting_bars(
            table,
            root / "label_words.png",
            list(dict.fromkeys(table["setting"])),
            METRIC_NAMES["accuracy"],
            "label words (positive/negative), 95% CI over seeds and test examples",
        )
    ]


def shots_figures(root: Path, runs: pd.DataFrame, metric: str, out=None) -> list[Path]:
    examples = collect_examples(root, runs)
    shots = tables_.shots_table(runs, metric, examples)
    ascent = tables_.early_ascent_table(shots, runs, examples if metric == "accuracy" else None)
    ylabel = METRIC_NAMES.get(metric, metric.replace("_", " "))
    return [plots.plot_shots_curve(shots, ascent, root / f"shots_{metric}.png", ylabel)]


def rules_figures(root: Path, runs: pd.DataFrame, metric: str, out=None) -> list[Path]:
    out = root / f"{metric}_vs_k_by_rule.png"
    long = rule_runs(runs)
    band = bands(root, long, metric, "scored_rule")
    return [plots.plot_accuracy_vs_k(long, out, metric=metric, by="scored_rule", bands=band)]


def decoding_tables(root: Path, runs: pd.DataFrame) -> str:
    """Validity and accuracy per task, decoder and k (and the full table as CSV)."""
    table = tables_.decoding_table(runs)
    _write_table(root, "decoding", table, index=False)
    return _write_table(root, "decoding_valid_accuracy", tables_.decoding_text(table))


def decoding_figures(root: Path, runs: pd.DataFrame, metric: str, out=None) -> list[Path]:
    return [plots.plot_decoding(tables_.decoding_table(runs), root / "decoding.png")]


def selection_tables(root: Path, runs: pd.DataFrame) -> str:
    """Accuracy per selection, label setting, format and k, with 95% intervals."""
    table = selection_.selection_table(runs, collect_examples(root, runs))
    _write_table(root, "selection", table, index=False)
    text = selection_.selection_text(table)
    return "accuracy (%), mean over seeds [95% CI]\n\n" + _write_table(
        root, "selection_accuracy", text
    )


def selection_figures(root: Path, runs: pd.DataFrame, metric: str, out=None) -> list[Path]:
    table = selection_.selection_table(runs, collect_examples(root, runs), metric)
    return [plots.plot_selection(table, root / f"selection_{metric}.png")]


def finetune_tables(root: Path, runs: pd.DataFrame) -> str:
    """Accuracy per label-word pair: zero-shot, ICL (32 demos), fine-tuned; Gao et al. beside."""
    bars = finetune_.finetune_bars(runs)
    _write_table(root, "finetune_vs_icl_bars", bars, index=False)
    text = _write_table(root, "finetune_vs_icl", finetune_.finetune_table(bars))
    return "accuracy (%), mean (std) over seeds ([n]: seeds when not 5)\n\n" + text


def finetune_figures(root: Path, runs: pd.DataFrame, metric: str, out=None) -> list[Path]:
    bars = finetune_.finetune_bars(runs)
    return [
        plots.plot_finetune(
            bars,
            finetune_.GAO_PROMPT_FT,
            finetune_.GAO_HEAD,
            root / f"finetune_vs_icl_{model}.png",
            model,
        )  # fmt: skip
        for model in dict.fromkeys(bars["model"])
    ]


# each report kind: its tables (root, runs) -> Markdown, its figures (root, runs, metric, out)
REPORT_KINDS = {
    "curve": (curve_tables, curve_figures),
    "labels": (labels_tables, labels_figures),
    "templates": (templates_tables, templates_figures),
    "label_words": (label_words_tables, label_words_figures),
    "shots": (shots_tables, shots_figures),
    "rules": (rules_tables, rules_figures),
    "decoding": (decoding_tables, decoding_figures),
    "selection": (selection_tables, selection_figures),
    "finetune": (finetune_tables, finetune_figures),
}
REPORTS = tuple(REPORT_KINDS)


def _kind(kind: str):
    if kind not in REPORT_KINDS:
        raise unknown_name("report", kind, REPORTS)
    return REPORT_KINDS[kind]


def tables(kind: str, root: Path, runs: pd.DataFrame | None = None) -> str:
    """Write the tables of a report kind under root; return them as Markdown.

    ``runs`` is the collected table of root's runs; without it they are collected here.
    """
    write, _ = _kind(kind)
    root = Path(root)
    return write(root, summary(root) if runs is None else runs)


def figures(
    kind: str,
    root: Path,
    metric: str | None = None,
    out: Path | None = None,
    runs: pd.DataFrame | None = None,
) -> list[Path]:
    """Draw the figures of a report kind into root (the curve into ``out`` when given); return
    their paths. ``metric`` defaults to the runs' headline; ``runs`` as for ``tables``."""
    _, draw = _kind(kind)
    root = Path(root)
    runs = summary(root) if runs is None else runs
    metric = metric or metrics_of(runs)[0]
    check_metric(runs, metric)
    return draw(root, runs, metric, out)
