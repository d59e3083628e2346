"""One cell from start to end: data, demonstrations, prompts, scores, metrics, files.

Everything that can be wrong with the input is checked in ``plan_cell``, before a model loads.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from functools import partial
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
from icl.lm import LanguageModel, ScoreRequest, load_language_model, score_requests
from icl.lm.engines import check_batch_size, resolve_engine
from icl.lm.loading import resolve_device
from icl.metrics import accuracy, classification_metrics
from icl.scoring import (
    EXTRA_PASSES,
    OptionScores,
    RuleInputs,
    check_rules,
    content_free_probs,
    option_scores,
    perplexity,
    predict,
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


@dataclass
class Prompt:
    request: ScoreRequest
    n_dropped: int


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


def demo_pairs(plan: CellPlan, demo_set: DemoSet) -> list[tuple[dict | None, str | None]]:
    """What each demonstration shows: its input fields and its label word (None when the
    setting leaves that part out)."""
    words = plan.template.label_words
    inputs = demo_set.inputs or [plan.pool[i].fields for i in demo_set.indices]
    pairs = [(fields, words[c]) for fields, c in zip(inputs, demo_set.shown)]
    if plan.cfg.demos.labels == "no_labels":
        return [(fields, None) for fields, _ in pairs]
    if plan.cfg.demos.labels == "labels_only":
        return [(None, word) for _, word in pairs]
    return pairs


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


def option_tokens(lm: LanguageModel, template) -> tuple[tuple[int, ...], ...]:
    """Each class's label word as tokens, with the separator the template implies."""
    options = tuple(
        tuple(lm.encode(templates.render_answer(template, w))) for w in template.label_words
    )
    if len(set(options)) < len(options):
        raise ICLError(
            f"label words {list(template.label_words)} collide after tokenization by "
            f"{lm.name}; choose words that tokenize differently"
        )
    return options


def build_prompt(lm, plan: CellPlan, demo_set: DemoSet, query: Example, options) -> Prompt:
    """Token pieces of one prompt, dropping the earliest demonstrations until it fits."""
    demos = demo_pairs(plan, demo_set)
    query_text = templates.render_input(plan.template, query.fields)
    longest_option = max(len(o) for o in options)
    for dropped in range(len(demos) + 1):
        request = prompt_request(lm, plan.template, demos[dropped:], query_text, options)
        if len(request.prefix) + len(request.query) + longest_option <= lm.max_length:
            return Prompt(request, dropped)
    raise ICLError(
        f"example {query.id} needs {len(request.prefix) + len(request.query) + longest_option} "
        f"tokens even with no demonstrations, more than {lm.name}'s context of {lm.max_length}"
    )


def prompt_request(lm, template, demos, query_text: str, options) -> ScoreRequest:
    """The prompt tokenized as one string; the prefix is what the demonstration block covers."""
    prefix_ids, query_ids = lm.encode_split(templates.render_prefix(template, demos), query_text)
    return ScoreRequest(tuple(lm.bos + prefix_ids), tuple(query_ids), options)


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


def prompt_perplexity(result) -> float:
    """Perplexity of a scored prompt (prefix and query; the options are not part of it)."""
    return perplexity(
        result.prefix_nll + result.query_nll, result.prefix_count + result.query_count
    )


def domain_premise(cfg, template) -> str:
    """pmi's premise: scoring.domain_premise, else the template's answer prefix ("Sentiment:")."""
    if cfg.scoring.domain_premise is not None:
        return cfg.scoring.domain_premise
    return templates.domain_premise(template)


def content_free_texts(cfg, template) -> list[str]:
    """The template filled with each content-free input in every text field."""
    return [
        templates.render_input(template, dict.fromkeys(cfg.task.text_fields, text))
        for text in cfg.scoring.content_free
    ]


def fitted(lm, make_request, demos: list, start: int) -> ScoreRequest:
    """make_request(kept demonstrations), dropping the earliest (from ``start``) until it fits."""
    for dropped in range(start, len(demos) + 1):
        request = make_request(demos[dropped:])
        longest = max((len(o) for o in request.options), default=0)
        if len(request.prefix) + len(request.query) + longest <= lm.max_length:
            return request
    raise ICLError(
        f"a scoring rule's extra prompt needs {len(request.prefix) + len(request.query) + longest} "
        f"tokens even with no demonstrations, more than {lm.name}'s context of {lm.max_length}"
    )


def channel_request(lm, template, demos, word: str, fields: dict) -> ScoreRequest:
    """Demonstrations in channel order, then the label word; the option scored is the input."""
    prefix_text = templates.render_channel_prefix(template, demos)
    label_text = templates.render_channel_label(template, word)
    input_text = templates.render_channel_input(template, fields)
    # one tokenization of the whole string, cut where the demonstrations and the label end
    prefix_ids, _ = lm.encode_split(prefix_text, label_text + input_text)
    head_ids, input_ids = lm.encode_split(prefix_text + label_text, input_text)
    query_ids = head_ids[len(prefix_ids) :]
    return ScoreRequest(tuple(lm.bos + prefix_ids), tuple(query_ids), (tuple(input_ids),))


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
    found: dict[str, list] = {}
    for need in dict.fromkeys(EXTRA_PASSES[r] for r in rules if r in EXTRA_PASSES):
        per_example = rule_requests(lm, plan, dropped, options, need)
        flat = [request for requests in per_example for request in requests]
        scored = iter(
            score_requests(lm, flat, scoring_engine(cfg), cfg.eval.batch_size, False, False)
        )
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
