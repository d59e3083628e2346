"""The cell plan: everything decided before a model loads, resolved once.

``plan_cell`` checks the config against the task and the model's settings (names, fields,
labels, pool sizes, rules and the prompts they need) and resolves it: the template and its
label words, the test examples, each one's demonstrations as the prompt shows them, the
scoring engine for the device, the rules and their extra prompts, and the cell's identity.
The methods below receive these values, never the config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

import icl
from icl import chat, retrieval, templates
from icl.config import ModelConfig, RunConfig, TemplateConfig
from icl.data import Example, cached_pools, check_n_test, resolve_n_test, sample_test
from icl.demos import (
    Demonstrations,
    DemoSet,
    check_demo_request,
    choose_demos,
    option_words,
    permuted_names,
    show,
    with_ood_inputs,
)
from icl.errors import ICLError, unknown_name
from icl.identity import CellIdentity
from icl.lm.batching import check_batch_size
from icl.lm.engines import ENGINE_CHOICES, resolve_engine
from icl.lm.loading import load_tokenizer, resolve_device
from icl.scoring import check_rules, requested_rules


@dataclass(frozen=True)
class ScoringPlan:
    """How the options are scored: engine, batch size, rules and the rules' extra prompts."""

    engine: str  # resolved for the device
    batch_size: int | str
    rules: list[str]  # the primary rule first
    # calibrated: the template filled with each content-free input; pmi: the domain premise
    content_free_texts: list[str]
    premise: str
    kshot_perplexity: bool
    zero_shot_perplexity: bool
    progress: bool
    # the cross-process score cache for what does not depend on the demonstrations
    cache: bool = True
    # prompts built per example (retrieval, similarity orders): requests whose prefix no other
    # has are scored together after the prefix they all share (icl.lm.grouping)
    merge_prefixes: bool = False

    @property
    def rule(self) -> str:
        """The rule behind each prediction, accuracy and macro-F1."""
        return self.rules[0]


@dataclass(frozen=True)
class CellPlan:
    """What a cell will run, decided before any model is loaded."""

    identity: CellIdentity
    model: ModelConfig
    device: torch.device
    label_names: list[str]
    label_setting: str
    template_name: str
    template: TemplateConfig  # with the label words the options are scored by
    pool: list[Example]
    test: list[Example]
    # one per test example (the same object when shared): the chosen pool indices with their
    # gold and shown classes, and the same as the prompt shows them
    demo_sets: list[DemoSet]
    demos: list[Demonstrations]
    # permuted labels: each gold class and the class it is shown as
    label_mapping: dict[str, str] | None
    scoring: ScoringPlan
    # what running on changed (rows dropped, ...): recorded in metrics.json and logged
    warnings: tuple[str, ...] = ()
    # how prompts are laid out: plain text or the tokenizer's chat template (icl.chat)
    format: str = chat.PLAIN


def require(cfg: RunConfig, method: str, *parts: str) -> None:
    """Fail when a method needs a config part (model, task) that the config leaves out."""
    for part in parts:
        if getattr(cfg, part) is None:
            raise ICLError(f"method {method!r} needs a {part}: add {part}=NAME (see conf/{part}/)")


def ood_corpus_name(cfg: RunConfig) -> str | None:
    if cfg.demos.labels != "ood_inputs" or cfg.demos.ood_task is None:
        return None
    return cfg.demos.ood_task.name


def cell_identity(cfg: RunConfig, method: str) -> CellIdentity:
    """The identity of a cell on a task and a model; cheap, so resume checks it first."""
    name, _ = templates.select_template(cfg.task, cfg.template)
    device = resolve_device(cfg.model.device)
    return CellIdentity(
        method=method,
        task=cfg.task.name,
        template=name,
        label_words="/".join(map(str, cfg.label_words)) if cfg.label_words else None,
        format=None if cfg.format == chat.PLAIN else cfg.format,
        model=cfg.model.name,
        k=cfg.demos.k,
        labels=cfg.demos.labels,
        seed=cfg.demos.seed,
        sampling=cfg.demos.sampling,
        per_example=cfg.demos.per_example,
        nested=cfg.demos.nested,
        ood_corpus=ood_corpus_name(cfg),
        selection=None if cfg.demos.selection == "random" else cfg.demos.selection,
        order=None if cfg.demos.order == "pool" else cfg.demos.order,
        diversity_lambda=cfg.demos.diversity_lambda
        if cfg.demos.selection == "knn_diverse"
        else None,
        retrieve_by="/".join(cfg.demos.retrieve_by) if cfg.demos.retrieve_by else None,
        n_test=cfg.eval.n_test,
        eval_seed=cfg.eval.seed,
        engine=resolve_engine(cfg.scoring.engine, device),
        rule=cfg.scoring.rule,
        extra_rules=list(cfg.scoring.rules),
        content_free=list(cfg.scoring.content_free),
        domain_premise=cfg.scoring.domain_premise,
        task_version=cfg.task.version,
        harness_version=icl.__version__,
    )


