"""The ``score`` method: each test example's label words scored after its k-shot prompt, under
one or more scoring rules, with the prompt's perplexity.

The plan (``icl.plan``) has chosen the test examples, their demonstrations as shown, the
template and its label words, the rules and the engine; this module tokenizes the prompts,
runs the scoring and the rules' extra passes, and turns the scores into rows and metrics.
"""

from __future__ import annotations

import math
import time

import numpy as np

from icl import templates
from icl.errors import ICLError
from icl.lm import Scorer
from icl.lm.requests import ScoreStats
from icl.lm.score_cache import process_cache
from icl.methods import CellOutput, Method, register
from icl.metrics import accuracy, classification_metrics
from icl.plan import CellPlan, cell_identity, plan_cell, require
from icl.prompts import (
    build_prompt,
    check_option_prefixes,
    option_tokens,
    prompt_perplexity,
    prompt_request,
)
from icl.rows import PredictionRow
from icl.rule_passes import mean_p_cf, rule_inputs, rule_metrics, rule_predictions, set_rule_fields
from icl.scoring import option_scores

NAME = "score"
SUMMARY_METRICS = (
    "accuracy",
    "macro_f1",
    "share_demo_labels_correct",
    "zero_shot_perplexity",
    "kshot_perplexity",
    "accuracy_vs_permuted",
    "majority_baseline",
    "majority_baseline_macro_f1",
)


def scorer_for(plan: CellPlan, models) -> Scorer:
    """The plan's model with its engine, batch size, the store's memo and the score cache."""
    lm = models.get(plan.model)
    return Scorer(
        lm,
        plan.scoring.engine,
        plan.scoring.batch_size,
        models.memo,
        plan.scoring.merge_prefixes,
        cache=process_cache() if plan.scoring.cache else None,
    )


def run(plan: CellPlan, models) -> CellOutput:
    """Score the plan's prompts, run the rules' extra passes, and build rows and metrics."""
    scorer = scorer_for(plan, models)
    lm = scorer.lm
    options = option_tokens(lm, plan.template, plan.format)
    check_option_prefixes(lm, plan.template.label_words, options, plan.scoring.rules)
    prompts = cell_prompts(lm, plan, options)
    # with no demonstrations the scored prompt is the zero-shot prompt: one pass gives both
    zero_shot = all(not demos.ids for demos in plan.demos)
    started = time.perf_counter()
    want_query = query_nll_needed(plan.scoring, zero_shot)
    # at k=0 nothing depends on demonstrations: the cache keeps the scores for other processes
    stats = ScoreStats()
    requests = [p.request for p in prompts]
    scored = scorer.score(requests, want_query, plan.scoring.progress, zero_shot, stats)
    dropped = [p.n_dropped for p in prompts]
    inputs = rule_inputs(scorer, plan, dropped, options, plan.scoring.rules, persist=zero_shot)
    scoring_s = time.perf_counter() - started
    zero_stats = ScoreStats()
    if not plan.scoring.zero_shot_perplexity:
        zero_ppl = [None] * len(prompts)
    elif zero_shot:
        zero_ppl = [prompt_perplexity(r) for r in scored]
    else:
        zero_ppl = zero_shot_perplexities(scorer, plan, zero_stats)
    zero_s = time.perf_counter() - started - scoring_s
    rows = prediction_rows(plan, prompts, scored, zero_ppl, inputs)
    check_finite(rows, lm.name)
    metrics = cell_metrics(plan, rows)
    metrics.update(device=str(lm.device), **work_metrics(stats, scoring_s, zero_stats, zero_s))
    return CellOutput(rows, metrics)


def work_metrics(stats: ScoreStats, scoring_s: float, zero: ScoreStats, zero_s: float) -> dict:
    """Computed against served work: a memo or cache hit costs nothing, so the rate counts the
    examples computed only (None when every one was served)."""
    return {
        "scoring_s": scoring_s,
        "examples_scored": stats.computed,
        "examples_from_memo": stats.from_memo,
        "examples_from_cache": stats.from_cache,
        "examples_per_s": stats.computed / scoring_s if stats.computed and scoring_s else None,
        "zero_shot_perplexity_s": zero_s,
        "zero_shot_computed": zero.computed,
        "zero_shot_from_memo": zero.from_memo,
        "zero_shot_from_cache": zero.from_cache,
    }


def query_nll_needed(scoring, zero_shot: bool) -> bool:
    """Whether the scoring pass reads the query's NLL (a full-vocabulary head at every query
    token, where the options alone need the last position's): for the k-shot perplexity, and
    at k=0 for the zero-shot one."""
    return scoring.kshot_perplexity or (zero_shot and scoring.zero_shot_perplexity)


def cell_prompts(lm, plan: CellPlan, options) -> list:
    """Each test example's prompt after its demonstrations, in the plan's format."""
    return [
        build_prompt(
            lm, plan.template, demos.pairs, ex.fields, options, f"example {ex.id}", plan.format
        )
        for demos, ex in zip(plan.demos, plan.test)
    ]


