"""Demonstration retrieval and order: kNN against brute force, BM25 against a hand computation,
no test example among its own demonstrations, the same retrieved inputs under every label
setting, the embedding cache, and the bad input that stops before a model loads."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
from helpers import fail_if_loaded, run_config

from icl import retrieval
from icl.data import Example
from icl.demos import DemoSet
from icl.errors import ICLError
from icl.identity import CellIdentity
from icl.plan import plan_cell
from icl.retrieval import encoder, lexical, neighbours
from icl.retrieval.order import permutation
from icl.runner import run_cell


class HashEncoder:
    """A stand-in sentence encoder: unit vectors from character trigram counts (texts that
    share trigrams are similar), counting the texts it is asked to embed."""

    name = "test-trigram-encoder"

    def __init__(self, dim: int = 64) -> None:
        self.dim, self.calls = dim, 0

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls += len(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for j in range(len(text) - 2):
                digest = hashlib.md5(text[j : j + 3].encode()).digest()
                out[i, digest[0] % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-9)


@pytest.fixture
def fake_encoder(monkeypatch, tmp_path):
    """Every retrieval in the test embeds with HashEncoder, cached under tmp_path."""
    monkeypatch.setenv("ICL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(encoder, "_MEMO", {})
    fake = HashEncoder()
    real = encoder.embeddings
    monkeypatch.setattr(encoder, "embeddings", lambda texts, enc=None: real(texts, enc or fake))
    return fake


def brute_force(queries, pool, k, excluded):
    """The k best pool rows per query by a full sort on (-cosine, index)."""
    out = []
    for q, ex in zip(queries, excluded):
        sims = [(float(pool[j] @ q), j) for j in range(len(pool)) if j not in ex]
        out.append([j for _, j in sorted(sims, key=lambda t: (-t[0], t[1]))[:k]])
    return out


def unit_rows(rng, n, dim=16):
    x = rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("seed", range(5))
def test_knn_returns_the_true_nearest_neighbours(seed):
    rng = np.random.default_rng(seed)
    pool, queries = unit_rows(rng, 300), unit_rows(rng, 40)
    pool[7] = pool[3]  # an exact tie: the lower index first
    excluded = [sorted(rng.choice(300, size=int(rng.integers(0, 4)), replace=False).tolist())
                for _ in range(40)]  # fmt: skip
    found = neighbours.knn(queries, pool, 8, excluded)
    assert found.indices == brute_force(queries, pool, 8, excluded)
    for q, ids, scores in zip(queries, found.indices, found.scores):
        assert scores == pytest.approx([float(pool[j] @ q) for j in ids], abs=1e-6)
        assert scores == sorted(scores, reverse=True)


def test_knn_diverse_is_knn_at_lambda_one_and_skips_a_duplicate_below_it():
    rng = np.random.default_rng(0)
    pool, queries = unit_rows(rng, 100), unit_rows(rng, 10)
    plain = neighbours.knn(queries, pool, 5, [[]] * 10)
    assert neighbours.knn_diverse(queries, pool, 5, [[]] * 10, 1.0).indices == plain.indices
    q = np.array([1.0, 0.0], dtype=np.float32)
    a, b = np.array([0.99, 0.141]), np.array([0.9, -0.436])
    toy = np.stack([a, a, b]).astype(np.float32)
    toy /= np.linalg.norm(toy, axis=1, keepdims=True)
    # relevance: the two copies of a beat b, but the second copy adds nothing new
    assert neighbours.knn_diverse(q[None], toy, 2, [[]], 1.0).indices == [[0, 1]]
    assert neighbours.knn_diverse(q[None], toy, 2, [[]], 0.5).indices == [[0, 2]]


def lucene_bm25(query, docs, k1=1.5, b=0.75):
    """BM25 by hand, Lucene's form: idf * tf / (tf + k1 * (1 - b + b * |d| / avgdl))."""
    n = len(docs)
    avgdl = sum(len(d) for d in docs) / n
    scores = []
    for d in docs:
        total = 0.0
        for term in query:
            df = sum(term in other for other in docs)
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            tf = d.count(term)
            total += idf * tf / (tf + k1 * (1 - b + b * len(d) / avgdl))
        scores.append(total)
    return scores


def test_bm25_matches_a_hand_computed_ranking_on_a_toy_corpus():
    corpus = [
        "cats purr softly",
        "dogs bark loudly at cats",
        "a dog chased the red ball",
        "cats cats cats everywhere",
        "the market fell sharply",
    ]
    index = lexical.BM25(corpus, stop=())
    query = "cats bark"
    hand = lucene_bm25(query.split(), [d.split() for d in corpus])
    assert index.scores(query).tolist() == pytest.approx(hand, rel=1e-5)
    ranked = neighbours.bm25(index, [query], 3, [[]])
    # by hand: doc 1 has both terms; doc 3 has "cats" three times; doc 0 once, in 3 words
    assert ranked.indices == [[1, 3, 0]]
    assert ranked.indices[0] == sorted(range(5), key=lambda i: -hand[i])[:3]