def plan_cell(
    cfg: RunConfig, method: str = "score", identity: CellIdentity | None = None
) -> CellPlan:
    """Check names, fields, labels and pool sizes; resolve everything a cell runs.

    ``identity`` is the cell's, when the caller has worked it out already.
    """
    if cfg.scoring.engine not in ENGINE_CHOICES:
        raise unknown_name("scoring engine", cfg.scoring.engine, ENGINE_CHOICES)
    check_batch_size(cfg.eval.batch_size)
    check_n_test(cfg.eval.n_test)
    identity = identity or cell_identity(cfg, method)
    template = resolved_template(cfg, identity.template)
    chat.check_format(cfg.format, cfg.demos.labels)
    if cfg.format == chat.CHAT:
        chat.check_chat_template(load_tokenizer(cfg.model), cfg.model.name)
    scoring = scoring_plan(cfg, identity, template)
    pools = cached_pools(cfg.task)
    n_test = resolve_n_test(cfg.eval.n_test, len(pools.test), cfg.task.name)
    test = sample_test(pools.test, n_test, cfg.eval.seed)
    names = list(cfg.task.label_names)
    demo_sets = chosen_demo_sets(cfg, pools.demos, test)
    return CellPlan(
        identity=identity,
        model=cfg.model,
        device=resolve_device(cfg.model.device),
        label_names=names,
        label_setting=cfg.demos.labels,
        template_name=identity.template,
        template=template,
        pool=pools.demos,
        test=test,
        demo_sets=demo_sets,
        demos=shown(demo_sets, pools.demos, cfg.demos.labels, template.label_words),
        label_mapping=permuted_names(cfg.demos.seed, names)
        if cfg.demos.labels == "permuted"
        else None,
        scoring=scoring,
        warnings=pools.warnings,
        format=cfg.format,
    )


def resolved_template(cfg: RunConfig, name: str) -> TemplateConfig:
    """The named template with the label words the cell uses, checked against the task."""
    template = cfg.task.templates[name]
    if cfg.label_words:
        template = dataclasses.replace(template, label_words=list(cfg.label_words))
    templates.check_template(cfg.task, name, template)
    # random_words: demonstrations and options both use the seed's words for the task's
    words = option_words(cfg.demos.labels, list(template.label_words), cfg.demos.seed)
    return dataclasses.replace(template, label_words=words)


def scoring_plan(cfg: RunConfig, identity: CellIdentity, template) -> ScoringPlan:
    """The rules and the extra prompts they need, checked before any model work."""
    rules = requested_rules(cfg.scoring.rule, cfg.scoring.rules)
    check_rules(rules)
    premise = cfg.scoring.domain_premise
    if premise is None:
        premise = templates.answer_prefix(template)
    content_free = [
        templates.render_input(template, dict.fromkeys(cfg.task.text_fields, text))
        for text in cfg.scoring.content_free
    ]
    if "pmi" in rules and not premise:
        raise ICLError(
            f"rule 'pmi' needs a domain premise, but template {identity.template!r} has no text "
            f"after its last field ({template.input!r}); set scoring.domain_premise"
        )
    if "calibrated" in rules:
        if not cfg.scoring.content_free:
            raise ICLError("rule 'calibrated' needs content-free inputs; set scoring.content_free")
        if not all(content_free):
            raise ICLError(
                f"template {identity.template!r} renders a content-free input "
                f"{list(cfg.scoring.content_free)} as an empty query; drop it from "
                f"scoring.content_free"
            )
    return ScoringPlan(
        engine=identity.engine,
        batch_size=cfg.eval.batch_size,
        rules=rules,
        content_free_texts=content_free,
        premise=premise,
        kshot_perplexity=cfg.eval.kshot_perplexity,
        zero_shot_perplexity=cfg.eval.zero_shot_perplexity,
        progress=cfg.eval.progress,
        cache=cfg.eval.cache,
        merge_prefixes=cfg.demos.k > 0 and retrieval.retrieves_per_example(cfg.demos),
    )


def chosen_demo_sets(cfg: RunConfig, pool, test) -> list[DemoSet]:
    """Each test example's demonstration set: one shared random set, a fresh random set per
    example (per_example), or the example's own retrieved set; then in the configured order."""
    n_classes, n_test = len(cfg.task.label_names), len(test)
    pool_labels = [ex.label for ex in pool]
    check_demo_request(pool_labels, n_classes, cfg.demos)
    fields = retrieval.check_selection(cfg.demos, cfg.task.text_fields)
    corpus_task = ood_corpus_task(cfg)
    if cfg.demos.selection != "random":
        demo_sets = [DemoSet([], [], [])] * n_test  # drawn by retrieval below
    elif cfg.demos.per_example:
        demo_sets = [choose_demos(pool_labels, n_classes, cfg.demos, i) for i in range(n_test)]
    else:
        demo_sets = [choose_demos(pool_labels, n_classes, cfg.demos)] * n_test
    if cfg.demos.selection != "random" or cfg.demos.order != "pool":
        demo_sets = retrieval.demo_sets(cfg.demos, pool, test, fields, n_classes, demo_sets)
    if corpus_task is not None:
        corpus = corpus_texts(corpus_task)
        demo_sets = with_ood_inputs(
            demo_sets, pool, corpus, cfg.demos.seed, retrieval.per_example(cfg.demos)
        )
    return demo_sets


def shown(demo_sets: list[DemoSet], pool, setting: str, words) -> list[Demonstrations]:
    """Each set as its prompt shows it; a shared set is resolved once and stays shared."""
    resolved: dict[int, Demonstrations] = {}
    for demo_set in demo_sets:
        if id(demo_set) not in resolved:
            resolved[id(demo_set)] = show(demo_set, pool, setting, words)
    return [resolved[id(demo_set)] for demo_set in demo_sets]


def ood_corpus_task(cfg: RunConfig):
    """The task whose texts replace the demonstration inputs (labels=ood_inputs only)."""
    if cfg.demos.labels != "ood_inputs":
        return None
    corpus = cfg.demos.ood_task
    if corpus is None:
        raise ICLError(
            f"demos.labels=ood_inputs needs a corpus of other texts, and task "
            f"{cfg.task.name!r} has no default (conf/ood/{cfg.task.name}.yaml): choose one "
            f"with corpus@demos.ood_task=NAME (a corpus under conf/corpus), or write that file"
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
