"""icl_as_gd: the linear self-attention construction of a GD step, the fast readout that the
training uses, the line search, the sensitivities, and training itself."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from helpers import ROOT

import icl.cli
from icl.theory.config import IclAsGdConfig
from icl.theory.icl_as_gd import (
    compare,
    construction_errors,
    expected_gd_step,
    gd_model,
    generator,
    line_search,
    predictions_and_sensitivities,
    train,
)
from icl.theory.linear_attention import (
    AttentionWeights,
    attend,
    gd_construction,
    query_after,
    read_prediction,
)
from icl.theory.regression_tasks import context_tokens, sample_tasks, tokens


def random_case(seed: int):
    """Random shapes, tasks, W0 and eta, in float64."""
    gen = torch.Generator().manual_seed(seed)
    d, d_out = (int(v) for v in torch.randint(1, 7, (2,), generator=gen))
    n_context = int(torch.randint(2, 25, (1,), generator=gen))
    eta = float(0.05 + 2 * torch.rand(1, generator=gen, dtype=torch.float64))
    tasks = sample_tasks(gen, 16, d, n_context, d_out, 2.0, 1.0, torch.float64)
    w0 = torch.randn(d_out, d, generator=gen, dtype=torch.float64)
    return tasks, w0, eta


def gd_step_by_hand(tasks, w0, eta):
    """Every token after one GD step from W0, computed with numpy from the definition:
    dW = -eta/N sum_i (W0 x_i - y_i) x_i^T; context y_j - dW x_j; query -(W0 + dW) x_q."""
    x, y, xq = (t.numpy() for t in (tasks.x, tasks.y, tasks.x_query))
    w0 = w0.numpy()
    residual = np.einsum("od,bnd->bno", w0, x) - y
    dw = -eta / x.shape[1] * np.einsum("bno,bnd->bod", residual, x)
    context = np.concatenate([x, y - np.einsum("bod,bnd->bno", dw, x)], axis=-1)
    query = np.concatenate([xq, -np.einsum("bod,bd->bo", w0 + dw, xq)], axis=-1)
    return np.concatenate([context, query[:, None]], axis=1)


def construction_error(weights: AttentionWeights, tasks, w0, eta) -> float:
    out = attend(tokens(tasks, w0=w0), weights, tasks.n_context).numpy()
    return float(np.abs(out - gd_step_by_hand(tasks, w0, eta)).max())


@pytest.mark.parametrize("seed", range(6))
def test_the_construction_is_one_gd_step_on_every_token_in_float64(seed):
    tasks, w0, eta = random_case(seed)
    d, d_out, n = tasks.d, tasks.y.shape[-1], tasks.n_context
    weights = gd_construction(d, d_out, n, eta, w0, torch.float64)
    assert construction_error(weights, tasks, w0, eta) < 1e-10
    # the check can fail: W_V's sign flipped, or P without its 1/N, is not a GD step
    flipped = dataclasses.replace(weights, value=-weights.value)
    assert construction_error(flipped, tasks, w0, eta) > 1e-3
    unscaled = dataclasses.replace(weights, projection=weights.projection * n)
    assert construction_error(unscaled, tasks, w0, eta) > 1e-3


def test_stacked_constructed_layers_are_k_gd_steps_and_the_study_records_it():
    errors = construction_errors(torch.Generator().manual_seed(3), cases=3)
    assert (errors["one_step_error"] < 1e-10).all()
    assert (errors["three_steps_error"] < 1e-10).all()
    tasks, _, eta = random_case(7)
    d, d_out, n = tasks.d, tasks.y.shape[-1], tasks.n_context
    zero = gd_construction(d, d_out, n, eta, None, torch.float64)
    toks = tokens(tasks)
    w = np.zeros((len(tasks.x), d_out, d))
    x, y = tasks.x.numpy(), tasks.y.numpy()
    for _ in range(4):
        toks = attend(toks, zero, n)
        residual = np.einsum("bod,bnd->bno", w, x) - y
        w = w - eta / n * np.einsum("bno,bnd->bod", residual, x)
    expected = np.einsum("bod,bd->bo", w, tasks.x_query.numpy())
    assert np.abs(read_prediction(toks, d).numpy() - expected).max() < 1e-10


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_the_fast_query_readout_equals_stacked_attention(layers):
    gen = torch.Generator().manual_seed(layers)
    tasks = sample_tasks(gen, 8, 4, 6, 2, 1.0, 1.0, torch.float64)
    size = 6
    weights = AttentionWeights(*(0.3 * torch.randn(size, size, generator=gen, dtype=torch.float64)
                                 for _ in range(4)))  # fmt: skip
    toks = tokens(tasks)
    for _ in range(layers):
        toks = attend(toks, weights, tasks.n_context)
    context, query = context_tokens(tasks), tokens(tasks)[:, -1]
    assert torch.allclose(query_after(weights, context, query, layers), toks[:, -1], atol=1e-12)
    y_slot = query_after(weights, context, query, layers, d=4)
    assert torch.allclose(y_slot, toks[:, -1, 4:], atol=1e-12, rtol=0)


def test_gd_sensitivity_to_the_query_is_its_weight_update():
    """For one step from zero, y_GD = dW x_q with dW = eta/N sum_i y_i x_i^T."""
    cfg = IclAsGdConfig(d=5, n_context=7)
    tasks = sample_tasks(torch.Generator().manual_seed(0), 32, 5, 7, 1, 1.0, 1.0, torch.float64)
    predict = gd_model(cfg, 2.5, 1, torch.float64)
    predictions, grads = predictions_and_sensitivities(predict, tasks)
    dw = 2.5 / 7 * torch.einsum("bno,bnd->bod", tasks.y, tasks.x)
    assert torch.allclose(grads, dw[:, 0], atol=1e-12)
    assert torch.allclose(predictions, torch.einsum("bod,bd->bo", dw, tasks.x_query), atol=1e-12)
    same = compare(predict, predict, tasks)
    assert same["pred_diff"] == 0 and same["cosine"] == pytest.approx(1.0)


def test_line_search_finds_the_exact_expected_gd_step():
    cfg = IclAsGdConfig()
    eta_star, loss_star = expected_gd_step(cfg)
    # the probe of this setup: the best step has eta about 6 and loss 0.206
    assert eta_star == pytest.approx(6.06, abs=0.01) and loss_star == pytest.approx(0.206, abs=1e-3)
    tasks = sample_tasks(generator(5, "line_search"), 20000, 10, 10, dtype=torch.float64)
    eta, loss = line_search(tasks, 1, eta_max=20.0, grid=41)
    assert eta == pytest.approx(eta_star, rel=0.04) and loss == pytest.approx(loss_star, rel=0.03)
    # one step's loss is a quadratic in eta: its minimiser is E[a y] / E[a^2], a the eta=1 step
    a = gd_model(cfg, 1.0, 1, torch.float64)(context_tokens(tasks), tokens(tasks)[:, -1]).detach()
    closed = float((a * tasks.y_query).sum() / (a * a).sum())
    assert eta == pytest.approx(closed, rel=1e-4)


def test_training_lowers_the_loss_towards_gd():
    cfg = IclAsGdConfig(eval_tasks=1000)
    cfg.train.batch, cfg.train.eval_every = 256, 100
    eval_tasks = sample_tasks(generator(0, "eval"), 1000, 10, 10)
    gd_predict = gd_model(cfg, 6.0, 1)
    _, rows = train(cfg, 1, 300, eval_tasks, gd_predict)
    first, last = rows[0], rows[-1]
    assert last["loss"] < 0.7 * first["loss"]
    assert last["cosine"] > first["cosine"] + 0.5
    assert last["pred_diff"] < first["pred_diff"]


def test_the_committed_full_run_has_the_full_config_and_meets_the_2_percent_bar():
    """The committed study (experiments/icl_as_gd) is the output of the full config as it
    stands (a changed config fails here until the study is rerun), and its trained layer's loss
    is within 2% of the best GD step's; the slow test below reruns the one-layer part."""
    metrics = json.loads((ROOT / "experiments" / "icl_as_gd" / "metrics.json").read_text())
    full = dataclasses.asdict(icl.cli.theory_config("icl_as_gd", False, []))  # the YAML, as is
    del full["overwrite"]
    assert metrics["study"] == "icl_as_gd" and metrics["config"] == full
    assert metrics["trained_loss"] <= 1.02 * metrics["gd_loss"]
    assert metrics["construction_error"] < 1e-10


@pytest.mark.slow
def test_the_full_one_layer_config_comes_within_2_percent_of_gd():
    """The study's full one-layer run (5,000 steps of batch 2,048), without the extensions."""
    from icl.theory.icl_as_gd import compute

    cfg = IclAsGdConfig(depths=[], input_scales=[1.0])
    _, headline = compute(cfg)
    assert headline["trained_loss"] <= 1.02 * headline["gd_loss"]
    assert headline["cosine"] > 0.99
