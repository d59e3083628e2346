"""The tables of the finetune_vs_icl study: accuracy per label-word pair under zero-shot, ICL
with the 32 training examples as demonstrations and prompt-based fine-tuning, a row for the
classifier head, and Gao et al. 2021's prompt-based fine-tuning column beside them."""

from __future__ import annotations

import pandas as pd

from icl.studies.tables import GAO_ORDER, gao_notation, mean_std

# Gao et al. 2021 (LM-BFF) Table 3, SST-2, RoBERTa-large, 16 per class, mean (std) over 5 seeds
GAO_PROMPT_FT = {
    "great/terrible": (92.7, 0.9),
    "good/bad": (92.5, 1.0),
    "cat/dog": (91.5, 1.4),
    "dog/cat": (86.2, 5.4),
    "terrible/great": (83.2, 6.9),
}
HEAD_ROW = "classifier head"
GAO_HEAD = (81.4, 3.8)  # their standard fine-tuning
COLUMNS = ("zero-shot", "ICL (32 demos)", "fine-tuned")
GAO_COLUMN = "Gao et al. (RoBERTa-large)"


def row_and_column(run: pd.Series, template_words: str) -> tuple[str, str]:
    """Which table row (label words or the head) and column (how) a run belongs to."""
    if run.get("method") == "finetune" and run.get("finetune_kind") == "head":
        return HEAD_ROW, "fine-tuned"
    words = run.get("label_words")
    pair = gao_notation(words if isinstance(words, str) else template_words)
    if run.get("method") == "finetune":
        return pair, "fine-tuned"
    return pair, "zero-shot" if run["k"] == 0 else "ICL (32 demos)"


def finetune_bars(runs: pd.DataFrame, template_words: str = "terrible/great") -> pd.DataFrame:
    """Accuracy mean, std and seed count per model, row and column."""
    placed = [row_and_column(run, template_words) for _, run in runs.iterrows()]
    frame = runs.assign(row=[p[0] for p in placed], column=[p[1] for p in placed])
    out = []
    for (model, row, column), group in frame.groupby(["model", "row", "column"]):
        mean, std, n = mean_std(group["accuracy"])
        s_per_run = group["finetune_wall_s"].mean() if "finetune_wall_s" in group else None
        out.append(
            {"model": model, "row": row, "column": column, "mean": mean, "std": std,
             "n_seeds": n, "n_test": int(group["n"].iloc[0]), "s_per_run": s_per_run}
        )  # fmt: skip
    table = pd.DataFrame(out)
    order = [*GAO_ORDER, HEAD_ROW]
    table["order"] = table["row"].map(lambda r: order.index(r) if r in order else len(order))
    table["col_order"] = table["column"].map(COLUMNS.index)
    table = table.sort_values(["model", "order", "col_order"])
    return table.drop(columns=["order", "col_order"]).reset_index(drop=True)


def cell_text(mean: float, std: float, n: int) -> str:
    """'mean (std)' in percent, as Gao et al. print it; the seed count when not five."""
    text = f"{100 * mean:.1f} ({100 * std:.1f})"
    return text if n == 5 else f"{text} [{n}]"


def gao_text(row: str) -> str:
    mean, std = GAO_HEAD if row == HEAD_ROW else GAO_PROMPT_FT.get(row, (None, None))
    return "" if mean is None else f"{mean:.1f} ({std:.1f})"


def finetune_table(bars: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, label words | head): mean (std) per column, Gao et al. beside."""
    cells = bars.assign(cell=[cell_text(m, s, n) for m, s, n in
                              zip(bars["mean"], bars["std"], bars["n_seeds"])])  # fmt: skip
    wide = cells.pivot(index=["model", "row"], columns="column", values="cell")
    wide = wide.reindex(columns=[c for c in COLUMNS if c in wide.columns]).fillna("–")
    keys = list(dict.fromkeys(zip(bars["model"], bars["row"])))
    wide = wide.loc[keys]
    wide[GAO_COLUMN] = [gao_text(row) for _, row in wide.index]
    wide.index.names, wide.columns.name = ["model", "label words"], None
    return wide
