"""Scoring rules: from the options' log-probabilities to a prediction, one registry entry each.

Each rule gives every class a score and predicts the best one (ties go to the lower class):

- ``direct``: log P(label word | prompt), summed over the word's tokens.
- ``direct_mean``: the same, averaged per token.
- ``channel`` (Min et al. 2022): log P(input | demonstrations in channel order, label word).
- ``calibrated`` (Zhao et al. 2021): p / p_cf, with p the option probabilities normalised over
  the options and p_cf their mean after content-free inputs under the same demonstrations
  (the diagonal correction W = diag(p_cf)^-1, b = 0).
- ``pmi`` (Holtzman et al. 2021): log P(label | prompt) - log P(label | domain premise).

A rule that needs more than the direct option log-probs names an extra pass (``PASSES``); the
passes' forward work is in ``icl.rule_passes``, which hands their numbers in. Everything here is
pure. Adding a rule: one ``Rule`` in ``RULES``, and, if it needs one, its pass in ``PASSES``
and ``icl.rule_passes``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from icl.errors import unknown_name


@dataclass(frozen=True)
class OptionScores:
    """Summed and per-token-mean log-probabilities of each option of one example."""

    sums: list[float]
    means: list[float]


@dataclass(frozen=True)
class ExtraPass:
    """A forward pass beyond the direct one, and where predictions.jsonl keeps its numbers."""

    name: str
    # the predictions.jsonl key of its per-class numbers
    row_key: str
    # whether it can be added to a finished run (False: it rescores every test input)
    after_the_fact: bool = True


PASSES = {
    p.name: p
    for p in (
        # calibrated: the content-free option probabilities under this example's demonstrations
        ExtraPass("content_free", "content_free_probs"),
        # pmi: each option's summed log-prob after the domain premise
        ExtraPass("premise", "premise_logprob"),
        # channel: log P(input | label) for each class's label word
        ExtraPass("channel", "channel_logprob", after_the_fact=False),
    )
}


@dataclass(frozen=True)
class Rule:
    """A scoring rule: its name, the extra pass it needs, and its per-class score."""

    name: str
    # score(option scores, the extra pass's per-class numbers or None) -> one score per class
    score: Callable[[OptionScores, list[float] | None], np.ndarray]
    extra_pass: str | None = None


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


RULES = {
    r.name: r
    for r in (
        Rule("direct", lambda scores, _: np.asarray(scores.sums)),
        Rule("direct_mean", lambda scores, _: np.asarray(scores.means)),
        Rule("channel", lambda _, logp: np.asarray(logp, dtype=np.float64), "channel"),
        Rule("calibrated", lambda scores, p_cf: calibrate(scores.sums, p_cf), "content_free"),
        Rule("pmi", lambda scores, premise: pmi(scores.sums, premise), "premise"),
    )
}
SCORING_RULES = tuple(RULES)


def get_rule(name: str) -> Rule:
    if name not in RULES:
        raise unknown_name("scoring rule", name, SCORING_RULES)
    return RULES[name]


def check_rules(rules) -> None:
    for name in rules:
        get_rule(name)


def requested_rules(rule: str, extra_rules) -> list[str]:
    """The primary rule first, then the extra ones, each once."""
    return list(dict.fromkeys([rule, *extra_rules]))


def passes_needed(rules) -> list[str]:
    """The extra passes a list of rules needs, each once, in the rules' order."""
    return list(dict.fromkeys(RULES[r].extra_pass for r in rules if RULES[r].extra_pass))


def option_scores(option_logprobs: list[list[float]]) -> OptionScores:
    """A label's score is the sum of its tokens' log-probs; the mean is kept alongside."""
    sums = [float(np.sum(lp)) for lp in option_logprobs]
    means = [float(np.mean(lp)) for lp in option_logprobs]
    return OptionScores(sums=sums, means=means)


def rule_scores(scores: OptionScores, rule: str, inputs: Mapping | None = None) -> np.ndarray:
    """Each class's score under a rule; ``inputs`` maps pass names to per-class numbers."""
    chosen = get_rule(rule)
    extra = None
    if chosen.extra_pass is not None:
        extra = (inputs or {}).get(chosen.extra_pass)
        if extra is None:
            raise ValueError(f"rule {rule!r} needs the {chosen.extra_pass} pass, which did not run")
    return chosen.score(scores, extra)


def predict(scores: OptionScores, rule: str = "direct", inputs: Mapping | None = None) -> int:
    """The option a rule picks; ties go to the lower class index."""
    return int(np.argmax(rule_scores(scores, rule, inputs)))


def perplexity(nll: float, count: int) -> float:
    return float(np.exp(nll / count)) if count else float("nan")
