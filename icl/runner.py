"""One cell from start to end: data, demonstrations, prompts, scores, metrics, files.

Everything that can be wrong with the input is checked in ``plan_cell``, before a model loads.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

import icl
from icl import results, templates
from icl.config import SCORING_ENGINES
from icl.data import Example, Pools, load_pools, sample_test
from icl.demos import (
    DemoSet,
    check_demo_request,
    choose_demos,
    label_mapping,
    ood_inputs,
    random_label_words,
)
from icl.errors import ICLError, unknown_name
from icl.lm import LanguageModel, load_language_model, score_requests
from icl.lm.engines import check_batch_size, resolve_engine
from icl.lm.loading import resolve_device
from icl.metrics import accuracy, classification_metrics
from icl.prompts import (
    build_prompt,
    content_free_texts,
    demo_pairs,
    domain_premise,
    option_tokens,
    prompt_perplexity,
    prompt_request,
)
from icl.rule_passes import (
    INPUT_KEYS,
    mean_p_cf,
    rule_fields,
    rule_inputs,
    rule_metrics,
    rule_predictions,
    stored_inputs,
    stored_scores,
)
from icl.scoring import (
    EXTRA_PASSES,
    RuleInputs,
    check_rules,
    option_scores,
    requested_rules,
)

log = logging.getLogger(__name__)


@dataclass
class CellPlan:
    """What a cell will score, decided before any model is loaded."""

    cfg: object
    template_name: str
    template: object
    pool: list[Example]
    test: list[Example]
    demo_sets: list[DemoSet]  # one per test example (the same object when shared)


def scoring_engine(cfg) -> str:
    """The engine a cell runs: ``auto`` resolved for the device the model will load on."""
    return resolve_engine(cfg.scoring.engine, resolve_device(cfg.model.device))


def identity(cfg, template_name: str) -> dict:
    """The config values that name a cell; stored in every metrics.json and checked on resume."""
    return {
        "task": cfg.task.name,
        "template": template_name,
        "label_words": "/".join(cfg.label_words) if cfg.label_words else None,
        "model": cfg.model.name,
        "k": cfg.demos.k,
        "labels": cfg.demos.labels,
        "seed": cfg.demos.seed,
        "sampling": cfg.demos.sampling,
        "per_example": cfg.demos.per_example,
        "nested": cfg.demos.nested,
        "ood_corpus": ood_corpus_name(cfg),
        "n_test": cfg.eval.n_test,
        "eval_seed": cfg.eval.seed,
        "engine": scoring_engine(cfg),  # resolved, so a resumed sweep runs what it recorded
        "rule": cfg.scoring.rule,
        "extra_rules": list(cfg.scoring.rules),
        "content_free": list(cfg.scoring.content_free),
        "domain_premise": cfg.scoring.domain_premise,
        "task_version": cfg.task.version,
        "harness_version": icl.__version__,
    }


def plan_cell(cfg) -> CellPlan:
    """Check names, fields, labels and pool sizes; choose test examples and demonstrations."""
    if cfg.scoring.engine not in SCORING_ENGINES:
        raise unknown_name("scoring engine", cfg.scoring.engine, SCORING_ENGINES)
    check_rules(requested_rules(cfg.scoring.rule, cfg.scoring.rules))
    check_batch_size(cfg.eval.batch_size)
    name, template = templates.select_template(cfg.task, cfg.template)
    if cfg.label_words:
        template = dataclasses.replace(template, label_words=list(cfg.label_words))
    templates.check_template(cfg.task, name, template)
    check_rule_prompts(cfg, name, template)
    n_classes = len(cfg.task.label_names)
    if cfg.demos.labels == "random_words":
        # demonstrations and options both use the seed's random words in place of the task's
        template = dataclasses.replace(
            template, label_words=random_label_words(n_classes, cfg.demos.seed)
        )
    corpus_task = ood_corpus_task(cfg)
    pools = cached_pools(cfg.task)
    pool_labels = [ex.label for ex in pools.demos]
    check_demo_request(pool_labels, n_classes, cfg.demos)
    test = sample_test(pools.test, cfg.eval.n_test, cfg.eval.seed)
    if cfg.demos.per_example:
        demo_sets = [choose_demos(pool_labels, n_classes, cfg.demos, i) for i in range(len(test))]
    else:
        demo_sets = [choose_demos(pool_labels, n_classes, cfg.demos)] * len(test)
    if corpus_task is not None:
        corpus = corpus_texts(corpus_task)
        demo_sets = with_ood_inputs(cfg, pools.demos, demo_sets, corpus)
    return CellPlan(cfg, name, template, pools.demos, test, demo_sets)


def ood_corpus_name(cfg) -> str | None:
    if cfg.demos.labels != "ood_inputs" or cfg.demos.ood_task is None:
        return None
    return cfg.demos.ood_task.name


def ood_corpus_task(cfg):
    """The task whose texts replace the demonstration inputs (labels=ood_inputs only)."""
    if cfg.demos.labels != "ood_inputs":
        return None
    corpus = cfg.demos.ood_task
    if corpus is None:
        raise ICLError(
            "demos.labels=ood_inputs needs a corpus of other texts: choose one with "
            "corpus@demos.ood_task=NAME (a task under conf/task)"
        )
    if corpus.name == cfg.task.name:
        raise ICLError(
            f"the OOD corpus of task {cfg.task.name!r} is the task itself; choose another "
            f"with corpus@demos.ood_task=NAME"
        )
    return corpus


def corpus_texts(corpus_task) -> list[str]:
    """Every distinct text field of the corpus task's demonstration pool."""
    pool = cached_pools(corpus_task).demos
    texts = (ex.fields[f] for ex in pool for f in corpus_task.text_fields)
    return sorted({t for t in texts if t})


