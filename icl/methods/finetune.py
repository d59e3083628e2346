"""The ``finetune`` method: train on the labelled examples a balanced ICL cell shows as its
demonstrations, then classify the test examples with the trained model.

``kind=prompt`` keeps classification as next-token prediction (the template and its label
words; LM-BFF, Gao et al. 2021); ``kind=head`` puts a classifier on the last token's final
hidden state. The training set is, for the same seed, the k = k_per_class x classes
demonstrations of a ``demos.sampling=balanced`` cell (the same draw, ``icl.demos``); the
development set is the next dev_per_class per class of that draw, and the checkpoint with the
best development accuracy is evaluated. Each cell trains its own copy of the loaded model, and
the prompt kind scores the test set through the scoring engines under a fingerprint of its
own, so no memo mixes the fine-tuned model's scores with the base model's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import resource
import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from icl import chat
from icl.config import FinetuneConfig, RunConfig
from icl.data import Example, cached_pools
from icl.demos import choose_demos
from icl.errors import ICLError, unknown_name
from icl.finetune.inputs import encode_examples
from icl.finetune.loop import Classifier, Schedule, train
from icl.finetune.objective import pad_id
from icl.finetune.trainable import (
    ALL,
    lm_is_frozen,
    make_head,
    n_trainable,
    trainable_copy,
)
from icl.lm import LanguageModel, Scorer
from icl.lm.loading import model_depth
from icl.methods import CellOutput, Method, register
from icl.metrics import classification_metrics
from icl.plan import CellPlan, cell_identity, plan_cell, require
from icl.prompts import check_option_prefixes, option_tokens
from icl.scoring import option_scores

NAME = "finetune"
KINDS = ("prompt", "head")
HEADS = ("linear", "mlp")
TRAIN_LOG = "train_log.jsonl"


@dataclass(frozen=True)
class FinetunePlan:
    """A cell's test examples and template (``cell``), its training and development
    examples, and how it trains."""

    cell: CellPlan
    train: list[Example]
    dev: list[Example]
    settings: FinetuneConfig
    schedule: Schedule


def training_demos(cfg: RunConfig):
    """The demonstrations config of the balanced ICL cell whose examples this cell trains on."""
    n_classes = len(cfg.task.label_names)
    return dataclasses.replace(
        cfg.demos,
        k=cfg.finetune.k_per_class * n_classes,
        labels="gold",
        sampling="balanced",
        per_example=False,
        nested=True,
        selection="random",
        order="pool",
    )


def train_layers_text(ft: FinetuneConfig) -> str | None:
    return None if ft.lora_r else str(ft.train_layers)


def identity(cfg: RunConfig):
    require(cfg, NAME, "model", "task")
    ft = cfg.finetune
    base = cell_identity(dataclasses.replace(cfg, demos=training_demos(cfg)), NAME)
    return dataclasses.replace(
        base,
        finetune_kind=ft.kind,
        finetune_head=ft.head if ft.kind == "head" else None,
        finetune_k_per_class=ft.k_per_class,
        finetune_dev_per_class=ft.dev_per_class,
        finetune_train_layers=train_layers_text(ft),
        finetune_lora_r=ft.lora_r,
        finetune_lora_alpha=ft.lora_alpha if ft.lora_r else None,
        finetune_lr=ft.lr,
        finetune_weight_decay=ft.weight_decay,
        finetune_steps=ft.steps,
        finetune_batch_size=ft.batch_size,
        finetune_eval_every=ft.eval_every,
        finetune_patience=ft.patience,
        finetune_max_tokens=ft.max_tokens,
        finetune_seed=ft.seed,
    )


def check_settings(ft: FinetuneConfig) -> None:
    """Fail, naming the fix, on training settings that cannot run (before any model loads)."""
    if ft.kind not in KINDS:
        raise unknown_name("finetune.kind", ft.kind, KINDS)
    if ft.head not in HEADS:
        raise unknown_name("finetune.head", ft.head, HEADS)
    for name in ("steps", "batch_size", "eval_every", "k_per_class", "dev_per_class"):
        if getattr(ft, name) < 1:
            raise ICLError(f"finetune.{name} must be >= 1, got {getattr(ft, name)}")
    for name in ("lr", "lora_alpha", "max_tokens"):
        if not getattr(ft, name) > 0:
            raise ICLError(f"finetune.{name} must be > 0, got {getattr(ft, name)}")
    if ft.patience < 0 or ft.lora_r < 0 or ft.weight_decay < 0:
        raise ICLError("finetune.patience, finetune.lora_r and finetune.weight_decay must be >= 0")
    layers = ft.train_layers
    if layers != ALL and (isinstance(layers, bool) or not isinstance(layers, int) or layers < 0):
        raise ICLError(f"finetune.train_layers must be an integer >= 0 or all, got {layers!r}")


def check_depth(cfg: RunConfig) -> None:
    """train_layers may not exceed the model's layers (read from its config, no weights)."""
    layers = cfg.finetune.train_layers
    if cfg.finetune.lora_r or layers == ALL or not layers:
        return
    depth = model_depth(cfg.model)
    if depth is not None and layers > depth:
        raise ICLError(
            f"finetune.train_layers={layers} but model {cfg.model.name} has {depth} layers; "
            f"use at most {depth}, or finetune.train_layers=all"
        )


