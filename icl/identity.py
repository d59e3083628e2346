"""A cell's identity: the values that name it.

``metrics.json`` stores them, the collected table groups runs by them, and a resumed sweep
compares them before it skips a cell: all three come from ``CellIdentity``.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field

SEED_FIELD = "seed"
# the versions close every identity; the long form of the rule columns puts scored_rule first
VERSION_FIELDS = ("task_version", "harness_version")
# identity keys added after runs were written, with the value those runs had
LATER_KEYS = {
    "method": "score",
    "extra_rules": [],
    "content_free": ["N/A", "", "[MASK]"],
    "domain_premise": None,
}


METHOD_SPECIFIC = "method_specific"
# a setting added after runs were written: None (not written) at its default, so cells that
# use the default keep the keys they always had; the metadata holds the default's name
DEFAULT_VALUE = "default_value"


def _method_specific():
    """A field only some methods set (None elsewhere, and then not written)."""
    return field(default=None, metadata={METHOD_SPECIFIC: True})


def _unless_default(default: str):
    """A field written only when its setting is not ``default`` (None stands for it)."""
    return field(default=None, metadata={DEFAULT_VALUE: default})


@dataclass(frozen=True)
class CellIdentity:
    """What names a cell. A method that has no model or task leaves those fields None."""

    method: str
    task: str | None = None
    template: str | None = None
    label_words: str | None = None
    # format=chat: the prompt laid out by the tokenizer's chat template (plain: not written)
    format: str | None = _unless_default("plain")
    model: str | None = None
    k: int | None = None
    labels: str | None = None
    seed: int | None = None
    sampling: str | None = None
    per_example: bool | None = None
    nested: bool | None = None
    ood_corpus: str | None = None
    # which demonstrations and in what order (random selection, pool order: not written)
    selection: str | None = _unless_default("random")
    order: str | None = _unless_default("pool")
    diversity_lambda: float | None = _method_specific()  # knn_diverse only
    retrieve_by: str | None = _method_specific()  # retrieval by some text fields only
    n_test: int | None = None
    eval_seed: int | None = None
    engine: str | None = None  # resolved, so a resumed sweep runs what it recorded
    rule: str | None = None
    extra_rules: list[str] = field(default_factory=list)
    content_free: list[str] = field(default_factory=list)
    domain_premise: str | None = None
    # method=generate: how the answers were written (absent from other methods' files)
    decoding: str | None = _method_specific()
    temperature: float | None = _method_specific()
    top_k: int | None = _method_specific()
    top_p: float | None = _method_specific()
    max_new_tokens: int | None = _method_specific()
    answer_match: str | None = _method_specific()
    samples: int | None = _method_specific()
    speculative: str | None = _method_specific()
    draft_model: str | None = _method_specific()
    draft_tokens: int | None = _method_specific()
    decoding_seed: int | None = _method_specific()
    # method=finetune: what was trained and how (absent from other methods' files)
    finetune_kind: str | None = _method_specific()
    finetune_head: str | None = _method_specific()  # kind=head only
    finetune_k_per_class: int | None = _method_specific()
    finetune_dev_per_class: int | None = _method_specific()
    finetune_train_layers: str | None = _method_specific()  # "2", "all"; None with LoRA
    finetune_lora_r: int | None = _method_specific()
    finetune_lora_alpha: float | None = _method_specific()
    finetune_lr: float | None = _method_specific()
    finetune_weight_decay: float | None = _method_specific()
    finetune_steps: int | None = _method_specific()
    finetune_batch_size: int | None = _method_specific()
    finetune_eval_every: int | None = _method_specific()
    finetune_patience: int | None = _method_specific()
    finetune_max_tokens: int | None = _method_specific()
    finetune_seed: int | None = _method_specific()
    task_version: int | None = None
    harness_version: str | None = None

    def to_dict(self) -> dict:
        """The identity as metrics.json keys, in field order; a method-specific field that is
        None is left out, so one method's files carry no other method's keys, and so is a
        later setting at its default."""
        return {
            f.name: copy.copy(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if not (_omitted_when_none(f) and getattr(self, f.name) is None)
        }

    def matches(self, stored: dict) -> bool:
        """Whether a metrics.json (of any harness version's keys) names this cell."""
        mine = self.to_dict()
        # a later setting left out at its default must be left out (or default) there too
        defaults = {k: v for k, v in DEFAULTS_LEFT_OUT.items() if k not in mine}
        return all(
            stored.get(key, LATER_KEYS.get(key)) == value for key, value in mine.items()
        ) and all(stored.get(key, default) == default for key, default in defaults.items())


def _omitted_when_none(f) -> bool:
    return bool(f.metadata.get(METHOD_SPECIFIC)) or DEFAULT_VALUE in f.metadata


# the later settings not written at their default: column -> the default's name
DEFAULTS_LEFT_OUT = {
    f.name: f.metadata[DEFAULT_VALUE]
    for f in dataclasses.fields(CellIdentity)
    if DEFAULT_VALUE in f.metadata
}


def group_columns(*inserted: str) -> list[str]:
    """The collected table's columns that identify a cell across seeds: every identity field
    but the seed, with ``inserted`` columns (e.g. ``scored_rule``) before the versions."""
    names = [f.name for f in dataclasses.fields(CellIdentity) if f.name != SEED_FIELD]
    head = [n for n in names if n not in VERSION_FIELDS]
    return [*head, *inserted, *VERSION_FIELDS]


# list-valued identity fields: one JSON string each in the collected table, so they compare
LIST_FIELDS = tuple(f.name for f in dataclasses.fields(CellIdentity) if f.default_factory is list)