def with_ood_inputs(cfg, pool, demo_sets: list[DemoSet], corpus: list[str]) -> list[DemoSet]:
    """Each demonstration set with its inputs replaced by OOD texts of similar length."""
    replaced: dict[int, DemoSet] = {}
    out = []
    for i, demo_set in enumerate(demo_sets):
        if id(demo_set) not in replaced:  # a shared set is replaced once
            stream = [i + 1] if cfg.demos.per_example else []
            inputs = [pool[j].fields for j in demo_set.indices]
            new_inputs = ood_inputs(inputs, corpus, cfg.demos.seed, stream)
            replaced[id(demo_set)] = dataclasses.replace(demo_set, inputs=new_inputs)
        out.append(replaced[id(demo_set)])
    return out


def check_rule_prompts(cfg, template_name: str, template) -> None:
    """Fail before any model work when a rule's extra prompt would be empty."""
    rules = requested_rules(cfg.scoring.rule, cfg.scoring.rules)
    if "pmi" in rules and not domain_premise(cfg, template):
        raise ICLError(
            f"rule 'pmi' needs a domain premise, but template {template_name!r} has no text after "
            f"its last field ({template.input!r}); set scoring.domain_premise"
        )
    if "calibrated" in rules:
        if not cfg.scoring.content_free:
            raise ICLError("rule 'calibrated' needs content-free inputs; set scoring.content_free")
        if not all(content_free_texts(cfg, template)):
            raise ICLError(
                f"template {template_name!r} renders a content-free input "
                f"{list(cfg.scoring.content_free)} as an empty query; drop it from "
                f"scoring.content_free"
            )


def zero_shot_perplexities(lm, plan: CellPlan) -> list[float]:
    """Perplexity of each zero-shot prompt (instruction, template and input; no label).

    The model's score memo runs each one once per process, however many cells need it.
    """
    cfg = plan.cfg
    requests = [
        prompt_request(lm, plan.template, [], templates.render_input(plan.template, ex.fields), ())
        for ex in plan.test
    ]
    scored = score_requests(lm, requests, scoring_engine(cfg), cfg.eval.batch_size, True, False)
    return [prompt_perplexity(r) for r in scored]


