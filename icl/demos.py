"""Demonstration selection and label settings, each random choice from its own seeded stream.

The inputs and their order depend only on (seed, k) — and on the test example when every
example gets a fresh set — never on the label setting, so settings differ only in labels.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from dataclasses import dataclass

import numpy as np

from icl.errors import ICLError, unknown_name

# independent random streams under one seed
ORDER_STREAM, LABEL_STREAM, MAPPING_STREAM, CORRECT_STREAM, OOD_STREAM, WORDS_STREAM = range(6)
# demos.order=random (icl.retrieval.order): a stream of its own, so the draws above stay
SHUFFLE_STREAM = 6

# settings that change what a demonstration shows, not which class it carries (gold)
FORMAT_SETTINGS = ("ood_inputs", "random_words", "no_labels", "labels_only")
# what the demonstrations show (Min et al. 2022, sections 4 and 5); correct_P keeps the gold
# label on P percent of them, e.g. correct_75. Every name of a label setting is here.
LABEL_SETTINGS = (
    "gold",
    "random",
    "permuted",
    "correct_P",
    "random_true_dist",
    *FORMAT_SETTINGS,
)
SAMPLING_RULES = ("uniform", "balanced")
# how the study tables and charts name and order the settings (k=0 cells are "no demos")
NO_DEMOS = "no demos"
CORRECT_SHARES_SHOWN = (75, 50, 25, 0)
CHART_ORDER = [
    NO_DEMOS,
    "gold",
    "random",
    "random_true_dist",
    *(f"correct_{p}" for p in CORRECT_SHARES_SHOWN),
    *FORMAT_SETTINGS,
]
# Min et al.'s ablations: what matters besides the labels' correctness
ABLATION_SETTINGS = [NO_DEMOS, "gold", "random", *FORMAT_SETTINGS]
_CORRECT = re.compile(r"correct_(\d+)")


@dataclass(frozen=True)
class DemoSet:
    """Chosen pool indices in prompt order, with the class each one is shown with."""

    indices: list[int]
    gold: list[int]
    shown: list[int]
    # the inputs shown instead of the pool's (ood_inputs), one field dict per demonstration
    inputs: list[dict[str, str]] | None = None
    # each one's similarity to the test input (retrieval, or a similarity order), else None
    scores: list[float] | None = None

    @property
    def share_correct(self) -> float:
        if not self.indices:
            return float("nan")
        return float(np.mean([g == s for g, s in zip(self.gold, self.shown)]))


def correct_percent(setting: str) -> int | None:
    """P of a ``correct_P`` setting (None for every other setting)."""
    match = _CORRECT.fullmatch(setting)
    return int(match.group(1)) if match else None


def check_label_setting(setting: str) -> None:
    percent = correct_percent(setting)
    if percent is not None:
        if percent > 100:
            raise ICLError(f"demos.labels={setting}: P in correct_P must be 0 to 100")
        return
    if setting not in LABEL_SETTINGS or setting == "correct_P":
        raise unknown_name("label setting", setting, LABEL_SETTINGS)


def check_demo_request(pool_labels: list[int], n_classes: int, demos_cfg) -> None:
    """Fail before any model work when k cannot be drawn from the pool."""
    check_label_setting(demos_cfg.labels)
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


def class_shares(pool_labels, n_classes: int) -> np.ndarray:
    """Each class's share of the demonstration pool (the training label distribution)."""
    counts = np.bincount(np.asarray(pool_labels, dtype=int), minlength=n_classes)
    return counts / counts.sum()


def partly_correct(gold: list[int], percent: int, n_classes: int, rng) -> list[int]:
    """Exactly round(P% of k) demonstrations keep their gold class; the others get a wrong
    class drawn uniformly from the remaining ones."""
    k = len(gold)
    keep = set(rng.choice(k, size=int(round(k * percent / 100)), replace=False).tolist())
    # an offset in 1..n-1 added modulo n is uniform over the other classes
    offsets = rng.integers(1, n_classes, size=k) if n_classes > 1 else np.zeros(k, dtype=int)
    return [g if i in keep else int((g + offsets[i]) % n_classes) for i, g in enumerate(gold)]


