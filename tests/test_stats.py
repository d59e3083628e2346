"""The hierarchical bootstrap and the sign-flip test (icl/stats.py) on synthetic paired data."""

from __future__ import annotations

import numpy as np
import pytest

from icl import stats
from icl.metrics import macro_f1

N_SEEDS, N_EXAMPLES = 5, 100


def paired_scores(rng, effect: float, seed_sd=0.08, example_sd=0.12):
    """Correct (0/1) of settings A and B on the same seeds x examples, with a seed effect on A
    (its demonstration set), example difficulty shared by both, and E[A - B] = effect."""
    seed_effect = rng.uniform(-seed_sd, seed_sd, size=(N_SEEDS, 1)) * np.sqrt(3)
    difficulty = rng.uniform(-example_sd, example_sd, size=(1, N_EXAMPLES)) * np.sqrt(3)
    p_b = 0.5 + difficulty
    p_a = p_b + effect + seed_effect
    assert p_a.min() > 0 and p_a.max() < 1
    a = rng.random((N_SEEDS, N_EXAMPLES)) < p_a
    b = rng.random((N_SEEDS, N_EXAMPLES)) < p_b
    return a.astype(float), b.astype(float)


def test_the_interval_covers_a_known_effect_at_about_the_nominal_rate():
    rng = np.random.default_rng(2024)
    covered = 0
    for _ in range(100):
        a, b = paired_scores(rng, effect=0.1)
        low, high = stats.interval(a - b, rng, n_resamples=1000)
        covered += low <= 0.1 <= high
    assert covered >= 90


def test_the_sign_flip_test_rejects_about_five_percent_at_effect_zero():
    rng = np.random.default_rng(7)
    rejections = [
        stats.sign_flip_p(np.subtract(*paired_scores(rng, 0.0, seed_sd=0.0)), rng, 999) < 0.05
        for _ in range(300)
    ]
    assert 0.02 <= np.mean(rejections) <= 0.09


def test_the_sign_flip_test_finds_a_real_effect():
    rng = np.random.default_rng(3)
    a, b = paired_scores(rng, effect=0.15)
    assert stats.sign_flip_p(a - b, rng, 999) < 0.01


def test_the_sign_flip_p_agrees_with_scipy():
    from scipy.stats import permutation_test

    rng = np.random.default_rng(5)
    a, b = paired_scores(rng, effect=0.03)
    ours = stats.sign_flip_p(a - b, np.random.default_rng(0), 20000)
    theirs = permutation_test(
        (a.ravel(), b.ravel()),
        lambda x, y, axis: np.mean(x - y, axis=axis),
        permutation_type="samples",
        n_resamples=20000,
        vectorized=True,
        rng=np.random.default_rng(0),
    ).pvalue
    assert ours == pytest.approx(theirs, abs=0.015)


def test_the_bootstrap_is_seeded_and_reproducible():
    a, b = paired_scores(np.random.default_rng(0), effect=0.05)
    first = stats.paired_effect(a, b, np.random.default_rng(11), n_permutations=999)
    again = stats.paired_effect(a, b, np.random.default_rng(11), n_permutations=999)
    other = stats.paired_effect(a, b, np.random.default_rng(12), n_permutations=999)
    assert first == again
    assert first["difference"] == other["difference"] and first["ci_low"] != other["ci_low"]
    assert (first["n_seeds"], first["n_examples"]) == (N_SEEDS, N_EXAMPLES)


def test_the_interval_widens_with_few_seeds_and_is_empty_for_one_score():
    rng = np.random.default_rng(1)
    assert stats.expanded_alpha(np.inf) == pytest.approx(0.05)
    assert stats.expanded_alpha(2.0) < stats.expanded_alpha(10.0) < 0.05
    # scores that never vary: a point, not an error
    assert stats.interval(np.ones((3, 10)), rng) == (1.0, 1.0)
    assert all(np.isnan(stats.interval(np.ones((1, 1)), rng)))
    assert stats.effective_df(np.ones((3, 10))) == np.inf
    with pytest.raises(ValueError, match="shape"):
        stats.paired_effect(np.ones((2, 3)), np.ones((2, 4)), rng)


def test_the_macro_f1_statistic_is_icl_metrics_macro_f1_on_the_identity_draw():
    rng = np.random.default_rng(0)
    pred = rng.integers(3, size=(4, 30))
    gold = rng.integers(3, size=30)
    statistic = stats.macro_f1_statistic(pred, gold, 3)
    seeds = np.arange(4)[None, :]
    examples = np.broadcast_to(np.arange(30), (1, 4, 30))
    expected = np.mean([macro_f1(pred[s], gold, 3) for s in range(4)])
    assert statistic(seeds, examples)[0] == pytest.approx(expected)


def test_copies_of_one_deterministic_cell_count_as_one_seed():
    rng = np.random.default_rng(3)
    row = (rng.random(100) < 0.8).astype(float)[None, :]
    copies = np.repeat(row, 3, axis=0)
    one = stats.interval(row, np.random.default_rng(0))
    assert stats.interval(copies, np.random.default_rng(0)) == pytest.approx(one)
    assert one[1] - one[0] > 0.12  # about +-8 points at 80% of 100, not +-8 / sqrt(3)
    # two deterministic cells: their differences are one seed's, whatever the copies
    half = np.repeat(row * 0.5, 3, axis=0)
    both = stats.paired_effect(copies, half, np.random.default_rng(0))
    alone = stats.paired_effect(row, row * 0.5, np.random.default_rng(0))
    assert (both["ci_low"], both["ci_high"]) == pytest.approx((alone["ci_low"], alone["ci_high"]))
    assert both["p"] == pytest.approx(alone["p"])
    # a real seed spread on one side keeps every seed
    other = (rng.random((3, 100)) < 0.6).astype(float)
    assert stats.distinct_seeds(copies - other).shape == (3, 100)