def non_finite(value) -> bool:
    """Whether a row value holds a NaN or an infinity anywhere."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(non_finite(v) for v in value.values())
    if isinstance(value, list):
        return any(non_finite(v) for v in value)
    return False


def check_finite(rows: list[PredictionRow], model_name: str) -> None:
    """NaN or infinite scores are an error, never a prediction (argmax would take class 0)."""
    for row in rows:
        bad = [key for key, value in row.to_json().items() if non_finite(value)]
        if bad:
            raise ICLError(
                f"model {model_name} gave non-finite scores (NaN or infinity) for example "
                f"{row.example_id} ({', '.join(bad)}); nothing was written. Its weights may be "
                f"damaged (a cached model is checked when loaded: delete its cache folder to "
                f"rebuild it) or overflow in model.dtype (try model.dtype=float32)"
            )


def zero_shot_perplexities(scorer: Scorer, plan: CellPlan, stats=None) -> list[float]:
    """Perplexity of each zero-shot prompt (instruction, template and input; no label).

    The memo runs each one once per process, however many cells need it; the score cache
    once for every process that uses it.
    """
    requests = [
        prompt_request(
            scorer.lm,
            plan.template,
            [],
            templates.render_input(plan.template, ex.fields),
            (),
            plan.format,
        )
        for ex in plan.test
    ]
    # the bar names its pass: a second "scoring" bar read as the scoring run twice
    progress = "zero-shot perplexity" if plan.scoring.progress else False
    scored = scorer.score(requests, True, progress, persist=True, stats=stats)
    return [prompt_perplexity(r) for r in scored]


def prediction_rows(plan: CellPlan, prompts, scored, zero_ppl, inputs) -> list[PredictionRow]:
    """One row per test example: what was shown, what was scored, what won."""
    names = plan.label_names
    rows = []
    for ex, demos, prompt, result, zppl, extra in zip(
        plan.test, plan.demos, prompts, scored, zero_ppl, inputs
    ):
        scores = option_scores(result.option_logprobs)
        by_rule = rule_predictions(scores, plan.scoring.rules, extra)
        pred = by_rule[plan.scoring.rule]
        kept = slice(prompt.n_dropped, None)
        row = PredictionRow(
            example_id=ex.id,
            demo_ids=demos.ids[kept],
            demo_label_words=[word for _, word in demos.pairs][kept],
            demo_gold_words=demos.gold_words[kept],
            demo_scores=None if demos.scores is None else demos.scores[kept],
            n_demos_dropped=prompt.n_dropped,
            option_logprob=dict(zip(names, scores.sums)),
            option_logprob_mean=dict(zip(names, scores.means)),
            option_token_logprobs=dict(zip(names, result.option_logprobs)),
            prediction=names[pred],
            prediction_index=pred,
            gold=names[ex.label],
            gold_index=ex.label,
            correct=pred == ex.label,
            prompt_tokens=len(prompt.request.prefix) + len(prompt.request.query),
            zero_shot_perplexity=zppl,
            kshot_perplexity=prompt_perplexity(result) if plan.scoring.kshot_perplexity else None,
        )
        set_rule_fields(row, names, by_rule, extra)
        rows.append(row)
    return rows


def cell_metrics(plan: CellPlan, rows: list[PredictionRow]) -> dict:
    """Accuracy, macro-F1 and the rest of a cell's numbers, per rule too."""
    names = plan.label_names
    pred = [r.prediction_index for r in rows]
    gold = [r.gold_index for r in rows]
    metrics = classification_metrics(pred, gold, names)
    shown_correct = [d.share_correct for d in plan.demos if d.ids]
    metrics["share_demo_labels_correct"] = float(np.mean(shown_correct)) if shown_correct else None
    metrics["mean_demos_dropped"] = float(np.mean([r.n_demos_dropped for r in rows]))
    metrics["zero_shot_perplexity"] = (
        float(np.mean([r.zero_shot_perplexity for r in rows]))
        if plan.scoring.zero_shot_perplexity
        else None
    )
    if plan.scoring.kshot_perplexity:
        metrics["kshot_perplexity"] = float(np.mean([r.kshot_perplexity for r in rows]))
    # the words the options were scored by (the template's, an override, or random words)
    metrics["option_words"] = dict(zip(names, plan.template.label_words))
    if plan.label_mapping is not None:
        metrics["label_mapping"] = plan.label_mapping
        shown_as = [names.index(plan.label_mapping[names[g]]) for g in gold]
        metrics["accuracy_vs_permuted"] = accuracy(pred, shown_as)
    metrics["rules"] = rule_metrics(rows, names)
    p_cf = mean_p_cf(rows, names)
    if p_cf is not None:
        metrics["p_cf"] = p_cf
    return metrics


def identity(cfg):
    require(cfg, NAME, "model", "task")
    return cell_identity(cfg, NAME)


# the perplexities a cell computes only when asked (eval.<switch>): not part of its identity,
# so a cell run without one is the same cell, but a resume that asks for it runs it again
PERPLEXITY_SWITCHES = ("zero_shot_perplexity", "kshot_perplexity")


def missing(cfg, stored: dict) -> list[str]:
    """The perplexities the config asks for that a finished run of the cell did not compute."""
    return [
        name for name in PERPLEXITY_SWITCHES if getattr(cfg.eval, name) and stored.get(name) is None
    ]


def describe(metrics: dict) -> str:
    return (
        f"{metrics['task']} k={metrics['k']} labels={metrics['labels']} seed={metrics['seed']}: "
        f"accuracy {metrics['accuracy']:.3f} macro-F1 {metrics['macro_f1']:.3f} (n={metrics['n']})"
    )


METHOD = register(
    Method(
        name=NAME,
        identity=identity,
        plan=lambda cfg, cell=None: plan_cell(cfg, NAME, cell),
        run=run,
        row_type=PredictionRow,
        summary_metrics=SUMMARY_METRICS,
        describe=describe,
        missing=missing,
    )
)