def shown_labels(
    gold: list[int], setting: str, n_classes: int, seed: int, stream=(), class_share=None
) -> list[int]:
    """The class each demonstration is shown with under a label setting.

    ``gold`` is the whole seeded order of the pool (or its first k for correct_P), and each
    random setting makes one draw per position, so nested k keep their labels.
    """
    if setting == "gold" or setting in FORMAT_SETTINGS:
        return list(gold)
    if setting == "random":
        rng = np.random.default_rng([seed, LABEL_STREAM, *stream])
        return rng.integers(0, n_classes, size=len(gold)).tolist()
    if setting == "random_true_dist":
        rng = np.random.default_rng([seed, LABEL_STREAM, *stream])
        if class_share is None:
            raise ValueError("random_true_dist needs the pool's class shares")
        return rng.choice(n_classes, size=len(gold), p=class_share).tolist()
    if setting == "permuted":
        mapping = label_mapping(seed, n_classes)
        return [int(mapping[g]) for g in gold]
    percent = correct_percent(setting)
    if percent is not None:
        if n_classes < 2 and percent < 100:
            raise ICLError(f"demos.labels={setting} needs at least two classes")
        rng = np.random.default_rng([seed, CORRECT_STREAM, *stream])
        return partly_correct(list(gold), percent, n_classes, rng)
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
    # correct_P fixes the share within the k shown; the other settings draw along the order
    labelled = indices if correct_percent(demos_cfg.labels) is not None else order
    shown = shown_labels(
        [int(pool_labels[i]) for i in labelled],
        demos_cfg.labels,
        n_classes,
        demos_cfg.seed,
        stream,
        class_shares(pool_labels, n_classes),
    )
    return DemoSet(indices=indices, gold=gold, shown=shown[: demos_cfg.k])


def ranked_demo_set(
    ranked: list[int], scores, pool_labels, n_classes: int, demos_cfg, example_index: int, shares
) -> DemoSet:
    """A retrieved DemoSet (``ranked``: pool indices, best first): the label setting draws
    along the ranking from the example's own streams, as choose_demos does along its draw."""
    stream = [example_index + 1]
    if not demos_cfg.nested:
        stream.append(demos_cfg.k)
    gold = [int(pool_labels[i]) for i in ranked]
    shown = shown_labels(gold, demos_cfg.labels, n_classes, demos_cfg.seed, stream, shares)
    return DemoSet(indices=list(ranked), gold=gold, shown=shown, scores=scores)


def reordered(demo_set: DemoSet, positions: list[int], scores=None) -> DemoSet:
    """The same demonstrations (with their labels) in the order ``positions`` gives; with
    ``scores``, each one's similarity (in the set's current order) is recorded too."""
    scores = demo_set.scores if scores is None else scores

    def pick(values):
        return None if values is None else [values[p] for p in positions]

    return dataclasses.replace(
        demo_set,
        indices=pick(demo_set.indices),
        gold=pick(demo_set.gold),
        shown=pick(demo_set.shown),
        inputs=pick(demo_set.inputs),
        scores=pick(scores),
    )


def similar_length_texts(targets: list[str], corpus: list[str], rng) -> list[str]:
    """For each target in turn, an unused corpus text of the closest length (ties at random).

    Picks are made in order, so the first j picks do not depend on how many follow (nested k).
    """
    if len(corpus) < len(targets):
        raise ICLError(f"the OOD corpus has {len(corpus)} texts; {len(targets)} are needed")
    order = rng.permutation(len(corpus))
    lengths = np.array([len(corpus[i]) for i in order], dtype=float)
    picked = []
    for target in targets:
        best = int(np.argmin(np.abs(lengths - len(target))))
        picked.append(corpus[order[best]])
        lengths[best] = np.inf
    return picked


