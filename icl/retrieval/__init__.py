"""Which demonstrations and in what order: retrieval from the pool per test example, and the
order of a prompt's demonstrations.

``demos.selection``: ``random`` (``icl.demos.choose_demos``'s seeded draw, unchanged), ``knn``
(the nearest pool examples by sentence embedding, ``encoder``), ``knn_diverse`` (the nearest
made diverse by maximal marginal relevance) or ``bm25`` (``lexical``). ``demos.order``
(``order``) places them. Retrieval never returns the test example itself (nor a copy of its
text); the label setting is drawn on top of the retrieved inputs, so every label setting of a
seed shows the same inputs in the same order.
"""

from __future__ import annotations

from icl.demos import SHUFFLE_STREAM, DemoSet, class_shares, ranked_demo_set, reordered
from icl.errors import ICLError, unknown_name
from icl.retrieval import neighbours
from icl.retrieval.order import SIMILARITY_ORDERS, check_order, permutation, shuffle_rng

SELECTIONS = ("random", "knn", "knn_diverse", "bm25")
RETRIEVALS = ("knn", "knn_diverse", "bm25")
EMBEDDED = ("knn", "knn_diverse")


def check_selection(demos_cfg, text_fields) -> list[str]:
    """Fail on names and settings retrieval cannot use; the fields it reads."""
    if demos_cfg.selection not in SELECTIONS:
        raise unknown_name("demonstration selection (demos.selection)", demos_cfg.selection,
                           SELECTIONS)  # fmt: skip
    check_order(demos_cfg.order)
    retrieved = demos_cfg.selection in RETRIEVALS
    if retrieved and demos_cfg.sampling != "uniform":
        raise ICLError(
            f"demos.sampling={demos_cfg.sampling} draws random demonstrations; "
            f"demos.selection={demos_cfg.selection} ranks them by similarity (keep "
            f"demos.sampling=uniform, or use demos.selection=random)"
        )
    if not 0.0 <= demos_cfg.diversity_lambda <= 1.0:
        raise ICLError(
            f"demos.diversity_lambda must be in [0, 1], got {demos_cfg.diversity_lambda}"
        )
    fields = list(demos_cfg.retrieve_by or text_fields)
    unknown = [f for f in fields if f not in text_fields]
    if unknown:
        raise ICLError(
            f"demos.retrieve_by names {unknown}, which the demonstration pool does not have: "
            f"its text fields are {list(text_fields)} (task.text_fields)"
        )
    return fields


def per_example(demos_cfg) -> bool:
    """Whether each test example gets demonstrations (or an order) of its own."""
    return retrieves_per_example(demos_cfg) or demos_cfg.per_example


def retrieves_per_example(demos_cfg) -> bool:
    """Whether the demonstrations or their order come from each example's similarities."""
    return demos_cfg.selection in RETRIEVALS or demos_cfg.order in SIMILARITY_ORDERS


def texts(examples, fields: list[str]) -> list[str]:
    """What retrieval compares: each example's text fields, one per line."""
    out = []
    for ex in examples:
        missing = [f for f in fields if not isinstance(ex.fields.get(f), str)]
        if missing:
            raise ICLError(
                f"example {ex.id} has no text field {missing[0]!r} to retrieve by (it has "
                f"{sorted(ex.fields)}); retrieval reads the task's text_fields"
            )
        out.append("\n".join(ex.fields[f] for f in fields))
    return out


def exclusions(pool, test) -> list[list[int]]:
    """Per test example, the pool entries it must not retrieve: itself or a copy of its text."""
    by_key: dict[str, list[int]] = {}
    by_id: dict[str, int] = {}
    for i, ex in enumerate(pool):
        by_key.setdefault(ex.key, []).append(i)
        by_id[ex.id] = i
    out = []
    for ex in test:
        same = set(by_key.get(ex.key, []))
        if ex.id in by_id:
            same.add(by_id[ex.id])
        out.append(sorted(same))
    return out


def ranking(demos_cfg, pool, test, fields, encode=None) -> neighbours.Ranking:
    """Each test example's k demonstrations by the selection, best first, with scores."""
    from icl.retrieval import encoder, lexical

    pool_texts, test_texts = texts(pool, fields), texts(test, fields)
    excluded = exclusions(pool, test)
    k = demos_cfg.k
    if demos_cfg.selection == "bm25":
        return neighbours.bm25(lexical.BM25(pool_texts), test_texts, k, excluded)
    pool_vectors = encoder.embeddings(pool_texts, encode)
    test_vectors = encoder.embeddings(test_texts, encode)
    if demos_cfg.selection == "knn":
        return neighbours.knn(test_vectors, pool_vectors, k, excluded)
    return neighbours.knn_diverse(
        test_vectors, pool_vectors, k, excluded, demos_cfg.diversity_lambda
    )


def similarities(demo_sets, pool, test, fields, encode=None) -> list[list[float]]:
    """Each test example's cosine similarity to each demonstration of its set."""
    from icl.retrieval import encoder

    pool_vectors = encoder.embeddings(texts(pool, fields), encode)
    test_vectors = encoder.embeddings(texts(test, fields), encode)
    return neighbours.cosine_of(test_vectors, pool_vectors, [d.indices for d in demo_sets])


def ordered(demo_set: DemoSet, demos_cfg, example_index, retrieved: bool, scores=None):
    """The set in the configured order (a shared set: ``example_index`` None)."""
    scores = demo_set.scores if scores is None else scores
    rng = shuffle_rng(demos_cfg.seed, SHUFFLE_STREAM, example_index)
    n = len(demo_set.indices)
    positions = permutation(demos_cfg.order, n, scores, demo_set.gold, rng, retrieved)
    return reordered(demo_set, positions, scores)


def demo_sets(demos_cfg, pool, test, fields, n_classes: int, drawn, encode=None):
    """Each test example's DemoSet under the selection and order (``drawn``: the random
    selection's sets, one per example; the same object where they share one).

    ``encode`` (texts -> unit vectors, with a ``name``) stands in for MiniLM (tests).
    """
    if demos_cfg.k == 0:
        return drawn
    labels = [ex.label for ex in pool]
    if demos_cfg.selection in RETRIEVALS:
        found = ranking(demos_cfg, pool, test, fields, encode)
        shares = class_shares(labels, n_classes)
        sets = [
            ranked_demo_set(ids, scores, labels, n_classes, demos_cfg, i, shares)
            for i, (ids, scores) in enumerate(zip(found.indices, found.scores))
        ]
        return [ordered(s, demos_cfg, i, True) for i, s in enumerate(sets)]
    if demos_cfg.order in SIMILARITY_ORDERS:
        scores = similarities(drawn, pool, test, fields, encode)
        return [ordered(s, demos_cfg, i, False, sc) for i, (s, sc) in enumerate(zip(drawn, scores))]
    # order=random or by_label on random demonstrations: a shared set stays shared
    done: dict[int, DemoSet] = {}
    out = []
    for i, demo_set in enumerate(drawn):
        if id(demo_set) not in done:
            index = i if demos_cfg.per_example else None
            done[id(demo_set)] = ordered(demo_set, demos_cfg, index, False)
        out.append(done[id(demo_set)])
    return out
