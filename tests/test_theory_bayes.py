"""bayes_early_ascent: the closed-form posterior against brute-force integration, the exact
sampling of the demonstrations' statistics, and the early ascent itself."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from helpers import ROOT

import icl.cli
from icl.errors import ICLError
from icl.theory.bayes_early_ascent import (
    demonstration_statistics,
    input_block,
    label_block,
    peak_table,
    read_shots,
    risk_curves,
    scatter_matrices,
)
from icl.theory.bayes_mixture import MixturePrior, lin_lee_centres, posterior
from icl.theory.config import BayesEarlyAscentConfig


def normal_pdf(x, mean, std):
    return np.exp(-0.5 * ((x - mean) / std) ** 2) / (std * np.sqrt(2 * np.pi))


def brute_force_posterior(prior: MixturePrior, x, y, x_query):
    """Group weights and E[w x_query | data] for d = 1 by integrating the joint density of
    (group, mu, w) on a grid: the definition, with no conjugacy used."""
    grid = np.linspace(-7.0, 7.0, 1201)
    mu, w = np.meshgrid(grid, grid, indexing="ij")
    inputs = np.append(x, x_query)  # the query's input is data too
    log_lik_mu = sum(np.log(normal_pdf(xi, mu, prior.sigma)) for xi in inputs)
    log_lik_w = sum(np.log(normal_pdf(yi, w * xi, prior.tau)) for xi, yi in zip(x, y))
    masses, means = [], []
    for m in range(len(prior.weights)):
        log_prior = np.log(prior.weights[m]) + np.log(
            normal_pdf(mu, prior.input_centres[m, 0], prior.sigma_mu)
            * normal_pdf(w, prior.weight_centres[m, 0], prior.sigma_w)
        )
        density = np.exp(log_prior + log_lik_mu + log_lik_w)
        masses.append(np.trapezoid(np.trapezoid(density, grid, axis=1), grid))
        means.append(np.trapezoid(np.trapezoid(density * w, grid, axis=1), grid) / masses[-1])
    weights = np.array(masses) / sum(masses)
    return weights, np.array(means), float(weights @ np.array(means) * x_query)


@pytest.mark.parametrize("n_examples", [0, 1, 3])
def test_the_closed_form_posterior_equals_brute_force_integration(n_examples):
    """d = 1, two groups of unequal weight, spreads wide enough that every term matters."""
    prior = MixturePrior(
        input_centres=np.array([[0.8], [-1.2]]), weight_centres=np.array([[-0.5], [1.5]]),
        weights=np.array([0.3, 0.7]), sigma=1.0, tau=0.7, sigma_mu=0.6, sigma_w=0.8,
    )  # fmt: skip
    rng = np.random.default_rng(n_examples)
    x = rng.normal(0.5, 1.0, n_examples)
    y = 1.1 * x + rng.normal(0, 0.7, n_examples)
    x_query = 0.9
    post = posterior(
        prior, n_examples + 1, np.array([[x.sum() + x_query]]), np.array([[[x @ x]]]),
        np.array([[x @ y]]),
    )  # fmt: skip
    weights, group_means, prediction = brute_force_posterior(prior, x, y, x_query)
    assert np.allclose(post.group_weights[0], weights, atol=1e-6)
    assert np.allclose(post.group_w[0, :, 0], group_means, atol=1e-6)
    assert post.predict(np.array([[x_query]]))[0] == pytest.approx(prediction, abs=1e-6)


def test_lin_lee_centres_are_unit_vectors_with_opposite_weights():
    for d, groups in ((1, 2), (2, 3), (5, 3)):
        inputs, weights = lin_lee_centres(d)
        assert inputs.shape == (groups, d)
        assert np.allclose(np.linalg.norm(inputs, axis=1), 1.0)
        assert np.allclose(weights, -inputs)


def test_scatter_matrices_have_wishart_moments_in_both_branches():
    rng = np.random.default_rng(0)
    for df, d in ((1, 3), (2, 3), (3, 3), (40, 2)):  # a sum of outer products, then Bartlett
        draws = scatter_matrices(rng, df, d, 40000)
        assert np.allclose(draws.mean(0), df * np.eye(d), atol=0.1 * np.sqrt(df))
        assert draws[:, 0, 0].var() == pytest.approx(2 * df, rel=0.05)
        assert draws[:, 0, 1].var() == pytest.approx(df, rel=0.05)
        assert np.allclose(draws, draws.transpose(0, 2, 1))


def test_block_statistics_match_the_same_sums_of_drawn_points():
    """The exact draws of sums over a block of n points against summing n drawn points."""
    rng = np.random.default_rng(1)
    mean, w, sigma, n, size = np.array([0.6, -0.3]), np.array([1.0, 0.5]), 1.3, 6, 60000
    sum_x, sum_xx = input_block(rng, n, mean, sigma, size)
    gold = label_block(rng, "gold", sum_x, sum_xx, mean, w, sigma, noise=0.4)
    random = label_block(rng, "random", sum_x, sum_xx, mean, w, sigma, noise=0.0)
    points = mean + sigma * rng.standard_normal((size, n, 2))
    direct = {
        "sum_x": points.sum(1),
        "sum_xx": np.einsum("tni,tnj->tij", points, points).reshape(size, -1),
        "gold": np.einsum("tni,tn->ti", points, points @ w + rng.normal(0, 0.4, (size, n))),
        "random": np.einsum(
            "tni,tn->ti", points, (mean + sigma * rng.standard_normal((size, n, 2))) @ w
        ),
    }
    drawn = {"sum_x": sum_x, "sum_xx": sum_xx.reshape(size, -1), "gold": gold, "random": random}
    for name, values in drawn.items():
        se = direct[name].std(0) / np.sqrt(size)
        assert np.all(np.abs(values.mean(0) - direct[name].mean(0)) < 5 * np.sqrt(2) * se), name
        assert np.allclose(values.std(0), direct[name].std(0), rtol=0.03), name


def test_statistics_are_nested_and_shared_by_the_label_settings():
    rng = np.random.default_rng(2)
    stats = list(demonstration_statistics(rng, [0, 2, 5], np.ones(2), np.ones(2), 1.0, 7,
                                          ["gold", "random"]))  # fmt: skip
    assert [k for k, *_ in stats] == [0, 2, 5]
    k0, sum_x0, sum_xx0, xy0 = stats[0]
    assert not sum_x0.any() and not sum_xx0.any() and not xy0["gold"].any()
    # noiseless gold labels: sum x y = (sum x x^T) w exactly
    _, _, sum_xx, sum_xy = stats[2]
    assert np.allclose(sum_xy["gold"], sum_xx @ np.ones(2))
    assert not np.allclose(sum_xy["random"], sum_xy["gold"])


def test_the_inputs_retrieve_the_wrong_group_and_the_risk_rises_before_it_falls():
    """Lin & Lee's Figure 6 setting, d = 1 (the issue's probe: 7.13 at k=0, a peak of 7.74
    at k=8, 0.06 at k=8192; the inputs' group from 0.78 to 1.0 by k=32)."""
    cfg = BayesEarlyAscentConfig(dims=[1], ks=[0, 8, 32, 8192], trials=20000)
    risk = risk_curves(cfg, 1)
    gold = risk[risk["labels"] == "gold"].set_index("k")
    # the exact k=0 risk, by quadrature of the same predictor, is 7.199
    assert gold.loc[0, "risk"] == pytest.approx(7.199, abs=4 * gold.loc[0, "risk_se"])
    assert gold.loc[8, "risk"] > gold.loc[0, "risk"] + 0.3  # the early ascent
    assert gold.loc[8192, "risk"] < 0.1  # task learning
    assert gold.loc[0, "weight_1"] == pytest.approx(0.775, abs=0.01)
    assert gold.loc[32, "weight_1"] > 0.999
    random = risk[risk["labels"] == "random"].set_index("k")
    assert random.loc[8192, "risk"] > 5 * gold.loc[8192, "risk"]  # nothing to learn


