"""Figures drawn from the collected results table (one row per run)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on clusters and CI
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

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


def plot_accuracy_vs_k(
    runs: pd.DataFrame, out: Path, metric: str = "accuracy", by: str = "labels"
) -> Path:
    """One panel per (task, model, template); a line per value of ``by`` (the label setting,
    or ``scored_rule`` in the long form ``results.rule_runs``), a ±1 std band over seeds."""
    keys = [k for k in PANEL_KEYS if k in runs]
    panels = list(runs.groupby(keys, sort=True))
    colours = {**LABEL_COLOURS, **RULE_COLOURS}
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.0), squeeze=False)
    for ax, (panel, frame) in zip(axes[0], panels):
        for setting, group in frame.groupby(by, sort=by == "labels"):
            stats = curve(group, metric)
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
                stats["k"],
                stats["mean"] - stats["std"],
                stats["mean"] + stats["std"],
                alpha=0.2 if by == "labels" else 0.1,
                color=colour,
            )
        if "majority_baseline" in frame:
            ax.axhline(
                frame["majority_baseline"].mean(),
                color="grey",
                ls=":",
                lw=1,
                label="majority class",
            )
        ks = sorted(frame["k"].unique())
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_xlabel("demonstrations k")
        ax.set_ylabel(metric.replace("_", " "))
        ax.set_title(
            " / ".join(str(p) for p in (panel if isinstance(panel, tuple) else (panel,))),
            fontsize=10,
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    n_seeds = runs["seed"].nunique() if "seed" in runs else 1
    fig.suptitle(
        f"{metric.replace('_', ' ')} against k (mean ± std over {n_seeds} seeds)", fontsize=11
    )
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130)
    plt.close(fig)
    return out