def prediction_rows(plan: CellPlan, prompts, scored, zero_ppl, inputs=None) -> list[dict]:
    """One JSON-ready row per test example: what was shown, what was scored, what won."""
    names, words = list(plan.cfg.task.label_names), list(plan.template.label_words)
    rules = requested_rules(plan.cfg.scoring.rule, plan.cfg.scoring.rules)
    inputs = inputs or [RuleInputs()] * len(plan.test)
    rows = []
    for ex, demo_set, prompt, result, zppl, extra in zip(
        plan.test, plan.demo_sets, prompts, scored, zero_ppl, inputs
    ):
        scores = option_scores(result.option_logprobs)
        by_rule = rule_predictions(scores, rules, extra)
        pred = by_rule[plan.cfg.scoring.rule]
        kept = slice(prompt.n_dropped, None)
        rows.append(
            {
                "example_id": ex.id,
                "demo_ids": [plan.pool[i].id for i in demo_set.indices][kept],
                # what each demonstration showed as its label (None: no label shown)
                "demo_label_words": [w for _, w in demo_pairs(plan, demo_set)][kept],
                "demo_gold_words": [words[c] for c in demo_set.gold][kept],
                "n_demos_dropped": prompt.n_dropped,
                "option_logprob": dict(zip(names, scores.sums)),
                "option_logprob_mean": dict(zip(names, scores.means)),
                "option_token_logprobs": dict(zip(names, result.option_logprobs)),
                "prediction": names[pred],
                "prediction_index": pred,
                "gold": names[ex.label],
                "gold_index": ex.label,
                "correct": pred == ex.label,
                "prompt_tokens": len(prompt.request.prefix) + len(prompt.request.query),
                "zero_shot_perplexity": zppl,
                "kshot_perplexity": prompt_perplexity(result)
                if plan.cfg.eval.kshot_perplexity
                else None,
                **rule_fields(names, by_rule, extra),
            }
        )
    return rows


def cell_metrics(plan: CellPlan, rows: list[dict]) -> dict:
    cfg = plan.cfg
    pred = [r["prediction_index"] for r in rows]
    gold = [r["gold_index"] for r in rows]
    metrics = classification_metrics(pred, gold, list(cfg.task.label_names))
    shown_correct = [s.share_correct for s in plan.demo_sets if s.indices]
    metrics["share_demo_labels_correct"] = float(np.mean(shown_correct)) if shown_correct else None
    metrics["mean_demos_dropped"] = float(np.mean([r["n_demos_dropped"] for r in rows]))
    metrics["zero_shot_perplexity"] = float(np.mean([r["zero_shot_perplexity"] for r in rows]))
    if cfg.eval.kshot_perplexity:
        metrics["kshot_perplexity"] = float(np.mean([r["kshot_perplexity"] for r in rows]))
    # the words the options were scored by (the template's, an override, or random words)
    metrics["option_words"] = dict(zip(cfg.task.label_names, plan.template.label_words))
    if cfg.demos.labels == "permuted":
        mapping = label_mapping(cfg.demos.seed, len(cfg.task.label_names))
        metrics["label_mapping"] = {
            cfg.task.label_names[g]: cfg.task.label_names[int(m)] for g, m in enumerate(mapping)
        }
        metrics["accuracy_vs_permuted"] = accuracy(pred, [int(mapping[g]) for g in gold])
    metrics["rules"] = rule_metrics(rows, cfg.task.label_names)
    p_cf = mean_p_cf(rows, cfg.task.label_names)
    if p_cf is not None:
        metrics["p_cf"] = p_cf
    return metrics


_MODELS: dict[str, LanguageModel] = {}
_POOLS: dict[str, Pools] = {}
# a task and the corpus its OOD demonstrations draw from, with room to spare
POOLS_KEPT = 4


def _config_key(node) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(node), resolve=True)


def cached_model(model_cfg) -> LanguageModel:
    """Load once per process and reuse across the cells of a sweep (one model kept)."""
    key = _config_key(model_cfg)
    if key not in _MODELS:
        _MODELS.clear()
        started = time.perf_counter()
        _MODELS[key] = load_language_model(model_cfg)
        log.info("loaded model %s in %.1f s", model_cfg.name, time.perf_counter() - started)
    return _MODELS[key]


def cached_pools(task_cfg) -> Pools:
    """Load and check a task's rows once per process (the last few tasks kept)."""
    key = _config_key(task_cfg)
    if key not in _POOLS:
        if len(_POOLS) >= POOLS_KEPT:
            del _POOLS[next(iter(_POOLS))]
        _POOLS[key] = load_pools(task_cfg)
    return _POOLS[key]


