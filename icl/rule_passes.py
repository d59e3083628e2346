"""The extra forward passes that scoring rules beyond ``direct`` need, and results per rule.

``calibrated`` scores content-free inputs and ``pmi`` the domain premise under each example's
demonstrations; ``channel`` scores every input given each label. The rows of predictions.jsonl
keep these numbers (``PredictionRow.extra``), so cheap rules can be added to a finished run
(``icl.methods.rescore``). Each pass of ``icl.scoring.PASSES`` has its runner here: the
requests of one test example, and how their scores become its per-class numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

from icl.metrics import classification_metrics
from icl.plan import CellPlan
from icl.prompts import channel_request, fitted, prompt_request
from icl.rows import PredictionRow
from icl.scoring import (
    PASSES,
    OptionScores,
    content_free_probs,
    option_scores,
    passes_needed,
    predict,
)


def _same_for_every_example(texts: Callable[[CellPlan], list[str]]):
    """Request makers that score the same query texts after each example's demonstrations."""

    def makers(lm, plan: CellPlan, options) -> list[list]:
        same = [
            partial(
                prompt_request, lm, plan.template, query_text=t, options=options, fmt=plan.format
            )
            for t in texts(plan)
        ]
        return [same] * len(plan.test)

    return makers


def _channel_makers(lm, plan: CellPlan, options) -> list[list]:
    """One request per class: the example's own input scored after the label word."""
    words = plan.template.label_words
    return [
        [
            partial(channel_request, lm, plan.template, word=w, fields=ex.fields, fmt=plan.format)
            for w in words
        ]
        for ex in plan.test
    ]


@dataclass(frozen=True)
class PassRunner:
    """How one extra pass runs: each example's request makers (each takes the demonstrations
    kept), and how that example's summed option log-probs become its per-class numbers."""

    makers: Callable
    reduce: Callable[[list[list[float]]], list[float]]


RUNNERS = {
    "content_free": PassRunner(
        _same_for_every_example(lambda plan: plan.scoring.content_free_texts),
        lambda sums: content_free_probs(sums).tolist(),
    ),
    "premise": PassRunner(
        _same_for_every_example(lambda plan: [plan.scoring.premise]), lambda sums: sums[0]
    ),
    "channel": PassRunner(_channel_makers, lambda sums: [s[0] for s in sums]),
}
assert set(RUNNERS) == set(PASSES), "every extra pass needs its runner"


def pass_requests(lm, plan: CellPlan, dropped: list[int], options, name: str) -> list[list]:
    """Each test example's requests for one extra pass, under the demonstrations it kept."""
    makers = RUNNERS[name].makers(lm, plan, options)
    per_example, built = [], {}
    for demos, start, make in zip(plan.demos, dropped, makers):
        key = (id(demos), start, id(make))  # shared demonstrations: build their requests once
        if key not in built:
            what = "a scoring rule's extra prompt"
            built[key] = [fitted(lm, one, demos.pairs, start, what)[0] for one in make]
        per_example.append(built[key])
    return per_example


def rule_inputs(
    scorer, plan: CellPlan, dropped: list[int], options, rules, persist: bool = False
) -> list[dict]:
    """Run the extra passes the rules need; per example, pass name -> per-class numbers
    (``persist``: their requests hold no demonstrations, so the score cache may keep them)."""
    found: dict[str, list] = {}
    for name in passes_needed(rules):
        per_example = pass_requests(scorer.lm, plan, dropped, options, name)
        flat = [request for requests in per_example for request in requests]
        scored = iter(scorer.score(flat, persist=persist))
        sums = [[option_scores(next(scored).option_logprobs).sums for _ in r] for r in per_example]
        found[name] = [RUNNERS[name].reduce(s) for s in sums]
    return [{name: values[i] for name, values in found.items()} for i in range(len(plan.test))]


def rule_predictions(scores: OptionScores, rules, inputs: dict) -> dict[str, int]:
    return {rule: predict(scores, rule, inputs) for rule in rules}


def set_rule_fields(row: PredictionRow, names, by_rule: dict[str, int], inputs: dict) -> None:
    """A row's per-rule predictions and the extra passes' numbers, keyed by class name."""
    row.predictions_by_rule = {rule: names[p] for rule, p in by_rule.items()}
    row.extra = {name: dict(zip(names, values)) for name, values in inputs.items()}


def rule_metrics(rows: list[PredictionRow], label_names: list[str]) -> dict:
    """Accuracy, macro-F1 and prediction counts per class of every rule the rows hold."""
    names = list(label_names)
    gold = [r.gold_index for r in rows]
    out = {}
    for rule in rows[0].predictions_by_rule if rows else ():
        pred = [names.index(r.predictions_by_rule[rule]) for r in rows]
        m = classification_metrics(pred, gold, names)
        counts = np.bincount(np.asarray(pred, dtype=int), minlength=len(names))
        out[rule] = {
            "accuracy": m["accuracy"],
            "macro_f1": m["macro_f1"],
            "prediction_counts": dict(zip(names, counts.tolist())),
        }
    return out


def mean_p_cf(rows: list[PredictionRow], label_names: list[str]) -> dict | None:
    """p_cf per class, averaged over examples (one value when they share their demonstrations)."""
    found = [r.extra["content_free"] for r in rows if "content_free" in r.extra]
    if not found:
        return None
    return {name: float(np.mean([p[name] for p in found])) for name in label_names}


def stored_scores(row: PredictionRow, label_names: list[str]) -> OptionScores:
    """A row's option log-probs, in class order."""
    return OptionScores(
        sums=[row.option_logprob[n] for n in label_names],
        means=[row.option_logprob_mean[n] for n in label_names],
    )


def stored_inputs(row: PredictionRow, label_names: list[str]) -> dict:
    """The extra passes' numbers a row already holds, per pass in class order."""
    return {name: [values[n] for n in label_names] for name, values in row.extra.items()}
