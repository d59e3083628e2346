"""Rules added to a finished ``score`` run from its stored option log-probs, without scoring
its prompts again (``icl-collect DIR --rescore RULES``).

Only the extra passes the new rules need run (content-free inputs for ``calibrated``, the
domain premise for ``pmi``, under each example's demonstrations); ``channel`` needs passes over
every test example, so it is computed only in the run itself (``scoring.rules``).
"""

from __future__ import annotations

from pathlib import Path

from icl import results
from icl.errors import ICLError
from icl.lm.store import PROCESS_MODELS, ModelStore
from icl.methods.score import scorer_for
from icl.plan import plan_cell
from icl.prompts import option_tokens
from icl.rows import PredictionRow
from icl.rule_passes import (
    mean_p_cf,
    rule_inputs,
    rule_metrics,
    rule_predictions,
    set_rule_fields,
    stored_inputs,
    stored_scores,
)
from icl.scoring import PASSES, RULES, check_rules, passes_needed, requested_rules


def check_after_the_fact(run_dir: Path, new: list[str]) -> None:
    """Fail for a rule whose pass rescores every test input (it belongs in the run)."""
    check_rules(new)
    for rule in new:
        needed = RULES[rule].extra_pass
        if needed and not PASSES[needed].after_the_fact:
            raise ICLError(
                f"rule {rule!r} scores every test input anew; rerun {run_dir} with "
                f"scoring.rules=[{rule}] instead of adding it after the fact"
            )


def stored_run(run_dir: Path):
    """A finished run's metrics, config and rows (rows of runs before scoring.rules hold
    their one rule's prediction)."""
    metrics = results.read_metrics(run_dir)
    if metrics is None:
        raise ICLError(f"{run_dir} holds no finished run ({results.METRICS_FILE})")
    cfg = results.read_config(run_dir)
    rows = [PredictionRow.from_json(r) for r in results.read_predictions(run_dir)]
    for row in rows:
        if row.predictions_by_rule is None:
            row.predictions_by_rule = {cfg.scoring.rule: row.prediction}
    return metrics, cfg, rows


def rescore_cell(run_dir, rules, load_model=None) -> dict:
    """Add rules to a finished run; return its updated metrics."""
    run_dir = Path(run_dir)
    metrics, cfg, rows = stored_run(run_dir)
    done = list(rows[0].predictions_by_rule)
    new = [r for r in dict.fromkeys(rules) if r not in done]
    check_after_the_fact(run_dir, new)
    cfg.scoring.rules = requested_rules(cfg.scoring.rule, [*done, *new])[1:]
    plan = plan_cell(cfg)  # checks the rules; chooses the same examples and demonstrations
    if [ex.id for ex in plan.test] != [r.example_id for r in rows]:
        raise ICLError(f"the test examples of {run_dir} are no longer those its config chooses")
    names = plan.label_names
    fresh = [{}] * len(rows)
    if passes_needed(new):
        models = PROCESS_MODELS if load_model is None else ModelStore(load_model)
        scorer = scorer_for(plan, models)
        dropped = [r.n_demos_dropped for r in rows]
        fresh = rule_inputs(scorer, plan, dropped, option_tokens(scorer.lm, plan.template), new)
    for row, extra in zip(rows, fresh):
        inputs = {**stored_inputs(row, names), **extra}
        by_rule = rule_predictions(stored_scores(row, names), [*done, *new], inputs)
        set_rule_fields(row, names, by_rule, inputs)
    metrics["rules"] = rule_metrics(rows, names)
    p_cf = mean_p_cf(rows, names)
    if p_cf is not None:
        metrics["p_cf"] = p_cf
    metrics["rules_added_after"] = sorted({*metrics.get("rules_added_after", []), *new})
    results.write_predictions(run_dir, rows)
    results.write_metrics(run_dir, metrics)
    return metrics
