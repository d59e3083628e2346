"""The order of a prompt's demonstrations (Lu et al. 2022: order alone swings accuracy).

An order is a permutation of the selection's list (random: the seeded draw; retrieval: best
first). It reads the demonstrations' similarity to the test input and their gold classes,
never the labels they are shown with, so every label setting keeps the same order.
"""

from __future__ import annotations

import numpy as np

from icl.errors import unknown_name

ORDERS = ("pool", "similar_last", "similar_first", "random", "by_label")
# orders that read each test example's similarity to its demonstrations
SIMILARITY_ORDERS = ("similar_last", "similar_first")


def check_order(order: str) -> None:
    if order not in ORDERS:
        raise unknown_name("demonstration order (demos.order)", order, ORDERS)


def pool_order(n: int, retrieved: bool) -> list[int]:
    """As the selection gives them: a random draw as drawn, a retrieval nearest last."""
    return list(range(n))[::-1] if retrieved else list(range(n))


def permutation(order: str, n: int, scores, gold, rng, retrieved: bool) -> list[int]:
    """Positions of the selection's list in prompt order.

    similar_last / similar_first sort by similarity (ties keep pool order); by_label groups
    the gold classes in class order, pool order within each; random shuffles with ``rng``.
    """
    check_order(order)
    base = pool_order(n, retrieved)
    if order == "pool":
        return base
    if order == "random":
        return [int(i) for i in rng.permutation(n)]
    if order == "by_label":
        return sorted(base, key=lambda i: gold[i])
    if scores is None:
        raise ValueError(f"demos.order={order} needs each demonstration's similarity")
    ranked = sorted(base, key=lambda i: scores[i])  # stable: ties keep pool order
    return ranked if order == "similar_last" else sorted(base, key=lambda i: -scores[i])


def shuffle_rng(seed: int, stream_id: int, example_index: int | None) -> np.random.Generator:
    """The seeded generator of order=random: one per cell, or one per test example."""
    stream = [] if example_index is None else [example_index + 1]
    return np.random.default_rng([seed, stream_id, *stream])