def test_bm25_drops_stop_words_and_scores_zero_without_a_shared_term():
    index = lexical.BM25(["the cat sat", "the dog ran"])
    assert index.scores("the the the").tolist() == [0.0, 0.0]
    assert lexical.tokens("The Cat, sat!", lexical.stopwords()) == ["cat", "sat"]


def examples(texts, labels=None, prefix="p"):
    labels = labels or [i % 2 for i in range(len(texts))]
    return [Example(f"{prefix}-{i}", {"text": t}, y) for i, (t, y) in enumerate(zip(texts, labels))]


def test_no_test_example_is_retrieved_as_its_own_demonstration(fake_encoder):
    pool = examples(["a great film", "a great film", "great film indeed", "dull", "awful mess"])
    test = [Example("p-0", {"text": "a great film"}, 1), Example("t-9", {"text": "dull"}, 0)]
    # the first test example is pool entry 0 (same id) and has a copy of its text at 1
    assert retrieval.exclusions(pool, test) == [[0, 1], [3]]
    cfg = run_config("demos.k=3", "demos.selection=knn").demos
    sets = retrieval.demo_sets(cfg, pool, test, ["text"], 2, [None, None], fake_encoder)
    assert sets[0].indices and not {0, 1} & set(sets[0].indices)
    assert 3 not in sets[1].indices
    with pytest.raises(ICLError, match="more than the 3 pool examples"):
        retrieval.demo_sets(run_config("demos.k=4", "demos.selection=knn").demos,
                            pool, test, ["text"], 2, [None, None], fake_encoder)  # fmt: skip


@pytest.mark.parametrize("selection", ["knn", "bm25", "knn_diverse"])
def test_real_cells_never_show_a_test_input_among_its_demonstrations(selection, fake_encoder):
    plan = plan_cell(run_config("task=sst2", "model=tiny-llama", "demos.k=8", "eval.n_test=30",
                                f"demos.selection={selection}"))  # fmt: skip
    pool_text = {ex.id: ex.fields["text"] for ex in plan.pool}
    for ex, demos in zip(plan.test, plan.demos):
        assert len(demos.ids) == 8 and len(set(demos.ids)) == 8
        assert ex.fields["text"] not in {pool_text[i] for i in demos.ids}
    # retrieval is per example: the sets differ
    assert len({tuple(d.ids) for d in plan.demos}) > 20


SETTINGS = ("gold", "random", "permuted", "correct_25", "random_true_dist", "random_words",
            "no_labels", "labels_only")  # fmt: skip


@pytest.mark.parametrize("selection", ["knn", "bm25"])
@pytest.mark.parametrize("order", ["pool", "similar_first", "random", "by_label"])
def test_every_label_setting_shows_the_same_retrieved_inputs_in_the_same_order(
    selection, order, fake_encoder
):
    common = ("task=sst2", "model=tiny-llama", "demos.k=6", "eval.n_test=12", "demos.seed=3",
              f"demos.selection={selection}", f"demos.order={order}")  # fmt: skip
    plans = {s: plan_cell(run_config(*common, f"demos.labels={s}")) for s in SETTINGS}
    gold = plans["gold"]
    for setting, plan in plans.items():
        for a, b, sa, sb in zip(plan.demos, gold.demos, plan.demo_sets, gold.demo_sets):
            assert a.ids == b.ids, setting
            assert a.scores == b.scores, setting
            assert sa.gold == sb.gold, setting
    shown = [s.shown for s in plans["random"].demo_sets]
    assert shown != [s.gold for s in gold.demo_sets]  # random labels are drawn on top
    assert [d.gold_words for d in gold.demos] == [[w for _, w in d.pairs] for d in gold.demos]


def test_orders_sort_by_similarity_group_by_class_and_shuffle_reproducibly():
    scores, gold = [0.9, 0.7, 0.8, 0.2], [1, 0, 1, 0]
    rng = np.random.default_rng(0)
    assert permutation("pool", 4, scores, gold, rng, retrieved=True) == [3, 2, 1, 0]
    assert permutation("pool", 4, scores, gold, rng, retrieved=False) == [0, 1, 2, 3]
    assert permutation("similar_last", 4, scores, gold, rng, True) == [3, 1, 2, 0]
    assert permutation("similar_first", 4, scores, gold, rng, True) == [0, 2, 1, 3]
    assert permutation("by_label", 4, scores, gold, rng, True) == [3, 1, 2, 0]
    a = permutation("random", 4, scores, gold, np.random.default_rng(5), True)
    assert a == permutation("random", 4, scores, gold, np.random.default_rng(5), True)
    assert sorted(a) == [0, 1, 2, 3]


