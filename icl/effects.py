"""Paired effects between matched cells, and intervals of cells, from per-example outcomes.

Two cells match when every identity value but the compared one is the same and they score
the same test examples; their difference is paired seed by seed and example by example
(``icl.stats``). Pure functions of the collected runs and examples tables
(``icl.collect.collect_runs``, ``collect_examples``).
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from icl import stats
from icl.collect import SCORED_RULE, rule_runs
from icl.demos import CHART_ORDER
from icl.errors import ICLError, unknown_name
from icl.identity import SEED_FIELD, VERSION_FIELDS, group_columns
from icl.retrieval import RETRIEVALS
from icl.scoring import SCORING_RULES

# demonstration columns: they change nothing at k=0, where no demonstration is shown
DEMO_COLUMNS = (
    "labels", "sampling", "per_example", "nested", "ood_corpus", "selection", "order",
    "diversity_lambda", "retrieve_by",
)  # fmt: skip
# identity columns never compared: the seed pairs the cells; the rest change the test examples
NOT_COMPARED = (SEED_FIELD, "task", "n_test", "eval_seed", *VERSION_FIELDS)
EFFECT_COLUMNS = ["n_seeds", "n_examples", "difference", "ci_low", "ci_high", "p"]


def identity_columns(runs: pd.DataFrame) -> list[str]:
    return [c for c in group_columns(SCORED_RULE) if c in runs]


def _key(frame: pd.DataFrame, columns: list[str]) -> pd.Series:
    """One string per row naming its values (missing values compare equal)."""
    if not columns:
        return pd.Series("", index=frame.index)
    return frame[columns].map(str).agg("\x1f".join, axis=1)


def comparable_columns(runs: pd.DataFrame) -> list[str]:
    """The identity columns that take more than one value in these runs."""
    long = rule_runs(runs)
    return [
        c
        for c in identity_columns(long)
        if c not in NOT_COMPARED and long[c].map(str).nunique() > 1
    ]


def value_pairs(column: str, values: list) -> list[tuple]:
    """The (A, B) pairs compared, A - B: numbers each against the smallest (k against k=0,
    larger first); retrievals before random selection, label settings in chart order (gold
    before random), rules in registry order, anything else alphabetically, every pair."""
    if all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in values):
        ordered = sorted(values, reverse=True)
        return [(v, ordered[-1]) for v in ordered[:-1]]
    # retrievals before random selection, so their effects read retrieval - random
    rank = {name: i for i, name in enumerate([*RETRIEVALS, *CHART_ORDER, *SCORING_RULES])}
    ordered = sorted(values, key=lambda v: (rank.get(v, len(rank)), str(v)))
    return [(a, b) for i, a in enumerate(ordered) for b in ordered[i + 1 :]]


def zero_shot_stand_ins(runs: pd.DataFrame) -> pd.DataFrame:
    """Add copies of k=0 runs for the label settings and seeds that only have k > 0 runs:
    a zero-shot prompt shows no demonstration, so one k=0 run stands in for them all."""
    if "k" not in runs or not (runs["k"] == 0).any():
        return runs
    free = [c for c in (SEED_FIELD, *DEMO_COLUMNS) if c in runs]
    fixed = [c for c in identity_columns(runs) if c not in free and c != "k"]
    zero, shots = runs[runs["k"] == 0], runs[runs["k"] > 0]
    zero_keys, shot_keys = _key(zero, fixed), _key(shots, fixed)
    added = []
    for key, group in shots.groupby(shot_keys):
        mine = zero[zero_keys == key]
        if mine.empty:
            continue
        have = set(_key(mine, free))
        missing = group.drop_duplicates(free)
        missing = missing[~_key(missing, free).isin(have)]
        for _, row in missing.iterrows():
            added.append(mine.iloc[0].copy().where(~mine.columns.isin(free), row))
    if not added:
        return runs
    return pd.concat([runs, pd.DataFrame(added).astype(runs.dtypes.to_dict())], ignore_index=True)


def outcome_table(examples: pd.DataFrame) -> dict[tuple[str, str], pd.Series]:
    """(run_dir, scored_rule) -> correct (0/1) per example id, sorted by id."""
    return {
        key: group.set_index("example_id")["correct"].astype(float).sort_index()
        for key, group in examples.groupby(["run_dir", SCORED_RULE])
    }


def _outcomes(outcomes: dict, row) -> pd.Series:
    found = outcomes.get((row["run_dir"], row[SCORED_RULE]))
    if found is None:
        raise ICLError(
            f"no per-example predictions for rule {row[SCORED_RULE]!r} in "
            f"{row['run_dir']}/predictions.jsonl: effects need them"
        )
    return found


def by_seed(cell: pd.DataFrame) -> dict:
    """A cell's runs by seed; two runs of one cell and seed is an error naming both."""
    doubled = cell[cell.duplicated(SEED_FIELD, keep=False)] if SEED_FIELD in cell else cell[:0]
    if len(doubled):
        raise ICLError(f"two runs of one cell and seed: {', '.join(doubled['run_dir'])}")
    seeds = cell[SEED_FIELD] if SEED_FIELD in cell else pd.Series(0, index=cell.index)
    return {seed: row for seed, (_, row) in zip(seeds, cell.iterrows())}


