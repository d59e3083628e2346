"""Demonstration selection and label settings, each random choice from its own seeded stream.

The inputs and their order depend only on (seed, k) — and on the test example when every
example gets a fresh set — never on the label setting, so settings differ only in labels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from icl.config import LABEL_SETTINGS, SAMPLING_RULES
from icl.errors import ICLError, unknown_name

# independent random streams under one seed
ORDER_STREAM, LABEL_STREAM, MAPPING_STREAM = 0, 1, 2


@dataclass(frozen=True)
class DemoSet:
    """Chosen pool indices in prompt order, with the class each one is shown with."""

    indices: list[int]
    gold: list[int]
    shown: list[int]

    @property
    def share_correct(self) -> float:
        if not self.indices:
            return float("nan")
        return float(np.mean([g == s for g, s in zip(self.gold, self.shown)]))


def check_demo_request(pool_labels: list[int], n_classes: int, demos_cfg) -> None:
    """Fail before any model work when k cannot be drawn from the pool."""
    if demos_cfg.labels not in LABEL_SETTINGS:
        raise unknown_name("label setting", demos_cfg.labels, LABEL_SETTINGS)
    if demos_cfg.sampling not in SAMPLING_RULES:
        raise unknown_name("sampling rule", demos_cfg.sampling, SAMPLING_RULES)
    k = demos_cfg.k
    if k < 0:
        raise ICLError(f"demos.k must be >= 0, got {k}")
    if k > len(pool_labels):
        raise ICLError(
            f"demos.k={k} is larger than the demonstration pool ({len(pool_labels)} examples); "
            f"lower demos.k or use a larger task.demo_split"
        )
    if demos_cfg.sampling == "balanced" and k:
        counts = np.bincount(np.asarray(pool_labels, dtype=int), minlength=n_classes)
        per_class = math.ceil(k / n_classes)
        if per_class > counts.min():
            raise ICLError(
                f"demos.k={k} with balanced sampling needs {per_class} examples of every class, "
                f"but the pool has {counts.tolist()} per class; lower demos.k or use "
                f"demos.sampling=uniform"
            )


def balanced_order(pool_labels: np.ndarray, n_classes: int, rng) -> np.ndarray:
    """Rounds of one example per class, classes shuffled in each round: every prefix is balanced."""
    queues = [list(rng.permutation(np.flatnonzero(pool_labels == c))) for c in range(n_classes)]
    order = []
    for _ in range(max(len(q) for q in queues)):
        for c in rng.permutation(n_classes):
            if queues[c]:
                order.append(queues[c].pop(0))
    return np.asarray(order, dtype=int)


def demo_order(pool_labels, n_classes: int, sampling: str, rng) -> np.ndarray:
    """A seeded ordering of the whole pool; the first k of it are the k demonstrations."""
    labels = np.asarray(pool_labels, dtype=int)
    if sampling == "balanced":
        return balanced_order(labels, n_classes, rng)
    return rng.permutation(len(labels))


def derangement(n: int, rng) -> np.ndarray:
    """A permutation of range(n) with no fixed point (for n=2, the swap)."""
    if n < 2:
        raise ICLError("permuted labels need at least two classes")
    while True:
        perm = rng.permutation(n)
        if not np.any(perm == np.arange(n)):
            return perm


def label_mapping(seed: int, n_classes: int) -> np.ndarray:
    """The fixed derangement that permuted labels apply for this seed."""
    return derangement(n_classes, np.random.default_rng([seed, MAPPING_STREAM]))


def shown_labels(gold: list[int], setting: str, n_classes: int, seed: int, stream=()) -> list[int]:
    """The class each demonstration is shown with under a label setting."""
    if setting == "gold":
        return list(gold)
    if setting == "random":
        # one draw per position of the order, so nested k keep their labels
        rng = np.random.default_rng([seed, LABEL_STREAM, *stream])
        return rng.integers(0, n_classes, size=len(gold)).tolist()
    if setting == "permuted":
        mapping = label_mapping(seed, n_classes)
        return [int(mapping[g]) for g in gold]
    raise unknown_name("label setting", setting, LABEL_SETTINGS)


def choose_demos(pool_labels, n_classes: int, demos_cfg, example_index: int | None = None):
    """The DemoSet for a cell (or, with per_example, for one test example)."""
    stream = [] if example_index is None else [example_index + 1]
    if not demos_cfg.nested:
        stream.append(demos_cfg.k)
    rng = np.random.default_rng([demos_cfg.seed, ORDER_STREAM, *stream])
    order = demo_order(pool_labels, n_classes, demos_cfg.sampling, rng)
    indices = [int(i) for i in order[: demos_cfg.k]]
    gold = [int(pool_labels[i]) for i in indices]
    all_shown = shown_labels(
        [int(pool_labels[i]) for i in order], demos_cfg.labels, n_classes, demos_cfg.seed, stream
    )
    return DemoSet(indices=indices, gold=gold, shown=all_shown[: demos_cfg.k])
