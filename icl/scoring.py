"""Scoring rules: from the options' log-probabilities to a prediction.

Each rule gives every class a score and predicts the best one (ties go to the lower class):

- ``direct``: log P(label word | prompt), summed over the word's tokens.
- ``direct_mean``: the same, averaged per token.
- ``channel`` (Min et al. 2022): log P(input | demonstrations in channel order, label word).
- ``calibrated`` (Zhao et al. 2021): p / p_cf, with p the option probabilities normalised over
  the options and p_cf their mean after content-free inputs under the same demonstrations
  (the diagonal correction W = diag(p_cf)^-1, b = 0).
- ``pmi`` (Holtzman et al. 2021): log P(label | prompt) - log P(label | domain premise).

The functions here are pure: the extra forward passes some rules need (content-free inputs,
the domain premise, channel prompts) are run by ``icl.runner``, which hands their numbers in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from icl.config import SCORING_RULES
from icl.errors import unknown_name

# what each rule needs beyond the direct option log-probs, from passes of its own
EXTRA_PASSES = {"calibrated": "content_free", "pmi": "premise", "channel": "channel"}


@dataclass(frozen=True)
class OptionScores:
    """Summed and per-token-mean log-probabilities of each option of one example."""

    sums: list[float]
    means: list[float]


@dataclass(frozen=True)
class RuleInputs:
    """One example's numbers from the extra passes, one value per class (None: not run)."""

    # calibrated: the content-free option probabilities under this example's demonstrations
    p_cf: list[float] | None = None
    # pmi: each option's summed log-prob after the domain premise
    premise: list[float] | None = None
    # channel: log P(input | label) for each class's label word
    channel: list[float] | None = None


def option_scores(option_logprobs: list[list[float]]) -> OptionScores:
    """A label's score is the sum of its tokens' log-probs; the mean is kept alongside."""
    sums = [float(np.sum(lp)) for lp in option_logprobs]
    means = [float(np.mean(lp)) for lp in option_logprobs]
    return OptionScores(sums=sums, means=means)


def requested_rules(rule: str, extra_rules) -> list[str]:
    """The primary rule first, then the extra ones, each once."""
    return list(dict.fromkeys([rule, *extra_rules]))


def check_rules(rules) -> None:
    for name in rules:
        if name not in SCORING_RULES:
            raise unknown_name("scoring rule", name, SCORING_RULES)


def normalise(logprobs) -> np.ndarray:
    """Probabilities over the options alone (a softmax of their log-probs)."""
    logprobs = np.asarray(logprobs, dtype=np.float64)
    p = np.exp(logprobs - logprobs.max())
    return p / p.sum()


def content_free_probs(content_free_sums) -> np.ndarray:
    """p_cf: the normalised option probabilities averaged over the content-free inputs."""
    return np.mean([normalise(sums) for sums in content_free_sums], axis=0)


def calibrate(sums, p_cf) -> np.ndarray:
    """The normalised option probabilities times diag(p_cf)^-1, renormalised to sum to 1."""
    q = normalise(sums) / np.asarray(p_cf, dtype=np.float64)
    return q / q.sum()


def pmi(sums, premise_sums) -> np.ndarray:
    """Domain-conditional PMI: log P(label | prompt) - log P(label | domain premise)."""
    return np.asarray(sums, dtype=np.float64) - np.asarray(premise_sums, dtype=np.float64)


def _needed(rule: str, value):
    if value is None:
        raise ValueError(f"rule {rule!r} needs the {EXTRA_PASSES[rule]} pass, which did not run")
    return value


def rule_scores(scores: OptionScores, rule: str, inputs: RuleInputs | None = None) -> np.ndarray:
    """Each class's score under a rule; the prediction is the highest."""
    inputs = inputs or RuleInputs()
    if rule == "direct":
        return np.asarray(scores.sums)
    if rule == "direct_mean":
        return np.asarray(scores.means)
    if rule == "calibrated":
        return calibrate(scores.sums, _needed(rule, inputs.p_cf))
    if rule == "pmi":
        return pmi(scores.sums, _needed(rule, inputs.premise))
    if rule == "channel":
        return np.asarray(_needed(rule, inputs.channel), dtype=np.float64)
    raise unknown_name("scoring rule", rule, SCORING_RULES)


def predict(scores: OptionScores, rule: str = "direct", inputs: RuleInputs | None = None) -> int:
    """The option a rule picks; ties go to the lower class index."""
    return int(np.argmax(rule_scores(scores, rule, inputs)))


def perplexity(nll: float, count: int) -> float:
    return float(np.exp(nll / count)) if count else float("nan")