def paired_matrices(a: pd.DataFrame, b: pd.DataFrame, outcomes: dict):
    """The (seeds, examples) correct matrices of two matched cells over their common seeds;
    an error names the runs when the test example ids differ."""
    runs_a, runs_b = by_seed(a), by_seed(b)
    seeds = sorted(set(runs_a) & set(runs_b))
    rows_a, rows_b, ids = [], [], None
    for seed in seeds:
        first, second = _outcomes(outcomes, runs_a[seed]), _outcomes(outcomes, runs_b[seed])
        for series, run in ((first, runs_a[seed]), (second, runs_b[seed])):
            ids = series.index if ids is None else ids
            if not series.index.equals(ids):
                named = runs_a[seeds[0]]["run_dir"]
                raise ICLError(
                    f"cells do not score the same test examples: {run['run_dir']} "
                    f"({len(series)} examples) and {named} ({len(ids)}): effects pair them"
                )
        rows_a.append(first.to_numpy())
        rows_b.append(second.to_numpy())
    return seeds, np.array(rows_a), np.array(rows_b)


def cell_scores(cell: pd.DataFrame, by_run: dict, metric: str):
    """The (seeds, examples) matrix a cell's interval resamples, and its statistic: per-example
    correctness for accuracy and macro-F1 when every run has predictions of the same test
    examples (``by_run``: (run_dir, scored_rule) -> its rows of the examples table), else each
    run's value of the metric (seeds only)."""
    found = [by_run.get(key) for key in zip(cell["run_dir"], cell[SCORED_RULE])]
    if metric in ("accuracy", "macro_f1") and found and all(f is not None for f in found):
        ids = found[0]["example_id"].sort_values().to_numpy()
        rows = [f.set_index("example_id").sort_index() for f in found]
        if all(np.array_equal(r.index.to_numpy(), ids) for r in rows):
            pred = np.array([r["pred"].to_numpy() for r in rows], dtype=int)
            gold = rows[0]["gold"].to_numpy(dtype=int)
            scores = (pred == gold).astype(float)
            if metric == "accuracy":
                return scores, None
            return scores, stats.macro_f1_statistic(pred, gold, int(rows[0]["n_classes"].max()))
    values = cell[metric].dropna().to_numpy(dtype=float) if metric in cell else np.array([])
    return values[:, None], None


def cell_intervals(
    runs: pd.DataFrame, examples: pd.DataFrame, keys: list[str], metrics: list[str], seed=0
) -> pd.DataFrame:
    """The 95% interval (``<metric>_ci_low``, ``<metric>_ci_high``) of each metric's mean
    over seeds per group of ``keys``: the hierarchical bootstrap where per-example outcomes
    exist, the bootstrap over seeds elsewhere."""
    runs = runs if SCORED_RULE in runs else runs.assign(**{SCORED_RULE: runs.get("rule")})
    by_run = dict(iter(examples.groupby(["run_dir", SCORED_RULE]))) if len(examples) else {}
    rows = []
    for values, cell in runs.groupby(keys, dropna=False, sort=False):
        row = dict(zip(keys, values if isinstance(values, tuple) else (values,)))
        for metric in metrics:
            scores, statistic = cell_scores(cell, by_run, metric)
            low = high = float("nan")
            if scores.size:
                rng = _rng(seed, metric)  # the same scores give the same interval
                low, high = stats.interval(scores, rng, statistic)
            row[f"{metric}_ci_low"], row[f"{metric}_ci_high"] = low, high
        rows.append(row)
    return pd.DataFrame(rows)


def _rng(seed: int, *parts) -> np.random.Generator:
    """A generator per interval or effect, from the seed and a stable hash of what it is for:
    the same scores give the same numbers, in any order and any table."""
    return np.random.default_rng([seed, zlib.crc32("\x1f".join(map(str, parts)).encode())])


def column_effects(runs, outcomes, column: str, seed: int = 0, **kwargs) -> list[dict]:
    """A - B along one identity column, for every matched group of cells."""
    match = [c for c in identity_columns(runs) if c != column]
    rows = []
    for _, group in runs.groupby(_key(runs, match), sort=True):
        if column in DEMO_COLUMNS and "k" in group and (group["k"] == 0).all():
            continue
        values = list(dict.fromkeys(group[column].dropna()))
        for a, b in value_pairs(column, values):
            seeds, first, second = paired_matrices(
                group[group[column] == a], group[group[column] == b], outcomes
            )
            if not seeds:
                continue
            effect = stats.paired_effect(first, second, _rng(seed, "effect"), **kwargs)
            same = group.iloc[0][match].to_dict()
            rows.append({"compared": column, "a": a, "b": b, **same, **effect})
    return rows


def effects_table(
    runs: pd.DataFrame, examples: pd.DataFrame, columns: list[str] | None = None, seed=0, **kw
) -> pd.DataFrame:
    """Paired accuracy differences A - B with 95% intervals and p-values, along each of
    ``columns`` (every identity column that varies, by default) within matched cells."""
    valid = comparable_columns(runs)
    for column in columns or []:
        if column not in valid:
            raise unknown_name("column to compare", column, valid)
    long = rule_runs(runs)
    outcomes = outcome_table(examples)
    rows = []
    for column in columns or valid:
        frame = zero_shot_stand_ins(long) if column == "k" else long
        rows += column_effects(frame, outcomes, column, seed, **kw)
    if not rows:
        raise ICLError(f"no matched cells differ in {', '.join(columns or valid) or 'anything'}")
    table = pd.DataFrame(rows)
    for column in identity_columns(table):  # a blank in an integer column (k) keeps it integer
        if pd.api.types.is_integer_dtype(long[column]):
            table[column] = table[column].astype("Int64")
    match = [c for c in identity_columns(table) if table[c].notna().any()]
    return table[["compared", "a", "b", *match, *EFFECT_COLUMNS]]