def ood_inputs(inputs: list[dict[str, str]], corpus: list[str], seed: int, stream=()):
    """Every field of every demonstration input replaced by an OOD text of similar length."""
    rng = np.random.default_rng([seed, OOD_STREAM, *stream])
    targets = [text for fields in inputs for text in fields.values()]
    texts = iter(similar_length_texts(targets, corpus, rng))
    return [{name: next(texts) for name in fields} for fields in inputs]


@functools.lru_cache(maxsize=1)
def english_words() -> tuple[str, ...]:
    """Lower-case alphabetic words of GCIDE (the dictionary list of the english-words package,
    the package Min et al. 2022 drew their random words from), 3 to 10 letters, sorted."""
    from english_words import get_english_words_set

    words = get_english_words_set(["gcide"], alpha=True, lower=True)
    return tuple(sorted(w for w in words if w.isascii() and w.isalpha() and 3 <= len(w) <= 10))


def random_label_words(n_classes: int, seed: int) -> list[str]:
    """A fixed random English word per class for this seed (the random_words setting)."""
    words = english_words()
    rng = np.random.default_rng([seed, WORDS_STREAM])
    return [words[i] for i in rng.choice(len(words), size=n_classes, replace=False)]


@dataclass(frozen=True)
class Demonstrations:
    """One prompt's demonstrations as it shows them, resolved from a DemoSet and the setting."""

    # the pool examples' ids, in prompt order
    ids: list[str]
    # what each demonstration shows: its input fields and its label word (None: left out)
    pairs: list[tuple[dict[str, str] | None, str | None]]
    # the label word of each demonstration's gold class
    gold_words: list[str]
    # the share of demonstrations shown with their gold class (nan with none)
    share_correct: float
    # each one's similarity to the test input, in prompt order (None: not computed)
    scores: list[float] | None = None


def show(demo_set: DemoSet, pool, setting: str, words) -> Demonstrations:
    """What a prompt shows for a DemoSet under a label setting (``words``: one per class)."""
    inputs = demo_set.inputs or [pool[i].fields for i in demo_set.indices]
    pairs = [(fields, words[c]) for fields, c in zip(inputs, demo_set.shown)]
    if setting == "no_labels":
        pairs = [(fields, None) for fields, _ in pairs]
    elif setting == "labels_only":
        pairs = [(None, word) for _, word in pairs]
    return Demonstrations(
        ids=[pool[i].id for i in demo_set.indices],
        pairs=pairs,
        gold_words=[words[c] for c in demo_set.gold],
        share_correct=demo_set.share_correct,
        scores=demo_set.scores,
    )


def option_words(setting: str, words: list[str], seed: int) -> list[str]:
    """The label words the options and demonstrations use: the seed's random English words
    under random_words, else the template's."""
    if setting == "random_words":
        return random_label_words(len(words), seed)
    return list(words)


def with_ood_inputs(
    demo_sets: list[DemoSet], pool, corpus: list[str], seed: int, per_example: bool
) -> list[DemoSet]:
    """Each demonstration set with its inputs replaced by OOD texts of similar length."""
    replaced: dict[int, DemoSet] = {}
    out = []
    for i, demo_set in enumerate(demo_sets):
        if id(demo_set) not in replaced:  # a shared set is replaced once
            stream = [i + 1] if per_example else []
            inputs = [pool[j].fields for j in demo_set.indices]
            new_inputs = ood_inputs(inputs, corpus, seed, stream)
            replaced[id(demo_set)] = dataclasses.replace(demo_set, inputs=new_inputs)
        out.append(replaced[id(demo_set)])
    return out


def permuted_names(seed: int, label_names: list[str]) -> dict[str, str]:
    """permuted labels: each gold class name and the class it is shown as."""
    mapping = label_mapping(seed, len(label_names))
    return {label_names[g]: label_names[int(m)] for g, m in enumerate(mapping)}