def test_random_selection_keeps_its_draw_and_a_similarity_order_only_reorders_it(fake_encoder):
    base = ("task=sst2", "model=tiny-llama", "demos.k=6", "eval.n_test=10")
    drawn = plan_cell(run_config(*base))
    assert len({id(s) for s in drawn.demo_sets}) == 1  # one shared set, as before
    assert all(d.scores is None for d in drawn.demos)
    ordered = plan_cell(run_config(*base, "demos.order=similar_last"))
    for shared, own in zip(drawn.demos, ordered.demos):
        assert sorted(own.ids) == sorted(shared.ids)
        assert own.scores == sorted(own.scores)  # the most similar last
    assert len({tuple(d.ids) for d in ordered.demos}) > 1


def test_the_pool_is_embedded_once_and_read_back_from_a_file(fake_encoder, tmp_path):
    texts = ["one text", "another text", "a third"]
    first = encoder.embeddings(texts)
    assert fake_encoder.calls == 3
    encoder._MEMO.clear()  # a new process: only the disk cache is left
    again = encoder.embeddings(texts)
    assert fake_encoder.calls == 3 and np.array_equal(first, again)
    files = list((tmp_path / "cache" / "embeddings").rglob("*"))
    names = [p.name for p in files if p.is_file()]
    assert names == [f"{encoder.texts_digest(texts)}.npy"]  # no temporary file is left
    path = next(p for p in files if p.is_file())
    path.write_bytes(b"damaged")
    encoder._MEMO.clear()
    assert np.array_equal(encoder.embeddings(texts), first) and fake_encoder.calls == 6
    encoder.embeddings(texts[:2])  # other texts: another key
    assert fake_encoder.calls == 8


def test_minilm_embeds_similar_sentences_closer_than_unrelated_ones():
    vectors = encoder.encode(["a wonderful, moving film", "a touching and lovely movie",
                              "the stock market fell sharply today"])  # fmt: skip
    assert np.linalg.norm(vectors, axis=1) == pytest.approx([1, 1, 1], abs=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("demos.selection=nearest",), "valid names: bm25, knn, knn_diverse, random"),
        (("demos.order=backwards",), "by_label, pool, random, similar_first, similar_last"),
        (("format=markdown",), "valid names: chat, plain"),
        (("demos.selection=knn", "demos.k=7000"), "larger than the demonstration pool"),
        (("demos.selection=knn", "demos.retrieve_by=[title]"), "text fields are \\['text'\\]"),
        (("demos.selection=bm25", "demos.sampling=balanced"), "ranks them by similarity"),
        (("demos.selection=knn_diverse", "demos.diversity_lambda=2"), "in \\[0, 1\\]"),
        (("format=chat", "demos.labels=no_labels"), "use format=plain"),
    ],
)
def test_bad_selection_order_and_format_stop_before_any_model_loads(overrides, message, tmp_path):
    cfg = run_config("task=sst2", "model=tiny-llama", "demos.k=4", "eval.n_test=4", *overrides,
                     out_dir=tmp_path)  # fmt: skip
    with pytest.raises(ICLError, match=message):
        run_cell(cfg, load_model=fail_if_loaded)


def test_a_cell_records_its_demonstrations_scores_selection_and_order(fake_encoder, tmp_path):
    common = ("task=sst2", "model=tiny-llama", "demos.k=3", "eval.n_test=4")
    cfg = run_config(*common, "demos.selection=bm25", "demos.order=similar_first",
                     out_dir=tmp_path)  # fmt: skip
    metrics = run_cell(cfg)
    assert (metrics["selection"], metrics["order"]) == ("bm25", "similar_first")
    assert "format" not in metrics  # plain: left out, as for every earlier cell
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    for row in rows:
        assert len(row["demo_ids"]) == len(row["demo_scores"]) == 3
        assert row["demo_scores"] == sorted(row["demo_scores"], reverse=True)
    plain = run_cell(run_config("task=sst2", "model=tiny-llama", "demos.k=3", "eval.n_test=4",
                                out_dir=tmp_path / "random"))  # fmt: skip
    line = (tmp_path / "random" / "predictions.jsonl").read_text().splitlines()[0]
    assert "demo_scores" not in json.loads(line)
    assert not {"selection", "order", "format"} & set(plain)


def test_default_cells_keep_their_identity_keys_and_never_match_a_retrieval_cell():
    default = CellIdentity(method="score", task="sst2", k=4)
    knn = CellIdentity(method="score", task="sst2", k=4, selection="knn", format="chat")
    assert not {"selection", "order", "format"} & set(default.to_dict())
    assert default.matches(default.to_dict())
    assert not default.matches(knn.to_dict()) and not knn.matches(default.to_dict())
    assert knn.matches(knn.to_dict())


def test_shared_sets_stay_shared_under_random_and_by_label_orders():
    drawn = DemoSet([5, 1, 7, 2], [1, 0, 1, 0], [1, 0, 1, 0])
    cfg = run_config("demos.k=4", "demos.order=by_label").demos
    out = retrieval.demo_sets(cfg, examples(["x"] * 8), examples(["y"] * 3, prefix="t"),
                              ["text"], 2, [drawn] * 3)  # fmt: skip
    assert out[0] is out[1] is out[2]
    assert out[0].indices == [1, 2, 5, 7] and out[0].gold == [0, 0, 1, 1]
