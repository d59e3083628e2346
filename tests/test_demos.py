"""Demonstration selection and label settings (icl/demos.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import run_config
from hypothesis import given
from hypothesis import strategies as st

from icl.config import DemosConfig
from icl.demos import (
    LABEL_SETTINGS,
    SAMPLING_RULES,
    check_demo_request,
    choose_demos,
    label_mapping,
)
from icl.errors import ICLError
from icl.plan import plan_cell

SETTINGS = ("gold", "random", "permuted")


@st.composite
def labelled_pools(draw, max_per_class: int = 12):
    """Shuffled class labels of a pool: 2 to 5 classes, each present at least once."""
    counts = draw(st.lists(st.integers(1, max_per_class), min_size=2, max_size=5))
    labels = [c for c, count in enumerate(counts) for _ in range(count)]
    return draw(st.permutations(labels)), len(counts)


def max_k(labels, n_classes: int, sampling: str) -> int:
    """The largest k check_demo_request accepts for this pool."""
    if sampling == "uniform":
        return len(labels)
    return n_classes * min(np.bincount(labels, minlength=n_classes))


def demos(k, labels="gold", seed=1, sampling="uniform", **kw) -> DemosConfig:
    return DemosConfig(k=k, labels=labels, seed=seed, sampling=sampling, **kw)


@given(
    pool=labelled_pools(),
    seed=st.integers(0, 10_000),
    sampling=st.sampled_from(["uniform", "balanced"]),
    per_example=st.booleans(),
    data=st.data(),
)
def test_same_seed_shows_the_same_demonstrations_under_every_label_setting(
    pool, seed, sampling, per_example, data
):
    labels, n = pool
    k = data.draw(st.integers(0, max_k(labels, n, sampling)))
    example = 3 if per_example else None
    sets = {
        s: choose_demos(labels, n, demos(k, s, seed, sampling, per_example=per_example), example)
        for s in SETTINGS
    }
    assert len({tuple(d.indices) for d in sets.values()}) == 1
    gold = sets["gold"]
    assert len(gold.indices) == len(set(gold.indices)) == k
    assert gold.gold == [labels[i] for i in gold.indices] == gold.shown
    for d in sets.values():
        assert d.gold == gold.gold
        assert all(0 <= c < n for c in d.shown)


@given(
    pool=labelled_pools(),
    seed=st.integers(0, 10_000),
    sampling=st.sampled_from(["uniform", "balanced"]),
    setting=st.sampled_from(SETTINGS),
    data=st.data(),
)
def test_k_demonstrations_are_a_prefix_of_the_2k_ones(pool, seed, sampling, setting, data):
    labels, n = pool
    k = data.draw(st.integers(0, max_k(labels, n, sampling) // 2))
    small = choose_demos(labels, n, demos(k, setting, seed, sampling))
    large = choose_demos(labels, n, demos(2 * k, setting, seed, sampling))
    assert large.indices[:k] == small.indices
    assert large.shown[:k] == small.shown  # nested k keep their labels too


@given(pool=labelled_pools(), seed=st.integers(0, 10_000))
def test_every_prefix_of_balanced_demonstrations_is_balanced_within_one(pool, seed):
    labels, n = pool
    k = max_k(labels, n, "balanced")
    chosen = choose_demos(labels, n, demos(k, seed=seed, sampling="balanced"))
    for prefix in range(1, k + 1):
        counts = np.bincount(chosen.gold[:prefix], minlength=n)
        assert counts.max() - counts.min() <= 1, (prefix, counts.tolist())


@given(n_classes=st.integers(2, 8), seed=st.integers(0, 100_000))
def test_permuted_labels_are_a_derangement(n_classes, seed):
    mapping = label_mapping(seed, n_classes)
    assert sorted(mapping.tolist()) == list(range(n_classes))
    assert all(mapping[c] != c for c in range(n_classes))
    if n_classes == 2:
        assert mapping.tolist() == [1, 0]


@given(pool=labelled_pools(), seed=st.integers(0, 10_000), data=st.data())
def test_permuted_demonstrations_never_show_their_gold_class(pool, seed, data):
    labels, n = pool
    k = data.draw(st.integers(1, len(labels)))
    chosen = choose_demos(labels, n, demos(k, "permuted", seed))
    mapping = label_mapping(seed, n)
    assert chosen.shown == [int(mapping[g]) for g in chosen.gold]
    assert chosen.share_correct == 0.0


def test_random_labels_are_uniform_over_seeds_and_ignore_the_gold_label():
    n_classes, k, n_seeds = 3, 8, 1500
    labels = [0] * 200 + [1] * 50 + [2] * 50  # gold skewed; shown labels must not be
    counts, agree = np.zeros(n_classes), 0
    for seed in range(n_seeds):
        chosen = choose_demos(labels, n_classes, demos(k, "random", seed))
        counts += np.bincount(chosen.shown, minlength=n_classes)
        agree += sum(g == s for g, s in zip(chosen.gold, chosen.shown))
    expected = n_seeds * k / n_classes
    chi_square = float(((counts - expected) ** 2 / expected).sum())
    assert chi_square < 25, counts.tolist()  # df=2: p < 4e-6 for a fair draw
    assert abs(agree / (n_seeds * k) - 1 / n_classes) < 0.03


def test_random_labels_differ_between_seeds():
    labels = [0, 1] * 100
    shown = {tuple(choose_demos(labels, 2, demos(16, "random", s)).shown) for s in range(20)}
    assert len(shown) > 15


def test_per_example_demonstrations_differ_between_examples_and_are_reproducible():
    labels = [i % 2 for i in range(500)]
    cfg = demos(4, per_example=True)
    sets = [tuple(choose_demos(labels, 2, cfg, i).indices) for i in range(30)]
    assert len(set(sets)) == len(sets)
    assert sets == [tuple(choose_demos(labels, 2, cfg, i).indices) for i in range(30)]


def test_unnested_demonstrations_are_drawn_afresh_for_each_k():
    labels = [i % 2 for i in range(1000)]
    small = choose_demos(labels, 2, demos(5, nested=False)).indices
    large = choose_demos(labels, 2, demos(10, nested=False)).indices
    assert large[:5] != small


def test_per_example_demonstrations_never_include_the_query(tmp_path):
    cfg = run_config(
        "task=agnews", "demos.k=8", "demos.per_example=true", "eval.n_test=100", out_dir=tmp_path
    )
    plan = plan_cell(cfg)
    assert len({tuple(d.indices) for d in plan.demo_sets}) == len(plan.test)
    for query, demo_set in zip(plan.test, plan.demo_sets):
        assert query.key not in {plan.pool[i].key for i in demo_set.indices}


def test_k_larger_than_the_pool_is_an_error_with_the_pool_size():
    with pytest.raises(ICLError, match=r"demos.k=7 is larger than the demonstration pool \(6"):
        check_demo_request([0, 1] * 3, 2, demos(7))


def test_balanced_k_larger_than_a_class_allows_is_an_error_with_the_class_counts():
    labels = [0] * 10 + [1] * 2 + [2] * 10
    check_demo_request(labels, 3, demos(6, sampling="balanced"))  # 2 per class: fine
    with pytest.raises(ICLError, match=r"needs 3 examples of every class.*\[10, 2, 10\]"):
        check_demo_request(labels, 3, demos(7, sampling="balanced"))


@pytest.mark.parametrize(
    ("field", "value", "valid"),
    [("labels", "shuffled", LABEL_SETTINGS), ("sampling", "stratified", SAMPLING_RULES)],
)
def test_unknown_label_setting_or_sampling_rule_lists_the_valid_names(field, value, valid):
    with pytest.raises(ICLError, match=f"'{value}'") as info:
        check_demo_request([0, 1, 0, 1], 2, demos(2, **{field: value}))
    for name in valid:
        assert name in str(info.value)


def test_negative_k_is_an_error():
    with pytest.raises(ICLError, match="must be >= 0"):
        check_demo_request([0, 1, 0, 1], 2, demos(-1))


@pytest.mark.parametrize("k", range(15))
def test_balanced_k_is_accepted_exactly_when_every_class_has_ceil_k_over_n(k):
    labels = [0] * 4 + [1] * 4 + [2] * 4
    if math.ceil(k / 3) <= 4:
        check_demo_request(labels, 3, demos(k, sampling="balanced"))
    else:
        with pytest.raises(ICLError):
            check_demo_request(labels, 3, demos(k, sampling="balanced"))
