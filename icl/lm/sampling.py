"""Next-token distributions: the warpers (temperature, top-k, nucleus) and the choice of a token.

The warpers apply in the usual order — temperature, then top-k, then top-p (Holtzman et al.
2020) — to float32 logits; a token they remove gets probability 0. Greedy decoding is the
point mass on the argmax of the raw logits (the limit of temperature -> 0), so greedy and
sampled decoding, and speculative decoding under either, share one code path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from icl.errors import ICLError, unknown_name

STRATEGIES = ("greedy", "sample")


@dataclass(frozen=True)
class Sampler:
    """How a token is chosen from the model's logits."""

    strategy: str = "greedy"
    temperature: float = 1.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1.0: off

    def check(self) -> Sampler:
        """Fail, naming the fix, on settings no sampler accepts."""
        if self.strategy not in STRATEGIES:
            raise unknown_name("decoding strategy", self.strategy, STRATEGIES)
        if self.temperature <= 0:
            raise ICLError(
                f"decoding.temperature must be > 0, got {self.temperature} "
                f"(decoding.strategy=greedy is the temperature -> 0 limit)"
            )
        if self.top_k < 0:
            raise ICLError(f"decoding.top_k must be >= 1 (or 0: off), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ICLError(f"decoding.top_p must be in (0, 1], got {self.top_p}")
        return self

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        """The distribution a token is drawn from, over the last dimension (float32)."""
        if self.strategy == "greedy":
            index = logits.argmax(-1, keepdim=True)
            return torch.zeros_like(logits, dtype=torch.float32).scatter_(-1, index, 1.0)
        return warp(logits, self.temperature, self.top_k, self.top_p).softmax(-1)


def warp(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """float32 logits after temperature, top-k and top-p; removed tokens are -inf."""
    logits = logits.float() / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        ordered, order = logits.sort(-1, descending=True)
        probs = ordered.softmax(-1)
        # drop a token when the tokens ranked above it already reach p: what stays is the
        # smallest set whose mass reaches p (the top token always stays)
        reached = (probs.cumsum(-1) - probs) >= top_p
        drop = torch.zeros_like(reached).scatter(-1, order, reached)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def draw(probs: torch.Tensor, generator: torch.Generator) -> int:
    """One token drawn from a distribution over the vocabulary (on the CPU, seeded)."""
    return int(torch.multinomial(probs.float().cpu(), 1, generator=generator))
