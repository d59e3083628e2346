"""What the engines are asked to score and what they give back."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ScoreRequest:
    """One prompt to score: a prefix shared with other requests (BOS and demonstrations), the
    query after it, and the continuations whose log-probs are read (the options).

    A test example's prompt is one; so are the extra prompts of some scoring rules (content-free
    inputs and the domain premise under the same demonstrations, channel prompts whose one option
    is the input).
    """

    prefix: tuple[int, ...]
    query: tuple[int, ...]
    options: tuple[tuple[int, ...], ...]

    def __hash__(self) -> int:
        # requests are memo keys and a prefix runs to hundreds of tokens: hash it once
        cached = self.__dict__.get("_hash")
        if cached is None:
            cached = hash((self.prefix, self.query, self.options))
            object.__setattr__(self, "_hash", cached)
        return cached


@dataclass
class ScoreResult:
    """Per-token log-probs of each option after the prompt, and the prompt's NLL parts."""

    option_logprobs: list[list[float]] = field(default_factory=list)
    prefix_nll: float = 0.0
    prefix_count: int = 0
    query_nll: float = 0.0
    query_count: int = 0

    def copy(self) -> ScoreResult:
        return dataclasses.replace(self, option_logprobs=[list(o) for o in self.option_logprobs])


@dataclass
class ScoreStats:
    """Where a pass's results came from: computed, the process's memo, the score cache."""

    requests: int = 0
    computed: int = 0
    from_memo: int = 0
    from_cache: int = 0

    def add(self, requests: int, computed: int, cached: int) -> None:
        self.requests += requests
        self.computed += computed
        self.from_cache += cached
        self.from_memo += requests - computed - cached


def empty_results(requests) -> list[ScoreResult]:
    """A zeroed result per request, with one slot per option token."""
    return [
        ScoreResult(option_logprobs=[[0.0] * len(opt) for opt in req.options]) for req in requests
    ]
