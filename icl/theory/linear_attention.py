"""Linear self-attention, von Oswald et al. 2023's construction of one gradient-descent step
from it, and plain gradient descent to check the construction against.

One layer maps each token e_j to e_j + P W_V sum_i e_i (e_i^T W_K^T W_Q e_j), the sum over the
N context tokens only (no softmax, LayerNorm, bias or MLP). With W_K = W_Q = [[I, 0], [0, 0]],
W_V = [[0, 0], [W0, -I]] and P = (eta / N) I it performs one step of gradient descent on
L(W) = 1/(2N) sum_i |W x_i - y_i|^2 from W0 on every token: a context token's y-slot becomes
y_j - dW x_j and the query's -(W0 + dW) x_query, with dW = -eta grad L(W0). Applied K times
(from W0 = 0) it performs K steps, since the context y-slots then hold the residuals.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from icl.theory.regression_tasks import RegressionTasks


@dataclass(frozen=True)
class AttentionWeights:
    """The four (d + o) x (d + o) matrices of a single-head linear self-attention layer."""

    query: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    projection: torch.Tensor


def attend(tokens: torch.Tensor, weights: AttentionWeights, n_context: int) -> torch.Tensor:
    """One linear self-attention layer with its residual: every token (query included) reads
    the first n_context tokens. Computed as q (K^T V) P^T: (B, D, D) per task, not (T, T)."""
    context = tokens[:, :n_context]
    keys_values = (context @ weights.key.T).transpose(1, 2) @ (context @ weights.value.T)
    return tokens + (tokens @ weights.query.T) @ keys_values @ weights.projection.T


def read_prediction(tokens: torch.Tensor, d: int) -> torch.Tensor:
    """The prediction a layer writes into the query's y-slot, as -y (B, o)."""
    return -tokens[:, -1, d:]


def context_moment(context: torch.Tensor) -> torch.Tensor:
    """sum_i e_i e_i^T over the context tokens (B, N, D) -> (B, D, D)."""
    return context.transpose(1, 2) @ context


def _shared_times(shared: torch.Tensor, batched: torch.Tensor) -> torch.Tensor:
    """shared @ batched[b] for every b (B, D, D), as one wide GEMM: on a CPU far faster than a
    bmm of B tiny matrices."""
    size, batch = shared.shape[0], batched.shape[0]
    wide = shared @ batched.transpose(0, 1).reshape(size, -1)
    return wide.reshape(size, batch, -1).transpose(0, 1)


def query_after(weights: AttentionWeights, context, query, layers: int, d: int = 0):
    """The query token's slots from ``d`` on (all of it by default; ``d`` = the input size gives
    the y-slot) after ``layers`` applications of one layer to the context (B, N, D) and query
    (B, D) tokens: equal to stacking ``attend`` (a test checks it), and much cheaper.

    A layer maps every token e to e + e G, with G = A M R per task, A = W_Q^T W_K,
    R = W_V^T P^T and M the context's moment sum_i e_i e_i^T; the last layer is needed at the
    query only, which reads sum_i e_i (e_i . u) R with u = e_q A."""
    a = weights.query.T @ weights.key
    r = weights.value.T @ weights.projection.T
    for _ in range(layers - 1):
        g = _shared_times(a, context_moment(context)) @ r
        query = query + (query[:, :, None] * g).sum(1)
        context = context + context @ g
    scores = context @ (query @ a)[:, :, None]  # (B, N, 1)
    return query[:, d:] + (scores * (context @ r[:, d:])).sum(1)


def gd_construction(d: int, d_out: int, n_context: int, eta: float, w0=None, dtype=None):
    """The weights with which one layer performs one GD step of learning rate eta from W0."""
    dtype = dtype or torch.get_default_dtype()
    size = d + d_out
    query = torch.zeros(size, size, dtype=dtype)
    query[:d, :d] = torch.eye(d, dtype=dtype)
    value = torch.zeros(size, size, dtype=dtype)
    if w0 is not None:
        value[d:, :d] = w0.to(dtype)
    value[d:, d:] = -torch.eye(d_out, dtype=dtype)
    projection = (eta / n_context) * torch.eye(size, dtype=dtype)
    return AttentionWeights(query, query.clone(), value, projection)


def gd_step(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, eta: float) -> torch.Tensor:
    """W - eta grad L(W) for L(W) = 1/(2N) sum_i |W x_i - y_i|^2, per task: (B, o, d)."""
    residuals = x @ w.transpose(1, 2) - y  # (B, N, o)
    return w - eta * residuals.transpose(1, 2) @ x / x.shape[1]


def gd_predictions(tasks: RegressionTasks, eta: float, steps: int = 1, w0=None):
    """The query predictions (B, o) after ``steps`` GD steps from W0 (zero unless given)."""
    batch, d_out = tasks.y.shape[0], tasks.y.shape[-1]
    if w0 is None:
        w = torch.zeros(batch, d_out, tasks.d, dtype=tasks.x.dtype)
    else:
        w = w0.to(tasks.x.dtype).expand(batch, -1, -1)
    for _ in range(steps):
        w = gd_step(tasks.x, tasks.y, w, eta)
    return torch.einsum("bod,bd->bo", w, tasks.x_query)


class LinearSelfAttention(torch.nn.Module):
    """A trainable layer of linear self-attention, applied ``layers`` times (one set of
    weights, as K GD steps use one learning rate), initialised near zero (von Oswald et al.:
    a truncated normal of variance init_scale / fan_in)."""

    def __init__(self, size: int, layers: int, init_scale: float, gen: torch.Generator):
        super().__init__()
        self.layers = layers
        # the std of a normal truncated at two std that has variance init_scale / fan_in
        std = (init_scale / size) ** 0.5 / 0.8796256610342398
        params = []
        for _ in range(4):
            weight = torch.empty(size, size)
            torch.nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std, generator=gen)
            params.append(torch.nn.Parameter(weight))
        self.query, self.key, self.value, self.projection = params

    def weights(self) -> AttentionWeights:
        return AttentionWeights(self.query, self.key, self.value, self.projection)

    def forward(self, tokens: torch.Tensor, n_context: int) -> torch.Tensor:
        """Every token after the layers (the reference form; training uses ``query_after``)."""
        for _ in range(self.layers):
            tokens = attend(tokens, self.weights(), n_context)
        return tokens
