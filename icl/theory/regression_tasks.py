"""Random linear-regression tasks and their tokens, as von Oswald et al. 2023 feed them to a
linear self-attention layer: one token e_i = (x_i, y_i) per context pair and the query's token
(x_query, -W0 x_query), whose y-slot the layer overwrites with its (negated) prediction."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class RegressionTasks:
    """A batch of tasks y = W x: contexts (B, N, d) -> (B, N, o), queries (B, d) -> (B, o)."""

    x: torch.Tensor
    y: torch.Tensor
    x_query: torch.Tensor
    y_query: torch.Tensor
    weights: torch.Tensor  # (B, o, d)

    @property
    def d(self) -> int:
        return self.x.shape[-1]

    @property
    def n_context(self) -> int:
        return self.x.shape[1]

    def scaled(self, factor: float) -> RegressionTasks:
        """The same tasks with every input (and so every label) multiplied by factor."""
        return RegressionTasks(
            self.x * factor, self.y * factor, self.x_query * factor, self.y_query * factor,
            self.weights,
        )  # fmt: skip


def sample_tasks(
    gen: torch.Generator,
    n_tasks: int,
    d: int,
    n_context: int,
    d_out: int = 1,
    input_range: float = 1.0,
    weight_scale: float = 1.0,
    dtype: torch.dtype = torch.float32,
) -> RegressionTasks:
    """Tasks with x ~ U(-input_range/2, input_range/2)^d (context and query alike), W with
    N(0, weight_scale^2) entries, and noiseless labels y = W x."""
    weights = weight_scale * torch.randn(n_tasks, d_out, d, generator=gen, dtype=dtype)
    x = (torch.rand(n_tasks, n_context + 1, d, generator=gen, dtype=dtype) - 0.5) * input_range
    y = x @ weights.transpose(1, 2)  # (B, N + 1, o)
    return RegressionTasks(x[:, :-1], y[:, :-1], x[:, -1], y[:, -1], weights)


def context_tokens(tasks: RegressionTasks) -> torch.Tensor:
    """The context pairs as tokens (B, N, d + o)."""
    return torch.cat([tasks.x, tasks.y], dim=-1)


def query_token(x_query: torch.Tensor, d_out: int, w0=None) -> torch.Tensor:
    """The query's token (B, d + o): (x_query, -W0 x_query), W0 (o, d) zero unless given."""
    start = x_query.new_zeros(len(x_query), d_out) if w0 is None else -(x_query @ w0.T)
    return torch.cat([x_query, start], dim=-1)


def tokens(tasks: RegressionTasks, w0=None) -> torch.Tensor:
    """The token sequence (B, N + 1, d + o): the context pairs, then the query's token, for
    gradient descent from W0 (zero unless given)."""
    query = query_token(tasks.x_query, tasks.y.shape[-1], w0)
    return torch.cat([context_tokens(tasks), query[:, None]], dim=1)