def check_pool(cfg: RunConfig, pool_labels: list[int]) -> None:
    """Each class needs k_per_class training and dev_per_class development examples."""
    ft, names = cfg.finetune, cfg.task.label_names
    counts = np.bincount(np.asarray(pool_labels, dtype=int), minlength=len(names))
    need = ft.k_per_class + ft.dev_per_class
    if counts.min() < need:
        short = names[int(counts.argmin())]
        raise ICLError(
            f"finetune.k_per_class={ft.k_per_class} and finetune.dev_per_class="
            f"{ft.dev_per_class} need {need} examples of every class, but class {short!r} has "
            f"{counts.min()} in the pool; lower finetune.k_per_class (at most "
            f"{counts.min() - ft.dev_per_class}) or finetune.dev_per_class"
        )


def train_and_dev(cfg: RunConfig, pool) -> tuple[list[Example], list[Example]]:
    """The training examples (the balanced demonstrations of the same seed) and the next
    dev_per_class per class of the same draw (balanced rounds: every prefix is balanced)."""
    demos = training_demos(cfg)
    n_classes = len(cfg.task.label_names)
    longer = dataclasses.replace(demos, k=demos.k + cfg.finetune.dev_per_class * n_classes)
    drawn = choose_demos([ex.label for ex in pool], n_classes, longer).indices
    return [pool[i] for i in drawn[: demos.k]], [pool[i] for i in drawn[demos.k :]]


def plan(cfg: RunConfig, cell=None) -> FinetunePlan:
    require(cfg, NAME, "model", "task")
    ft = cfg.finetune
    check_settings(ft)
    if cfg.format != chat.PLAIN:
        raise ICLError("method=finetune trains on plain prompts; use format=plain")
    if cfg.scoring.rule != "direct" or cfg.scoring.rules:
        raise ICLError(
            "method=finetune predicts by the summed label-word log-prob (rule direct); leave "
            "scoring.rule and scoring.rules at their defaults"
        )
    check_pool(cfg, [ex.label for ex in cached_pools(cfg.task).demos])
    check_depth(cfg)
    trained_cfg = dataclasses.replace(cfg, demos=training_demos(cfg))
    cell_plan = plan_cell(trained_cfg, NAME, cell or identity(cfg))
    train_set, dev = train_and_dev(cfg, cell_plan.pool)
    seed = int(np.random.SeedSequence([cfg.demos.seed, ft.seed]).generate_state(1)[0])
    schedule = Schedule(
        ft.steps, ft.batch_size, ft.eval_every, ft.patience, ft.lr, ft.weight_decay, seed
    )
    return FinetunePlan(cell_plan, train_set, dev, ft, schedule)


@dataclass
class FinetuneRow:
    """One test example: each class's score (label-word log-prob, or the head's
    log-softmax), the prediction and the gold class."""

    example_id: str
    option_logprob: dict[str, float]
    prediction: str
    prediction_index: int
    gold: str
    gold_index: int
    correct: bool
    input_tokens: int
    truncated: bool

    TABLE_COLUMNS: ClassVar[tuple[str, ...]] = ("example_id", "prediction", "gold", "correct")

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, row: dict) -> FinetuneRow:
        return cls(**row)


# a fine-tuned model's fingerprint: its base's, the cell's and a number no other copy has
_COPIES = itertools.count(1)


def finetuned_lm(base: LanguageModel, model, plan: FinetunePlan) -> LanguageModel:
    """The trained copy as a LanguageModel whose fingerprint no other model shares."""
    cell = json.dumps(plan.cell.identity.to_dict(), sort_keys=True, default=str)
    digest = hashlib.sha256(cell.encode()).hexdigest()[:12]
    fingerprint = f"{base.fingerprint}+finetune-{digest}-{next(_COPIES)}"
    return dataclasses.replace(base, model=model, fingerprint=fingerprint)


def test_scores(plan: FinetunePlan, models, lm: LanguageModel, classifier, test) -> torch.Tensor:
    """[test, classes]: the prompt kind through the scoring engines (the store's memo, under
    the trained copy's fingerprint); the head kind by the classifier's batched forward."""
    if plan.settings.kind == "head":
        return classifier.predict(test).log_softmax(-1)
    scorer = Scorer(lm, plan.cell.scoring.engine, plan.cell.scoring.batch_size, models.memo)
    scored = scorer.score([e.request for e in test])
    return torch.tensor([option_scores(r.option_logprobs).sums for r in scored])


