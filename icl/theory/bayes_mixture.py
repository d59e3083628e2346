"""The Bayes-optimal in-context predictor of Lin & Lee 2024 ("Dual Operating Modes of In-Context
Learning"): a Gaussian mixture of linear-regression tasks, and its posterior in closed form.

A task is drawn by choosing a group m (weight pi_m), then its input mean mu ~ N(mu_m, sigma_mu^2 I)
and weights w ~ N(w_m, sigma_w^2 I); its examples are x ~ N(mu, sigma^2 I), y = w.x + N(0, tau^2).
Given k demonstrations and the query input, the posterior over (m, mu, w) stays a mixture of
Gaussians: each group's weight is re-weighted by how well its input centre explains the inputs
(the query's included; task retrieval) and its weight centre the labels, and each group's w is
pulled from w_m towards the demonstrations' least-squares fit (task learning). Everything here
is a function of the demonstrations' sufficient statistics, vectorised over trials.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import log_softmax


@dataclass(frozen=True)
class MixturePrior:
    """The groups' centres (M, d), their weights (M,) and the four scales."""

    input_centres: np.ndarray
    weight_centres: np.ndarray
    weights: np.ndarray
    sigma: float  # input spread around the task's mean
    tau: float  # label noise
    sigma_mu: float  # spread of a task's input mean around its group's centre
    sigma_w: float  # spread of a task's weights around its group's centre

    @property
    def d(self) -> int:
        return self.input_centres.shape[1]

    @property
    def delta_mu(self) -> float:
        """How much one input moves the input-mean posterior, relative to the prior."""
        return (self.sigma_mu / self.sigma) ** 2

    @property
    def delta_w(self) -> float:
        """How much one example moves the weight posterior, relative to the prior."""
        return (self.sigma_w / self.tau) ** 2


def _unit_rows(rows) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float64)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def lin_lee_centres(d: int) -> tuple[np.ndarray, np.ndarray]:
    """The groups of Lin & Lee's Figure 6, as unit vectors: for d=1 two groups, inputs at +1 and
    -1 with weights -1 and +1; for d >= 2 three groups, inputs (+,+,...), (-,-,...), (+,-,...)
    with weights of the opposite signs. Group 1's input centre with group 2's weights is the
    early-ascent test task: its inputs point at the wrong group."""
    if d < 1:
        raise ValueError(f"the input dimension must be at least 1, not {d}")
    if d == 1:
        inputs = _unit_rows([[1.0], [-1.0]])
    else:
        inputs = _unit_rows([[1.0] * d, [-1.0] * d, [1.0] + [-1.0] * (d - 1)])
    return inputs, -inputs


def lin_lee_prior(d: int, sigma: float, tau: float, sigma_mu: float, sigma_w: float):
    """The prior of Lin & Lee's Figure 6 in dimension d: their centres, equal group weights."""
    inputs, weights = lin_lee_centres(d)
    pis = np.full(len(inputs), 1.0 / len(inputs))
    return MixturePrior(inputs, weights, pis, sigma, tau, sigma_mu, sigma_w)


@dataclass(frozen=True)
class Posterior:
    """Per trial: each group's posterior weight (T, M) and posterior mean of w (T, M, d)."""

    group_weights: np.ndarray
    group_w: np.ndarray

    def predict(self, query: np.ndarray) -> np.ndarray:
        """The posterior-mean prediction of y for each trial's query input (T, d) -> (T,)."""
        per_group = np.einsum("tmd,td->tm", self.group_w, query)
        return np.einsum("tm,tm->t", self.group_weights, per_group)


def posterior(prior: MixturePrior, n_inputs, sum_x, sum_xx, sum_xy) -> Posterior:
    """The posterior given, per trial, the number of inputs seen (the k demonstrations and the
    query, which also says where the task's inputs lie), their sum (T, d), and the k labelled
    demonstrations' sum of x x^T (T, d, d) and of x y (T, d).

    Each group's log weight changes by the evidence its centres give the data; the factors the
    groups share (the same covariances) cancel in the normalisation, so only the terms in the
    centres remain: for the inputs, with delta = sigma_mu^2 / sigma^2 and n inputs,
    -(|mu_m|^2 - |mu_m + delta sum_x|^2 / (1 + delta n)) / (2 sigma_mu^2), and for the labels,
    with B = I + delta_w sum_xx and b_m = w_m + delta_w sum_xy, -(|w_m|^2 - b_m.B^-1 b_m) /
    (2 sigma_w^2); the group's posterior mean of w is B^-1 b_m.
    """
    sum_x, sum_xx, sum_xy = np.asarray(sum_x), np.asarray(sum_xx), np.asarray(sum_xy)
    n_inputs = np.broadcast_to(np.asarray(n_inputs, dtype=np.float64), sum_x.shape[:1])
    mu_m, w_m = prior.input_centres, prior.weight_centres  # (M, d)
    shifted = mu_m[None] + prior.delta_mu * sum_x[:, None, :]  # (T, M, d)
    shrink = 1.0 / (1.0 + prior.delta_mu * n_inputs)  # (T,)
    input_cost = (mu_m**2).sum(-1)[None] - shrink[:, None] * (shifted**2).sum(-1)
    precision = np.eye(prior.d)[None] + prior.delta_w * sum_xx  # (T, d, d)
    pulled = w_m[None] + prior.delta_w * sum_xy[:, None, :]  # (T, M, d)
    group_w = np.linalg.solve(precision, pulled.transpose(0, 2, 1)).transpose(0, 2, 1)
    label_cost = (w_m**2).sum(-1)[None] - np.einsum("tmd,tmd->tm", pulled, group_w)
    log_weights = (
        np.log(prior.weights)[None]
        - input_cost / (2 * prior.sigma_mu**2)
        - label_cost / (2 * prior.sigma_w**2)
    )
    return Posterior(np.exp(log_softmax(log_weights, axis=1)), group_w)