def run_cell(cfg, load_model=cached_model) -> dict:
    """Run one cell into cfg.out_dir and return its metrics; a finished cell is skipped."""
    out_dir = Path(cfg.out_dir or ".")
    name, _ = templates.select_template(cfg.task, cfg.template)
    cell = identity(cfg, name)
    done = None if cfg.overwrite else results.finished_cell(out_dir, cell)
    if done is not None:
        log.info("skipping finished cell %s (overwrite=true reruns it)", out_dir)
        return done
    started = time.perf_counter()
    plan = plan_cell(cfg)
    lm = load_model(cfg.model)
    options = option_tokens(lm, plan.template)
    prompts = [build_prompt(lm, plan, d, ex, options) for d, ex in zip(plan.demo_sets, plan.test)]
    # with no demonstrations the scored prompt is the zero-shot prompt: one pass gives both
    zero_shot = all(not d.indices for d in plan.demo_sets)
    scoring_started = time.perf_counter()
    scored = score_requests(
        lm,
        [p.request for p in prompts],
        cell["engine"],
        cfg.eval.batch_size,
        cfg.eval.kshot_perplexity or zero_shot,
        cfg.eval.progress,
    )
    rules = requested_rules(cfg.scoring.rule, cfg.scoring.rules)
    inputs = rule_inputs(lm, plan, [p.n_dropped for p in prompts], options, rules)
    scoring_s = time.perf_counter() - scoring_started
    if zero_shot:
        zero_ppl = [prompt_perplexity(r) for r in scored]
    else:
        zero_ppl = zero_shot_perplexities(lm, plan)
    rows = prediction_rows(plan, prompts, scored, zero_ppl, inputs)
    metrics = {**cell, **cell_metrics(plan, rows)}
    metrics.update(
        device=str(lm.device),
        scoring_s=scoring_s,
        wall_s=time.perf_counter() - started,
        examples_per_s=len(rows) / scoring_s if scoring_s else None,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.structured(cfg), out_dir / results.CONFIG_FILE, resolve=True)
    results.write_predictions(out_dir, rows)
    results.write_metrics(out_dir, metrics)
    return metrics


def rescore_cell(run_dir, rules, load_model=cached_model) -> dict:
    """Add rules to a finished run from its stored option log-probs, without rescoring it.

    Only the extra passes the new rules need run (content-free inputs for ``calibrated``, the
    domain premise for ``pmi``, under each example's demonstrations); ``channel`` needs passes
    over every test example, so it is computed only in the run itself (``scoring.rules``).
    """
    run_dir = Path(run_dir)
    metrics = results.read_metrics(run_dir)
    if metrics is None:
        raise ICLError(f"{run_dir} holds no finished run ({results.METRICS_FILE})")
    cfg = results.read_config(run_dir)
    rows = results.read_predictions(run_dir)
    for row in rows:  # runs from before scoring.rules hold their one rule's prediction
        row.setdefault("predictions_by_rule", {cfg.scoring.rule: row["prediction"]})
    done = list(rows[0]["predictions_by_rule"])
    new = [r for r in dict.fromkeys(rules) if r not in done]
    if "channel" in new:
        raise ICLError(
            f"rule 'channel' scores every test input anew; rerun {run_dir} with "
            f"scoring.rules=[channel] instead of adding it after the fact"
        )
    cfg.scoring.rules = requested_rules(cfg.scoring.rule, [*done, *new])[1:]
    plan = plan_cell(cfg)  # checks the rules; chooses the same examples and demonstrations
    if [ex.id for ex in plan.test] != [r["example_id"] for r in rows]:
        raise ICLError(f"the test examples of {run_dir} are no longer those its config chooses")
    names = list(cfg.task.label_names)
    fresh = [RuleInputs()] * len(rows)
    if any(r in EXTRA_PASSES for r in new):
        lm = load_model(cfg.model)
        dropped = [r["n_demos_dropped"] for r in rows]
        fresh = rule_inputs(lm, plan, dropped, option_tokens(lm, plan.template), new)
    for row, extra in zip(rows, fresh):
        stored = stored_inputs(row, names)
        inputs = RuleInputs(**{a: getattr(extra, a) or getattr(stored, a) for a in INPUT_KEYS})
        by_rule = rule_predictions(stored_scores(row, names), [*done, *new], inputs)
        row.update(rule_fields(names, by_rule, inputs))
    metrics["rules"] = rule_metrics(rows, names)
    p_cf = mean_p_cf(rows, names)
    if p_cf is not None:
        metrics["p_cf"] = p_cf
    metrics["rules_added_after"] = sorted({*metrics.get("rules_added_after", []), *new})
    results.write_predictions(run_dir, rows)
    results.write_metrics(run_dir, metrics)
    return metrics
