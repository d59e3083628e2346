"""Figures drawn from the collected results table (one row per run)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on clusters and CI
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import pandas as pd  # noqa: E402

from icl.errors import ICLError  # noqa: E402

LABEL_COLOURS = {"gold": "#1b9e77", "random": "#d95f02", "permuted": "#7570b3"}
RULE_COLOURS = {
    "direct": "#1f77b4",
    "direct_mean": "#17becf",
    "channel": "#9467bd",
    "calibrated": "#d62728",
    "pmi": "#2ca02c",
}
PANEL_KEYS = ["task", "model", "template"]


def curve(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean and std over seeds of one metric per k."""
    stats = runs.groupby("k")[metric].agg(["mean", "std", "count"]).reset_index()
    stats["std"] = stats["std"].fillna(0.0)
    return stats


# the majority class's score under each metric that has one
BASELINES = {"accuracy": "majority_baseline", "macro_f1": "majority_baseline_macro_f1"}


def plot_accuracy_vs_k(
    runs: pd.DataFrame, out: Path, metric: str = "accuracy", by: str = "labels", bands=None
) -> Path:
    """One panel per (task, model, template); a line per value of ``by`` (the label setting,
    or ``scored_rule`` in the long form ``collect.rule_runs``), and a band: the 95% interval
    in ``bands`` (``icl.effects.cell_intervals`` per panel key, ``by`` and k), else ±1 std."""
    keys = [k for k in PANEL_KEYS if k in runs and runs[k].notna().any()]
    # runs without a task or label setting (a synthetic study): one panel, one line
    runs = runs.assign(**{by: runs[by].astype(object).fillna(metric) if by in runs else metric})
    panels = list(runs.groupby(keys, sort=True)) if keys else [((), runs)]
    colours = {**LABEL_COLOURS, **RULE_COLOURS}
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.0), squeeze=False)
    for ax, (panel, frame) in zip(axes[0], panels):
        for setting, group in frame.groupby(by, sort=by == "labels"):
            stats = curve(group, metric)
            low, high = stats["mean"] - stats["std"], stats["mean"] + stats["std"]
            if bands is not None:
                mine = _rows_of(bands, {**dict(zip(keys, _tuple(panel))), by: setting})
                found = stats[["k"]].merge(mine, on="k", how="left")
                low, high = found[f"{metric}_ci_low"], found[f"{metric}_ci_high"]
            colour = colours.get(setting)
            dashed = setting == "direct_mean"  # equal to direct when label words are one token
            ax.plot(
                stats["k"],
                stats["mean"],
                marker="o",
                label=setting,
                color=colour,
                ls="--" if dashed else "-",
            )
            ax.fill_between(
                stats["k"], low, high, alpha=0.2 if by == "labels" else 0.1, color=colour
            )
        _finish_curve_panel(ax, frame, metric, panel)
    n_seeds = runs["seed"].nunique() if "seed" in runs else 1
    band = "95% CI" if bands is not None else "± std"
    fig.suptitle(
        f"{metric.replace('_', ' ')} against k (mean, {band}; {n_seeds} seeds)", fontsize=11
    )
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130)
    plt.close(fig)
    return out


