"""Paired effects between matched cells (icl/effects.py) and ``icl-collect --effects``, on
synthetic run folders and a tiny-model sweep."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from helpers import compose_config

import icl.cli
from icl import effects
from icl.collect import collect_examples, collect_runs
from icl.errors import ICLError
from icl.studies import reports, tables

CLASSES = ["negative", "positive"]
BASE = {"method": "score", "task": "t", "model": "m", "template": "x", "rule": "direct",
        "n_test": 40, "eval_seed": 0, "harness_version": "x"}  # fmt: skip


def write_cell(root, k, labels, seed, correct, ids=None):
    """A finished run folder: metrics.json and predictions.jsonl with these outcomes."""
    folder = root / f"k={k},labels={labels},seed={seed}"
    folder.mkdir(parents=True)
    ids = ids or [f"e{i}" for i in range(len(correct))]
    lines = []
    for i, (example_id, ok) in enumerate(zip(ids, correct)):
        gold = CLASSES[i % 2]
        pred = gold if ok else CLASSES[1 - i % 2]
        lines.append(
            {"example_id": example_id, "option_logprob": {c: -1.0 for c in CLASSES},
             "prediction": pred, "gold": gold, "correct": bool(ok)}
        )  # fmt: skip
    (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    metrics = {**BASE, "k": k, "labels": labels, "seed": seed, "accuracy": float(np.mean(correct))}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


@pytest.fixture
def sweep(tmp_path):
    """gold and random at k=4 over 3 seeds, and one zero-shot run (seed 1, gold)."""
    rng = np.random.default_rng(0)
    for seed in (1, 2, 3):
        write_cell(tmp_path, 4, "gold", seed, rng.random(40) < 0.8)
        write_cell(tmp_path, 4, "random", seed, rng.random(40) < 0.6)
    write_cell(tmp_path, 0, "gold", 1, rng.random(40) < 0.7)
    return tmp_path


def test_effects_pair_the_cells_seed_by_seed_and_example_by_example(sweep):
    runs = collect_runs(sweep)
    examples = collect_examples(sweep, runs)
    table = effects.effects_table(runs, examples, ["labels"], n_permutations=999)
    row = table.iloc[0]
    assert (row["a"], row["b"], row["k"], row["n_seeds"], row["n_examples"]) == (
        "gold", "random", 4, 3, 40,
    )  # fmt: skip
    gold = runs[(runs["k"] == 4) & (runs["labels"] == "gold")]["accuracy"].mean()
    random = runs[(runs["k"] == 4) & (runs["labels"] == "random")]["accuracy"].mean()
    assert row["difference"] == pytest.approx(gold - random)
    assert row["ci_low"] < row["difference"] < row["ci_high"] and 0 < row["p"] <= 1
    again = effects.effects_table(runs, examples, ["labels"], n_permutations=999)
    pd.testing.assert_frame_equal(table, again)  # seeded: the same numbers every time


def test_one_zero_shot_run_stands_in_for_every_label_setting_and_seed(sweep):
    runs = collect_runs(sweep)
    table = effects.effects_table(runs, collect_examples(sweep, runs), ["k"], n_permutations=99)
    assert set(zip(table["a"], table["b"], table["labels"])) == {(4, 0, "gold"), (4, 0, "random")}
    assert (table["n_seeds"] == 3).all()
    # every identity column that varies, by default; k=0 has no label-setting comparison
    both = effects.effects_table(runs, collect_examples(sweep, runs), n_permutations=99)
    assert sorted(both["compared"]) == ["k", "k", "labels"]


def test_cells_with_different_test_examples_are_an_error_naming_them(tmp_path):
    write_cell(tmp_path, 4, "gold", 1, [1, 0, 1])
    write_cell(tmp_path, 4, "random", 1, [1, 1, 0], ids=["e0", "e1", "other"])
    runs = collect_runs(tmp_path)
    with pytest.raises(ICLError, match="same test examples") as err:
        effects.effects_table(runs, collect_examples(tmp_path, runs), ["labels"])
    assert "labels=gold" in str(err.value) and "labels=random" in str(err.value)


def test_unknown_columns_and_missing_predictions_are_errors(sweep):
    runs = collect_runs(sweep)
    examples = collect_examples(sweep, runs)
    with pytest.raises(ICLError, match="labels"):
        effects.effects_table(runs, examples, ["templatez"])
    missing = examples[~examples["run_dir"].str.contains("random,seed=2")]
    with pytest.raises(ICLError, match="random,seed=2/predictions.jsonl"):
        effects.effects_table(runs, missing, ["labels"])


def test_value_pairs_put_gold_first_and_compare_every_k_with_the_smallest():
    assert effects.value_pairs("labels", ["random", "permuted", "gold"]) == [
        ("gold", "random"), ("gold", "permuted"), ("random", "permuted"),
    ]  # fmt: skip
    assert effects.value_pairs("k", [0, 4, 1]) == [(4, 0), (1, 0)]


def test_collect_effects_writes_the_csv_and_markdown_of_a_tiny_sweep(tmp_path, capsys):
    for k in (0, 2):
        for labels in ("gold", "random"):
            for seed in (1, 2):
                cfg = compose_config(
                    "model=tiny-llama", "task=sst2", "eval.n_test=8", "eval.progress=false",
                    f"demos.k={k}", f"demos.labels={labels}", f"demos.seed={seed}",
                )  # fmt: skip
                cfg.out_dir = str(tmp_path / f"k{k}-{labels}-{seed}")
                icl.cli.execute(cfg)
    icl.cli.collect([str(tmp_path), "--effects"])
    printed = capsys.readouterr().out
    assert "effects ->" in printed and "| compared | A | B |" in printed
    table = pd.read_csv(tmp_path / "effects.csv")
    assert list(table.columns[:3]) == ["compared", "a", "b"]
    assert list(table.columns[-6:]) == effects.EFFECT_COLUMNS
    assert {"task", "model", "template", "k", "labels"} <= set(table.columns)
    assert len(table) == 3 and (table["n_seeds"] == 2).all() and (table["n_examples"] == 8).all()
    assert (tmp_path / "effects.md").read_text().startswith("paired accuracy differences")
    with pytest.raises(SystemExit):
        icl.cli.collect([str(tmp_path), "--effects", "nope"])


def test_summary_seeds_gains_interval_columns_after_its_old_ones(sweep):
    reports.summary(sweep)
    seeds = pd.read_csv(sweep / "summary_seeds.csv")
    old = list(seeds.columns[: list(seeds.columns).index("n_seeds") + 1])
    assert old[-3:] == ["accuracy_mean", "accuracy_std", "n_seeds"]  # unchanged, first
    assert list(seeds.columns[len(old) :]) == ["accuracy_ci_low", "accuracy_ci_high"]
    gold = seeds[(seeds["k"] == 4) & (seeds["labels"] == "gold")].iloc[0]
    assert gold["accuracy_ci_low"] < gold["accuracy_mean"] < gold["accuracy_ci_high"]
    # a cell whose runs have no predictions: the bootstrap over seeds of their values
    runs = collect_runs(sweep)
    table = effects.cell_intervals(
        runs, collect_examples(sweep, runs)[:0], ["labels"], ["accuracy"]
    )
    assert table["accuracy_ci_low"].notna().all()


def test_the_early_ascent_is_marked_only_when_the_dip_is_below_zero_shot(tmp_path):
    rng = np.random.default_rng(1)
    for seed in (1, 2, 3):
        write_cell(tmp_path, 0, "gold", seed, np.arange(100) < 80)
        # gold dips far at k=1 (a test can see it), random dips by one example at k=1
        for labels, dip in (("gold", 50), ("random", 79)):
            write_cell(tmp_path, 1, labels, seed, rng.permutation(np.arange(100) < dip))
            write_cell(tmp_path, 4, labels, seed, np.arange(100) < 90)
    runs = collect_runs(tmp_path)
    examples = collect_examples(tmp_path, runs)
    shots = tables.shots_table(runs, examples=examples)
    assert {"ci95", "ci_low", "ci_high"} <= set(shots.columns)
    ascent = tables.early_ascent_table(shots, runs, examples).set_index("labels")
    assert ascent["early_ascent"].tolist() == [True, True]  # both dip, then rise
    assert ascent.loc["gold", "early_ascent_tested"]
    assert ascent.loc["gold", "dip_ci_high"] < 0 and ascent.loc["gold", "dip_p"] < 0.01
    assert not ascent.loc["random", "early_ascent_tested"]
    assert ascent.loc["random", "dip_difference"] == pytest.approx(-0.01)


def test_scoring_rules_are_compared_on_the_same_examples(tmp_path):
    rng = np.random.default_rng(4)
    for seed in (1, 2):
        folder = write_cell(tmp_path, 4, "gold", seed, rng.random(30) < 0.6)
        lines = [json.loads(x) for x in (folder / "predictions.jsonl").read_text().splitlines()]
        for line in lines:  # calibrated gets every example right
            line["predictions_by_rule"] = {"direct": line["prediction"], "calibrated": line["gold"]}
        (folder / "predictions.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
        metrics = json.loads((folder / "metrics.json").read_text())
        counts = {"negative": 15, "positive": 15}
        metrics["rules"] = {
            "direct": {
                "accuracy": metrics["accuracy"],
                "macro_f1": 0.5,
                "prediction_counts": counts,
            },
            "calibrated": {"accuracy": 1.0, "macro_f1": 1.0, "prediction_counts": counts},
        }
        (folder / "metrics.json").write_text(json.dumps(metrics))
    runs = collect_runs(tmp_path)
    examples = collect_examples(tmp_path, runs)
    assert set(examples["scored_rule"]) == {"direct", "calibrated"}
    table = effects.effects_table(runs, examples, n_permutations=99)
    row = table.iloc[0]
    assert (row["compared"], row["a"], row["b"]) == ("scored_rule", "direct", "calibrated")
    assert row["difference"] == pytest.approx(runs["accuracy"].mean() - 1.0)


def test_the_zero_shot_interval_counts_its_repeated_cell_once(tmp_path):
    outcomes = np.arange(100) < 80
    for labels in ("gold", "random"):
        for seed in (1, 2, 3, 4, 5):  # the same zero-shot cell, swept ten times
            write_cell(tmp_path / "swept", 0, labels, seed, outcomes)
    write_cell(tmp_path / "once", 0, "gold", 1, outcomes)
    for name in ("swept", "once"):  # a curve for the zero-shot point to start
        write_cell(tmp_path / name, 4, "gold", 1, np.arange(100) < 60)
    zero = {}
    for name in ("swept", "once"):
        runs = collect_runs(tmp_path / name)
        shots = tables.shots_table(runs, examples=collect_examples(tmp_path / name, runs))
        zero[name] = shots[shots["k"] == 0].iloc[0]
    assert zero["swept"]["n"] == 1
    assert zero["swept"]["ci_low"] == pytest.approx(zero["once"]["ci_low"])
    # 80% of 100 examples: the interval is about +-8 points, not +-8 / sqrt(10)
    assert zero["swept"]["ci_high"] - zero["swept"]["ci_low"] > 0.12
