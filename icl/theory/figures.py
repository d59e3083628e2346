"""The theory studies' figures, drawn from their tables with icl.plots' matplotlib setup."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from icl.plots import LABEL_COLOURS, _percent_against_k, _save, plt

TRAINED, GD = "#1f77b4", "#d62728"


def plot_training(training: pd.DataFrame, out: Path) -> Path:
    """The one-layer run against training steps: its loss with the best GD step's as a line,
    the mean |y_TF - y_GD|, and the mean cosine of their sensitivities."""
    run = training[training["layers"] == 1]
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 3.8))
    ax = axes[0]
    ax.plot(run["step"], run["loss"], color=TRAINED, label="trained linear self-attention")
    gd = run["gd_loss"].iloc[-1]
    eta = run["gd_eta"].iloc[-1]
    ax.axhline(gd, color=GD, ls="--", label=f"one GD step (eta={eta:.2f}): {gd:.3f}")
    ax.set_yscale("log")
    ax.set_ylabel("loss (half squared error)")
    ax.legend(fontsize=8)
    axes[1].plot(run["step"], run["pred_diff"], color=TRAINED)
    axes[1].set_yscale("log")
    axes[1].set_ylabel("mean |y_TF - y_GD|")
    axes[2].plot(run["step"], run["cosine"], color=TRAINED)
    axes[2].axhline(1.0, color="grey", ls=":", lw=1)
    axes[2].set_ylabel("cosine of dy/dx_query, TF vs GD")
    for ax in axes:
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    fig.suptitle("a linear self-attention layer trained on regression tasks against one GD step")
    return _save(fig, out)


def plot_extensions(depth: pd.DataFrame, scales: pd.DataFrame, out: Path) -> Path:
    """K trained layers against K GD steps, and the one-layer model against GD on inputs
    scaled outside the training range (their loss ratio, and the sensitivities' cosine)."""
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 3.8))
    ax = axes[0]
    ax.plot(depth["layers"], depth["loss"], "o-", color=TRAINED, label="trained, K layers")
    ax.plot(depth["layers"], depth["gd_loss"], "s--", color=GD, label="K GD steps (best eta)")
    ax.set_xticks(depth["layers"])
    ax.set_xlabel("layers K = GD steps")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.plot(scales["scale"], scales["loss"], "o-", color=TRAINED, label="trained layer")
    ax.plot(scales["scale"], scales["gd_loss"], "s--", color=GD, label="one GD step")
    ax.plot(scales["scale"], scales["zero_loss"], ":", color="grey", label="predicting 0")
    ax.set_yscale("log")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    ax = axes[2]
    ax.plot(scales["scale"], scales["loss"] / scales["gd_loss"], "o-", color=TRAINED)
    ax.axhline(1.0, color="grey", ls=":", lw=1)
    ax.set_ylabel("loss of the trained layer / GD's")
    for ax in axes[1:]:
        ax.axvline(1.0, color="grey", lw=0.8)
        ax.set_xlabel("input scale (1 = the training range)")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle("deeper models against more GD steps; inputs outside the training range")
    return _save(fig, out)


def _k_axis(ax, ks) -> None:
    """k on a symlog axis (k = 0 included), ticks at 0, the powers of 4 and the largest k."""
    ax.set_xscale("symlog", linthresh=1, linscale=0.4)
    ticks = [k for k in ks if k == 0 or np.log2(max(k, 1)) % 2 == 0 or k == ks[-1]]
    ax.set_xticks(ticks, [str(k) for k in ticks], fontsize=7)
    ax.set_xlim(-0.2, ks[-1] * 1.4)
    ax.set_xlabel("demonstrations k")
    ax.grid(alpha=0.3)


def plot_bayes_risk(risk: pd.DataFrame, input_group: int, out: Path) -> Path:
    """A column per dimension: the Bayes-optimal risk against k (gold and random labels), and
    below it each group's posterior weight (solid gold, dashed random)."""
    dims = sorted(risk["d"].unique())
    fig, axes = plt.subplots(2, len(dims), figsize=(5.4 * len(dims), 6.6), squeeze=False)
    for col, d in enumerate(dims):
        frame = risk[risk["d"] == d]
        top, bottom = axes[0][col], axes[1][col]
        for labels, curve in frame.groupby("labels", sort=True):
            colour = LABEL_COLOURS.get(labels)
            top.plot(curve["k"], curve["risk"], marker="o", ms=3, color=colour, label=labels)
            low, high = curve["risk"] - 2 * curve["risk_se"], curve["risk"] + 2 * curve["risk_se"]
            top.fill_between(curve["k"], low, high, color=colour, alpha=0.2)
            groups = sorted(c for c in curve if c.startswith("weight_") and curve[c].notna().all())
            for column in groups:
                m = int(column.split("_")[1])
                name = f"group {m}" + (" (the inputs')" if m == input_group else "")
                bottom.plot(
                    curve["k"], curve[column], ls="-" if labels == "gold" else "--",
                    color=f"C{m - 1}", label=f"{name}, {labels}",
                )  # fmt: skip
        top.set_ylabel("risk E[(prediction - w.x)^2]")
        top.set_title(f"d = {d}", fontsize=10)
        top.legend(fontsize=8)
        bottom.set_ylabel("posterior weight")
        bottom.set_ylim(-0.03, 1.03)
        bottom.legend(fontsize=6)
        for ax in (top, bottom):
            _k_axis(ax, sorted(frame["k"].unique()))
    fig.suptitle(
        "Bayes-optimal risk when the inputs point at the wrong group (Lin & Lee 2024, Fig. 6):"
        " retrieval, then learning",
        fontsize=10,
    )
    return _save(fig, out)


def plot_theory_beside_shots(risk: pd.DataFrame, shots: pd.DataFrame, source: str, out: Path):
    """Two panels, each on its own axis: the theory's risk against k (gold labels, each d) and
    a real model's accuracy against k (shots_curve), each task and label setting."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12.0, 4.2))
    gold = risk[risk["labels"] == "gold"]
    for i, (d, curve) in enumerate(gold.groupby("d", sort=True)):
        left.plot(curve["k"], curve["risk"], marker="o", ms=3, color=f"C{i}", label=f"d = {d}")
    _k_axis(left, sorted(gold["k"].unique()))
    left.set_ylabel("risk (lower is better)")
    left.set_title("theory: Bayes-optimal predictor, gold labels", fontsize=10)
    left.legend(fontsize=8)
    styles = {"gold": "-", "random": "--"}
    for i, task in enumerate(sorted(shots["task"].unique())):
        for labels, curve in shots[shots["task"] == task].groupby("labels", sort=True):
            curve = curve.sort_values("k")
            right.plot(
                curve["k"], curve["mean"] * 100, marker="o", ms=3, color=f"C{i}",
                ls=styles.get(labels, ":"), label=f"{task}, {labels}",
            )  # fmt: skip
    title = f"measured: {source}"
    _percent_against_k(right, sorted(shots["k"].unique()), "accuracy (%)", title, legend_size=7)
    fig.suptitle(
        "early ascent: the theory's risk rises before it falls; a real model's accuracy dips "
        "before it rises",
        fontsize=10,
    )
    return _save(fig, out)