def build_classifier(plan: FinetunePlan, base: LanguageModel, options) -> Classifier:
    """The trainable copy (and head). It stays in eval mode: no dropout, so a seed trains the
    same way every time (SmolLM2 and Gemma-3 have no dropout in any case)."""
    ft, seed = plan.settings, plan.schedule.seed
    model = trainable_copy(base.model, ft.kind, ft.train_layers, ft.lora_r, ft.lora_alpha, seed)
    head = None
    if ft.kind == "head":
        width = model.config.get_text_config().hidden_size
        dtype = next(model.parameters()).dtype
        head = make_head(ft.head, width, len(options), seed, base.device, dtype)
    frozen = ft.kind == "head" and lm_is_frozen(model)
    return Classifier(model, ft.kind, options, pad_id(base), base.device, head, frozen)


def run(plan: FinetunePlan, models) -> CellOutput:
    """Train a copy of the model on the plan's examples, then classify the test examples."""
    started = time.perf_counter()
    base = models.get(plan.cell.model)
    cell, ft = plan.cell, plan.settings
    options = option_tokens(base, cell.template)
    if ft.kind == "prompt":
        check_option_prefixes(base, cell.template.label_words, options, ["direct"])
    train_set, dev, test = (
        encode_examples(base, cell.template, examples, options, ft.max_tokens)
        for examples in (plan.train, plan.dev, cell.test)
    )
    if base.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(base.device)
    classifier = build_classifier(plan, base, options)
    trained = train(classifier, train_set, dev, plan.schedule)
    classifier.model.eval()
    evaluated = time.perf_counter()
    scores = test_scores(plan, models, finetuned_lm(base, classifier.model, plan), classifier, test)
    eval_s = time.perf_counter() - evaluated
    rows = finetune_rows(cell, test, scores)
    metrics = classification_metrics(
        [r.prediction_index for r in rows], [r.gold_index for r in rows], cell.label_names
    )
    metrics.update(
        finetune=dataclasses.asdict(ft),
        option_words=dict(zip(cell.label_names, cell.template.label_words)),
        best_step=trained.best_step,
        best_dev_accuracy=trained.best_dev_accuracy,
        best_dev_loss=trained.best_dev_loss,
        steps_run=trained.steps_run,
        train_s=trained.train_s,
        s_per_step=trained.train_s / max(trained.steps_run, 1),
        test_eval_s=eval_s,
        finetune_wall_s=time.perf_counter() - started,
        peak_memory_mb=peak_memory_mb(base.device),
        trainable_params=n_trainable(classifier.model, classifier.head),
        n_train=len(train_set),
        n_dev=len(dev),
        train_ids=[e.id for e in train_set],
        dev_ids=[e.id for e in dev],
        n_truncated=sum(e.truncated for e in [*train_set, *dev, *test]),
        device=str(base.device),
    )
    return CellOutput(rows, metrics, {TRAIN_LOG: trained.log})


def peak_memory_mb(device: torch.device) -> float:
    """The device's peak allocated memory (CUDA), or the process's peak resident set (CPU)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def finetune_rows(cell: CellPlan, test, scores: torch.Tensor) -> list[FinetuneRow]:
    names = cell.label_names
    rows = []
    for example, row_scores in zip(test, scores.tolist()):
        pred = int(np.argmax(row_scores))
        rows.append(
            FinetuneRow(
                example_id=example.id,
                option_logprob=dict(zip(names, row_scores)),
                prediction=names[pred],
                prediction_index=pred,
                gold=names[example.label],
                gold_index=example.label,
                correct=pred == example.label,
                input_tokens=len(example.tokens),
                truncated=example.truncated,
            )
        )
    return rows


def describe(metrics: dict) -> str:
    return (
        f"{metrics['task']} finetune {metrics['finetune_kind']} seed={metrics['seed']}: accuracy "
        f"{metrics['accuracy']:.3f} macro-F1 {metrics['macro_f1']:.3f} (n={metrics['n']}, best "
        f"step {metrics['best_step']} of {metrics['steps_run']}, {metrics['train_s']:.0f} s)"
    )


METHOD = register(
    Method(
        name=NAME,
        identity=identity,
        plan=plan,
        run=run,
        row_type=FinetuneRow,
        summary_metrics=(
            "accuracy",
            "macro_f1",
            "best_dev_accuracy",
            "best_step",
            "train_s",
            "s_per_step",
            "majority_baseline",
        ),
        describe=describe,
    )
)