def test_peak_table_finds_the_rise_before_the_low_point():
    risk = pd.DataFrame(
        {"d": 1, "labels": "gold", "k": [0, 1, 2, 4, 8], "risk": [5.0, 6.0, 7.0, 2.0, 3.0],
         "weight_1": [0.5, 0.9, 0.995, 1.0, 1.0]}
    )  # fmt: skip
    row = peak_table(risk, input_group=1).iloc[0]
    assert (row["peak_k"], row["peak_risk"], row["lowest_k"], row["k_retrieved"]) == (2, 7, 4, 2)


def test_shots_are_read_by_column_name_and_a_wrong_file_says_what_it_lacks(tmp_path):
    good = tmp_path / "shots.csv"
    pd.DataFrame({"task": ["sst2"], "labels": ["gold"], "k": [0], "ci_low": [0.5],
                  "mean": [0.8], "extra": [1]}).to_csv(good, index=False)  # fmt: skip
    assert read_shots(good)["mean"].iloc[0] == 0.8
    bad = tmp_path / "other.csv"
    pd.DataFrame({"task": ["sst2"], "k": [0]}).to_csv(bad, index=False)
    with pytest.raises(ICLError, match="lacks the column.*labels, mean"):
        read_shots(bad)


def test_the_committed_study_is_the_full_config_and_shows_the_early_ascent():
    """experiments/bayes_early_ascent is the output of the config as it stands (a changed config
    fails here until the study is rerun); the full run takes under a minute."""
    metrics = json.loads((ROOT / "experiments" / "bayes_early_ascent" / "metrics.json").read_text())
    full = dataclasses.asdict(icl.cli.theory_config("bayes_early_ascent", False, []))
    del full["overwrite"]
    assert metrics["config"] == full
    for d in (1, 3):
        assert metrics[f"d{d}_gold_peak_risk"] > metrics[f"d{d}_gold_risk_k0"] + 0.3
        assert metrics[f"d{d}_gold_risk_last"] < 0.1 < metrics[f"d{d}_random_risk_last"]
