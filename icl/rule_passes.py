"""The extra forward passes that scoring rules beyond ``direct`` need, and results per rule.

``calibrated`` scores content-free inputs and ``pmi`` the domain premise under each example's
demonstrations; ``channel`` scores every input given each label. The rows of predictions.jsonl
keep these numbers, so cheap rules can be added to a finished run (``runner.rescore_cell``).
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from icl.lm import score_requests
from icl.lm.engines import resolve_engine
from icl.metrics import classification_metrics
from icl.prompts import (
    channel_request,
    content_free_texts,
    demo_pairs,
    domain_premise,
    fitted,
    prompt_request,
)
from icl.scoring import (
    EXTRA_PASSES,
    OptionScores,
    RuleInputs,
    content_free_probs,
    option_scores,
    predict,
)

if TYPE_CHECKING:
    from icl.runner import CellPlan


def rule_requests(lm, plan: CellPlan, dropped: list[int], options, need: str) -> list[list]:
    """Each test example's requests for one extra pass, under the demonstrations it kept."""
    cfg, template = plan.cfg, plan.template
    if need == "channel":  # one request per class, the example's own input scored
        words = template.label_words
        makers = [
            [partial(channel_request, lm, template, word=w, fields=ex.fields) for w in words]
            for ex in plan.test
        ]
    else:  # the same requests for every example: content-free inputs or the domain premise
        texts = (
            content_free_texts(cfg, template)
            if need == "content_free"
            else [domain_premise(cfg, template)]
        )
        same = [partial(prompt_request, lm, template, query_text=t, options=options) for t in texts]
        makers = [same] * len(plan.test)
    per_example, built = [], {}
    for demo_set, start, make in zip(plan.demo_sets, dropped, makers):
        key = (id(demo_set), start, id(make))  # shared demonstrations: build their requests once
        if key not in built:
            demos = demo_pairs(plan, demo_set)
            built[key] = [fitted(lm, one, demos, start) for one in make]
        per_example.append(built[key])
    return per_example


def rule_inputs(lm, plan: CellPlan, dropped: list[int], options, rules) -> list[RuleInputs]:
    """Run the extra passes the rules need (each request through score_requests)."""
    cfg = plan.cfg
    engine = resolve_engine(cfg.scoring.engine, lm.device)
    found: dict[str, list] = {}
    for need in dict.fromkeys(EXTRA_PASSES[r] for r in rules if r in EXTRA_PASSES):
        per_example = rule_requests(lm, plan, dropped, options, need)
        flat = [request for requests in per_example for request in requests]
        scored = iter(score_requests(lm, flat, engine, cfg.eval.batch_size, False, False))
        sums = [[option_scores(next(scored).option_logprobs).sums for _ in r] for r in per_example]
        if need == "content_free":
            found["p_cf"] = [content_free_probs(s).tolist() for s in sums]
        elif need == "premise":
            found["premise"] = [s[0] for s in sums]
        else:  # channel: one request per class, its one option the input
            found["channel"] = [[s[0] for s in per_class] for per_class in sums]
    return [
        RuleInputs(**{key: values[i] for key, values in found.items()})
        for i in range(len(plan.test))
    ]


# predictions.jsonl keys of the extra passes' numbers, one value per class
INPUT_KEYS = {
    "p_cf": "content_free_probs",
    "premise": "premise_logprob",
    "channel": "channel_logprob",
}


def rule_predictions(scores: OptionScores, rules, inputs: RuleInputs) -> dict[str, int]:
    return {rule: predict(scores, rule, inputs) for rule in rules}


def rule_fields(names: list[str], by_rule: dict[str, int], inputs: RuleInputs) -> dict:
    """A row's per-rule predictions and the extra passes' numbers, keyed by class name."""
    fields = {"predictions_by_rule": {rule: names[p] for rule, p in by_rule.items()}}
    for attr, key in INPUT_KEYS.items():
        values = getattr(inputs, attr)
        if values is not None:
            fields[key] = dict(zip(names, values))
    return fields


def rule_metrics(rows: list[dict], label_names: list[str]) -> dict:
    """Accuracy, macro-F1 and prediction counts per class of every rule the rows hold."""
    names = list(label_names)
    gold = [r["gold_index"] for r in rows]
    out = {}
    for rule in rows[0]["predictions_by_rule"] if rows else ():
        pred = [names.index(r["predictions_by_rule"][rule]) for r in rows]
        m = classification_metrics(pred, gold, names)
        counts = np.bincount(np.asarray(pred, dtype=int), minlength=len(names))
        out[rule] = {
            "accuracy": m["accuracy"],
            "macro_f1": m["macro_f1"],
            "prediction_counts": dict(zip(names, counts.tolist())),
        }
    return out


def mean_p_cf(rows: list[dict], label_names: list[str]) -> dict | None:
    """p_cf per class, averaged over examples (one value when they share their demonstrations)."""
    found = [r["content_free_probs"] for r in rows if "content_free_probs" in r]
    if not found:
        return None
    return {name: float(np.mean([p[name] for p in found])) for name in label_names}


def stored_scores(row: dict, label_names: list[str]) -> OptionScores:
    """A predictions.jsonl row's option log-probs, in class order."""
    return OptionScores(
        sums=[row["option_logprob"][n] for n in label_names],
        means=[row["option_logprob_mean"][n] for n in label_names],
    )


def stored_inputs(row: dict, label_names: list[str]) -> RuleInputs:
    """The extra passes' numbers a predictions.jsonl row already holds."""
    found = {
        attr: [row[key][n] for n in label_names] for attr, key in INPUT_KEYS.items() if key in row
    }
    return RuleInputs(**found)
