"""Scoring rules: from the options' per-token log-probabilities to a prediction."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from icl.config import SCORING_RULES
from icl.errors import unknown_name


@dataclass(frozen=True)
class OptionScores:
    """Summed and per-token-mean log-probabilities of each option of one example."""

    sums: list[float]
    means: list[float]


def option_scores(option_logprobs: list[list[float]]) -> OptionScores:
    """A label's score is the sum of its tokens' log-probs; the mean is kept alongside."""
    sums = [float(np.sum(lp)) for lp in option_logprobs]
    means = [float(np.mean(lp)) for lp in option_logprobs]
    return OptionScores(sums=sums, means=means)


def predict(scores: OptionScores, rule: str = "direct") -> int:
    """The option a rule picks; ties go to the lower class index."""
    if rule == "direct":
        return int(np.argmax(scores.sums))
    raise unknown_name("scoring rule", rule, SCORING_RULES)


def perplexity(nll: float, count: int) -> float:
    return float(np.exp(nll / count)) if count else float("nan")
