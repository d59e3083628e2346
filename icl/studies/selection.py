"""The tables of the selection study: accuracy per demonstration selection, label setting,
prompt format and k, with the zero-shot accuracy beside them; pure functions of the collected
runs and their per-example outcomes."""

from __future__ import annotations

import pandas as pd

from icl import effects
from icl.identity import DEFAULTS_LEFT_OUT

SELECTION_ORDER = ("random", "knn", "knn_diverse", "bm25")
# one line of the table and the figure: a model in a format, a selection and a label setting
LINE_KEYS = ["task", "model", "format", "labels", "selection"]


def with_defaults(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs with selection, order and format filled in where metrics.json leaves them out."""
    return runs.assign(
        **{c: runs[c].fillna(d) if c in runs else d for c, d in DEFAULTS_LEFT_OUT.items()}
    )


def selection_table(runs: pd.DataFrame, examples=None, metric: str = "accuracy") -> pd.DataFrame:
    """Mean over seeds and 95% interval of ``metric`` per line and k; the zero-shot cells of
    each model and format (k=0) repeated on every line, so each line starts from them."""
    frame = with_defaults(runs)
    keys = [*LINE_KEYS, "k"]
    table = frame.groupby(keys, dropna=False)[metric].agg(["mean", "std", "count"]).reset_index()
    table = table.rename(columns={"count": "n_seeds"})
    if examples is not None:
        found = effects.cell_intervals(frame, examples, keys, [metric])
        found = found.rename(columns={f"{metric}_ci_low": "ci_low", f"{metric}_ci_high": "ci_high"})
        table = table.merge(found, on=keys, how="left")
    zero, shots = table[table["k"] == 0], table[table["k"] > 0]
    zero = zero.drop_duplicates(["task", "model", "format"])
    lines = shots[LINE_KEYS].drop_duplicates()
    starts = lines.merge(
        zero.drop(columns=["labels", "selection"]), on=["task", "model", "format"], how="inner"
    )
    out = pd.concat([starts, shots], ignore_index=True)
    rank = {s: i for i, s in enumerate(SELECTION_ORDER)}
    out["_rank"] = out["selection"].map(lambda s: rank.get(s, len(rank)))
    out = out.sort_values(["task", "model", "format", "labels", "_rank", "k"])
    return out.drop(columns="_rank").reset_index(drop=True)


def cell_text(row) -> str:
    """'mean [low, high]' in percent (the mean alone without an interval)."""
    text = f"{100 * row['mean']:.1f}"
    if pd.notna(row.get("ci_low")):
        text += f" [{100 * row['ci_low']:.0f}, {100 * row['ci_high']:.0f}]"
    return text


def selection_text(table: pd.DataFrame) -> pd.DataFrame:
    """One row per line, a column per k (k=0: the zero-shot accuracy)."""
    frame = table.assign(cell=table.apply(cell_text, axis=1))
    wide = frame.pivot_table(index=LINE_KEYS, columns="k", values="cell", aggfunc="first")
    wide.columns = [f"k={k}" for k in wide.columns]
    order = table[LINE_KEYS].drop_duplicates()
    return wide.reindex(pd.MultiIndex.from_frame(order))