def _finish_curve_panel(ax, frame: pd.DataFrame, metric: str, panel) -> None:
    """The majority-class line (of the metric's own baseline), k ticks, labels and legend."""
    baseline = BASELINES.get(metric)
    if baseline in frame and frame[baseline].notna().any():
        ax.axhline(frame[baseline].mean(), color="grey", ls=":", lw=1, label="majority class")
    ks = sorted(frame["k"].unique())
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("demonstrations k")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(" / ".join(str(p) for p in _tuple(panel)), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _tuple(panel) -> tuple:
    return panel if isinstance(panel, tuple) else (panel,)


def _rows_of(frame: pd.DataFrame, values: dict) -> pd.DataFrame:
    """The rows of frame with these values (compared as text: missing values match)."""
    mask = pd.Series(True, index=frame.index)
    for column, value in values.items():
        mask &= frame[column].map(str) == str(value)
    return frame[mask]


def error_bars(rows: pd.DataFrame, scale: float = 100.0):
    """Error bars of a table's rows: the 95% interval (``ci_low``, ``ci_high``) where it has
    one, else ±1 std."""
    if "ci_low" in rows and rows["ci_low"].notna().all():
        return [(rows["mean"] - rows["ci_low"]) * scale, (rows["ci_high"] - rows["mean"]) * scale]
    return rows["std"].fillna(0) * scale


SETTING_COLOURS = {
    "no demos": "#999999",
    "gold": "#1b9e77",
    "random": "#d95f02",
    "random_true_dist": "#e6ab02",
    "ood_inputs": "#7570b3",
    "random_words": "#e7298a",
    "no_labels": "#66a61e",
    "labels_only": "#a6761d",
}


def _save(fig, out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=130)
    plt.close(fig)
    return out


def plot_setting_bars(table: pd.DataFrame, out: Path, settings: list[str], ylabel: str, title):
    """Grouped bars (Min et al. 2022 Figure 3 form): a group per task, a bar per setting, with
    the 95% interval as error bars (±1 std over seeds for a table without one)."""
    tasks = list(dict.fromkeys(table["task"]))
    settings = [s for s in settings if s in set(table["setting"])]
    width = 0.8 / max(len(settings), 1)
    # at least wide enough for the title and a four-column legend with one or two tasks
    width_in = max(5.5, 1.2 + 1.1 * len(tasks) * max(1, len(settings) / 3))
    fig, ax = plt.subplots(figsize=(width_in, 3.8))
    for j, setting in enumerate(settings):
        rows = table[table["setting"] == setting].set_index("task").reindex(tasks)
        xs = [i + (j - (len(settings) - 1) / 2) * width for i in range(len(tasks))]
        ax.bar(
            xs,
            rows["mean"] * 100,
            width,
            yerr=error_bars(rows),
            label=setting,
            color=SETTING_COLOURS.get(setting),
            capsize=2,
            error_kw={"lw": 0.8},
        )
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(
        fontsize=7, ncol=min(len(settings), 4), loc="upper center", bbox_to_anchor=(0.5, -0.1)
    )
    return _save(fig, out)


def plot_correct_percent(table: pd.DataFrame, zero: pd.DataFrame, out: Path, ylabel: str):
    """Metric against the share of correct demonstration labels, a line per task, with the
    zero-shot value of each task as a dotted line (Min et al. 2022, Figure 8 form)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for task, group in table.groupby("task", sort=True):
        line = ax.errorbar(
            group["percent"], group["mean"] * 100, yerr=error_bars(group), marker="o",
            capsize=2, label=task,
        )  # fmt: skip
        base = zero[zero["task"] == task]["mean"]
        if len(base):
            ax.axhline(base.iloc[0] * 100, ls=":", lw=1, color=line[0].get_color())
    ax.set_xticks([0, 25, 50, 75, 100])
    ax.set_xlabel("demonstrations with the gold label (%)")
    ax.set_ylabel(ylabel)
    ax.set_title("share of correct labels, k=16 (dotted: no demonstrations)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out)


def plot_perplexity_scatter(table: pd.DataFrame, stats: pd.DataFrame, out: Path, n_lowest=3):
    """Accuracy against mean prompt perplexity, a panel per task, a point per template; the
    lowest-perplexity templates are ringed, Spearman's rho and p in the title; templates with
    no perplexity (eval.zero_shot_perplexity=false) are left out."""
    table = table[table["zero_shot_perplexity"].notna()]
    if table.empty:
        raise ICLError(
            "no template run holds a zero-shot perplexity (eval.zero_shot_perplexity=false); "
            "rerun the sweep with eval.zero_shot_perplexity=true"
        )
    panels = list(table.groupby(["task", "model"], sort=True))
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.8 * rows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, ((task, model), group) in zip(axes.flat, panels):
        row = stats[(stats["task"] == task) & (stats["model"] == model)].iloc[0]
        ax.scatter(group["zero_shot_perplexity"], group["accuracy"] * 100, s=22)
        low = group[group["perplexity_rank"] <= n_lowest]
        ax.scatter(
            low["zero_shot_perplexity"], low["accuracy"] * 100, s=90, facecolors="none",
            edgecolors="red", label=f"{n_lowest} lowest perplexity",
        )  # fmt: skip
        for _, r in group.iterrows():
            point = (r["zero_shot_perplexity"], r["accuracy"] * 100)
            ax.annotate(r["template"], point, xytext=(2, 2), textcoords="offset points", fontsize=5)
        ax.set_xscale("log")
        # ticks at 1, 2, 3 and 5 of each decade, written plainly: a panel may span less than one
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 3.0, 5.0)))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("mean prompt perplexity")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"{task}: rho={row['spearman_rho']:.2f}, p={row['p_value']:.2g}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("accuracy against prompt perplexity, one point per template (k=0)", fontsize=10)
    return _save(fig, out)


def plot_shots_curve(shots: pd.DataFrame, ascent: pd.DataFrame, out: Path, ylabel: str):
    """Metric against k with 95% intervals (the hierarchical bootstrap's ``ci_low``,
    ``ci_high`` where the table has them, else t over seeds), a panel per task and a line per
    label setting; the k=0 value is a dotted line, and an early-ascent dip (below k=0 before the
    curve rises above it) is marked with a triangle, only when its paired difference from k=0
    excludes zero (``early_ascent_tested``) where the table tests it."""
    tasks = sorted(shots["task"].unique())
    width = max(6.5, 4.4 * len(tasks))
    fig, axes = plt.subplots(1, len(tasks), figsize=(width, 4.0), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        frame = shots[shots["task"] == task]
        for labels, curve in frame.groupby("labels", sort=True):
            colour = LABEL_COLOURS.get(labels)
            ax.plot(curve["k"], curve["mean"] * 100, marker="o", ms=3, label=labels, color=colour)
            low, high = curve["mean"] - curve["ci95"], curve["mean"] + curve["ci95"]
            if "ci_low" in curve:  # the hierarchical bootstrap's interval
                low, high = curve["ci_low"], curve["ci_high"]
            ax.fill_between(curve["k"], low * 100, high * 100, alpha=0.15, color=colour)
            dip = ascent[(ascent["task"] == task) & (ascent["labels"] == labels)]
            marked = "early_ascent_tested" if "early_ascent_tested" in dip else "early_ascent"
            if len(dip) and bool(dip[marked].iloc[0]):
                k = int(dip["lowest_k"].iloc[0])
                y = float(curve.loc[curve["k"] == k, "mean"].iloc[0]) * 100
                ax.scatter([k], [y], marker="v", s=80, color=colour, zorder=5)
        zero = frame.loc[frame["k"] == 0, "mean"]
        if len(zero):
            ax.axhline(zero.iloc[0] * 100, ls=":", lw=1, color="grey", label="k=0")
        _percent_against_k(ax, sorted(frame["k"].unique()), ylabel, task, legend_size=7)
    tested = "early_ascent_tested" in ascent
    fig.suptitle(
        # two lines: one line was cut at the edges of a one-task figure
        "accuracy against k, 95% intervals over seeds and test examples\n(▼ early-ascent dip, "
        "its paired difference from k=0 below zero)"
        if tested
        else "accuracy against k, 95% intervals over seeds (▼ early-ascent dip)",
        fontsize=10,
    )
    return _save(fig, out)


def _percent_against_k(ax, ks, ylabel: str, title: str, legend_size: int) -> None:
    """A 0-100% panel against k on a symlog axis with every k ticked."""
    ax.set_xscale("symlog", linthresh=1, linscale=0.4)
    ax.set_xticks(ks, [str(k) for k in ks], fontsize=7)
    ax.set_ylim(0, 100)
    ax.set_xlabel("demonstrations k")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_size, loc="lower right")


DECODER_PANELS = (
    ("format_valid_rate", "answers that are a label word (%)"),
    ("accuracy", "accuracy (%)"),
)


def plot_decoding(table: pd.DataFrame, out: Path) -> Path:
    """Format validity (top) and accuracy (bottom) against k, a column per task and a line per
    decoder; label-word scoring on the same prompts is the dashed reference."""
    tasks = sorted(table["task"].unique())
    fig, axes = plt.subplots(2, len(tasks), figsize=(4.6 * len(tasks), 7.0), squeeze=False)
    for col, task in enumerate(tasks):
        frame = table[table["task"] == task]
        for row, (metric, ylabel) in enumerate(DECODER_PANELS):
            ax = axes[row][col]
            for decoder, curve in frame.groupby("decoder", sort=True):
                ax.plot(curve["k"], curve[f"{metric}_mean"] * 100, marker="o", ms=3, label=decoder)
            if metric == "accuracy":
                scoring = frame.groupby("k")["scoring_accuracy_mean"].mean()
                ax.plot(scoring.index, scoring * 100, ls="--", color="grey", label="scoring")
            _percent_against_k(ax, sorted(frame["k"].unique()), ylabel, task, legend_size=6)
    fig.suptitle("free generation: valid answers and accuracy against k, by decoder", fontsize=10)
    return _save(fig, out)


SELECTION_COLOURS = {
    "random": "#7f7f7f",
    "knn": "#1f77b4",
    "knn_diverse": "#17becf",
    "bm25": "#ff7f0e",
}
LABEL_STYLES = {"gold": "-", "random": "--"}


def plot_selection(table: pd.DataFrame, out: Path) -> Path:
    """Accuracy against k, a column per task and a row per model and format; a colour per
    demonstration selection, solid for gold labels and dashed for random ones, with 95%
    intervals; every line starts at the zero-shot accuracy (k=0)."""
    tasks = sorted(table["task"].unique())
    rows = list(table[["model", "format"]].drop_duplicates().itertuples(index=False))
    fig, axes = plt.subplots(
        len(rows),
        len(tasks),
        figsize=(max(4.4 * len(tasks), 6.5), 3.4 * len(rows)),
        squeeze=False,
    )
    for r, (model, fmt) in enumerate(rows):
        for c, task in enumerate(tasks):
            ax = axes[r][c]
            frame = _rows_of(table, {"task": task, "model": model, "format": fmt})
            if frame.empty:  # this model or format did not run on this task: say so, no axes
                ax.set_axis_off()
                ax.set_title(f"{task}: {model}, {fmt}: not run", fontsize=9)
                continue
            for (labels, selection), line in frame.groupby(["labels", "selection"], sort=False):
                line = line.sort_values("k")
                ax.errorbar(
                    line["k"], line["mean"] * 100, yerr=error_bars(line), capsize=2, ms=3,
                    marker="o", ls=LABEL_STYLES.get(labels, ":"),
                    color=SELECTION_COLOURS.get(selection), label=f"{selection}, {labels}",
                )  # fmt: skip
            ks = sorted(frame["k"].unique()) or [0]
            _percent_against_k(ax, ks, "accuracy (%)", f"{task}: {model}, {fmt}", legend_size=6)
    fig.suptitle(
        "which demonstrations: random, kNN (MiniLM), BM25\ngold (solid) and random (dashed) "
        "labels, 95% CI",
        fontsize=10,
    )
    return _save(fig, out)


FINETUNE_COLOURS = {
    "zero-shot": "#999999",
    "ICL (32 demos)": "#1b9e77",
    "fine-tuned": "#d95f02",
    "Gao et al.": "#cccccc",
}


def plot_finetune(bars: pd.DataFrame, gao: dict, gao_head: tuple, out: Path, model: str) -> Path:
    """Grouped bars per label-word pair (and the head): zero-shot, ICL, fine-tuned (±1 std over
    seeds), and Gao et al.'s prompt-based fine-tuning (RoBERTa-large) in grey."""
    bars = bars[bars["model"] == model]
    rows = list(dict.fromkeys(bars["row"]))
    columns = [c for c in FINETUNE_COLOURS if c in set(bars["column"]) or c == "Gao et al."]
    width = 0.8 / len(columns)
    fig, ax = plt.subplots(figsize=(1.5 + 1.3 * len(rows), 3.8))
    for j, column in enumerate(columns):
        xs = [i + (j - (len(columns) - 1) / 2) * width for i in range(len(rows))]
        if column == "Gao et al.":
            ref = [gao_head if r == "classifier head" else gao.get(r, (float("nan"),) * 2)
                   for r in rows]  # fmt: skip
            means, errs = [m for m, _ in ref], [s for _, s in ref]
        else:
            picked = bars[bars["column"] == column].set_index("row").reindex(rows)
            means, errs = picked["mean"] * 100, picked["std"].fillna(0) * 100
        ax.bar(xs, means, width, yerr=errs, label=column, color=FINETUNE_COLOURS[column],
               capsize=2, error_kw={"lw": 0.8})  # fmt: skip
    ax.axhline(50, color="black", lw=0.6, ls=":")
    ax.set_xticks(range(len(rows)), rows, fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    n_seeds, n_test = int(bars["n_seeds"].max()), int(bars["n_test"].max())
    seeds = f"{n_seeds} seed{'s' if n_seeds != 1 else ''}"
    ax.set_title(f"SST-2, {model}: {seeds}, {n_test} test examples (±1 std)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=len(columns), loc="upper center", bbox_to_anchor=(0.5, -0.12))
    return _save(fig, out)
