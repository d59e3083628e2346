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


@dataclass(frozen=True)
class CellIdentity:
    """What names a cell. A method that has no model or task leaves those fields None."""

    method: str
    task: str | None = None
    template: str | None = None
    label_words: str | None = None
    model: str | None = None
    k: int | None = None
    labels: str | None = None
    seed: int | None = None
    sampling: str | None = None
    per_example: bool | None = None
    nested: bool | None = None
    ood_corpus: str | None = None
    n_test: int | None = None
    eval_seed: int | None = None
    engine: str | None = None  # resolved, so a resumed sweep runs what it recorded
    rule: str | None = None
    extra_rules: list[str] = field(default_factory=list)
    content_free: list[str] = field(default_factory=list)
    domain_premise: str | None = None
    task_version: int | None = None
    harness_version: str | None = None

    def to_dict(self) -> dict:
        """The identity as metrics.json keys, in field order."""
        return {f.name: copy.copy(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def matches(self, stored: dict) -> bool:
        """Whether a metrics.json (of any harness version's keys) names this cell."""
        return all(
            stored.get(key, LATER_KEYS.get(key)) == value for key, value in self.to_dict().items()
        )


def group_columns(*inserted: str) -> list[str]:
    """The collected table's columns that identify a cell across seeds: every identity field
    but the seed, with ``inserted`` columns (e.g. ``scored_rule``) before the versions."""
    names = [f.name for f in dataclasses.fields(CellIdentity) if f.name != SEED_FIELD]
    head = [n for n in names if n not in VERSION_FIELDS]
    return [*head, *inserted, *VERSION_FIELDS]


# list-valued identity fields: one JSON string each in the collected table, so they compare
LIST_FIELDS = tuple(f.name for f in dataclasses.fields(CellIdentity) if f.default_factory is list)
