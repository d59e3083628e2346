"""The demonstration variants of Min et al. 2022: each one's defining property."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import CountingLoader, fail_if_loaded, run_config, task_pools

from icl import templates
from icl.config import DemosConfig
from icl.demos import (
    choose_demos,
    class_shares,
    english_words,
    random_label_words,
    similar_length_texts,
)
from icl.errors import ICLError
from icl.plan import plan_cell
from icl.runner import run_cell

SMALL = ("task=sst2", "model=tiny-llama", "eval.n_test=4")
EVERY_SETTING = (
    "gold",
    "random",
    "permuted",
    "correct_0",
    "correct_50",
    "random_true_dist",
    "ood_inputs",
    "random_words",
    "no_labels",
    "labels_only",
)


def plan(*overrides):
    return plan_cell(run_config(*SMALL, *overrides))


@pytest.mark.parametrize("percent", [0, 25, 50, 75, 100])
@pytest.mark.parametrize("k", [1, 4, 8, 16])
def test_correct_p_keeps_exactly_p_percent_gold_on_the_gold_inputs(percent, k):
    labels = np.random.default_rng(k).permutation([0, 1, 2] * 20).tolist()
    for seed in range(20):
        gold = choose_demos(labels, 3, DemosConfig(k=k, seed=seed))
        part = choose_demos(labels, 3, DemosConfig(k=k, seed=seed, labels=f"correct_{percent}"))
        assert part.indices == gold.indices and part.gold == gold.gold
        matches = sum(g == s for g, s in zip(part.gold, part.shown))
        assert matches == round(k * percent / 100)


def test_correct_p_wrong_labels_are_uniform_over_the_other_classes():
    labels = np.random.default_rng(0).permutation([0, 1, 2, 3] * 40).tolist()
    wrong = np.zeros((4, 4))
    for seed in range(300):
        demo = choose_demos(labels, 4, DemosConfig(k=16, seed=seed, labels="correct_0"))
        for g, s in zip(demo.gold, demo.shown):
            wrong[g, s] += 1
    assert np.trace(wrong) == 0
    shares = wrong[~np.eye(4, dtype=bool)].reshape(4, 3) / wrong.sum(1, keepdims=True)
    assert np.allclose(shares, 1 / 3, atol=0.04)


def test_correct_p_above_100_is_rejected_before_the_model(tmp_path):
    cfg = run_config(*SMALL, "demos.k=2", "demos.labels=correct_150", out_dir=tmp_path)
    with pytest.raises(ICLError, match="0 to 100"):
        run_cell(cfg, load_model=fail_if_loaded)


def test_random_true_dist_follows_the_pool_label_distribution_not_uniform():
    labels = np.random.default_rng(0).permutation([0] * 80 + [1] * 20).tolist()
    shown = []
    for seed in range(200):
        demo = choose_demos(labels, 2, DemosConfig(k=32, seed=seed, labels="random_true_dist"))
        gold = choose_demos(labels, 2, DemosConfig(k=32, seed=seed))
        assert demo.indices == gold.indices
        shown += demo.shown
    assert class_shares(labels, 2).tolist() == [0.8, 0.2]
    assert np.mean(np.array(shown) == 0) == pytest.approx(0.8, abs=0.02)


def test_random_true_dist_is_independent_of_the_gold_labels():
    labels = [0] * 50 + [1] * 50
    agree = [
        np.mean(np.array(d.shown) == np.array(d.gold))
        for d in (
            choose_demos(labels, 2, DemosConfig(k=16, seed=s, labels="random_true_dist"))
            for s in range(200)
        )
    ]
    assert np.mean(agree) == pytest.approx(0.5, abs=0.03)


@pytest.mark.parametrize("percent", [0, 50])
def test_correct_p_on_a_real_pool_flips_the_rest(percent):
    gold = plan("demos.k=8").demo_sets[0]
    part = plan("demos.k=8", f"demos.labels=correct_{percent}").demo_sets[0]
    assert part.gold == gold.gold
    assert part.share_correct == percent / 100


def test_ood_inputs_replace_every_input_with_a_corpus_text_of_similar_length():
    gold = plan("demos.k=8")
    ood = plan("demos.k=8", "demos.labels=ood_inputs")
    assert ood.identity.ood_corpus == "agnews"
    demo_set, gold_set = ood.demo_sets[0], gold.demo_sets[0]
    assert demo_set.indices == gold_set.indices and demo_set.shown == gold_set.gold
    corpus = {t for ex in task_pools("agnews").demos for t in ex.fields.values()}
    sst2_texts = {ex.fields["text"] for ex in task_pools("sst2").demos}
    corpus_lengths = np.array(sorted(len(t) for t in corpus))
    for fields, original in zip(demo_set.inputs, (ood.pool[i] for i in demo_set.indices)):
        text, target = fields["text"], original.fields["text"]
        assert text in corpus and text not in sst2_texts
        # no corpus text is much closer in length than the one picked
        closest = np.abs(corpus_lengths - len(target)).min()
        assert abs(len(text) - len(target)) <= closest + 5
    pairs = ood.demos[0].pairs
    words = ood.template.label_words
    assert [w for _, w in pairs] == [words[c] for c in gold_set.gold]


def test_ood_inputs_are_nested_across_k():
    small = plan("demos.k=4", "demos.labels=ood_inputs").demo_sets[0]
    large = plan("demos.k=8", "demos.labels=ood_inputs").demo_sets[0]
    assert large.inputs[:4] == small.inputs


def test_ood_corpus_can_be_chosen_and_must_differ_from_the_task(tmp_path):
    chosen = plan("demos.k=2", "demos.labels=ood_inputs", "corpus@demos.ood_task=rte")
    texts = {t for ex in task_pools("rte").demos for t in ex.fields.values()}
    assert chosen.identity.ood_corpus == "rte"
    assert all(f["text"] in texts for f in chosen.demo_sets[0].inputs)
    cfg = run_config(
        *SMALL, "demos.k=2", "demos.labels=ood_inputs", "corpus@demos.ood_task=sst2",
        out_dir=tmp_path,
    )  # fmt: skip
    with pytest.raises(ICLError, match="the task itself"):
        run_cell(cfg, load_model=fail_if_loaded)


def test_similar_length_picks_the_closest_unused_texts():
    corpus = ["a" * n for n in (1, 5, 9, 10, 30)]
    rng = np.random.default_rng(0)
    assert similar_length_texts(["x" * 10, "x" * 10, "x" * 2], corpus, rng) == [
        "a" * 10,
        "a" * 9,
        "a" * 1,
    ]


def test_random_words_replace_label_words_in_demonstrations_and_options():
    words = random_label_words(2, seed=3)
    p = plan("demos.k=6", "demos.labels=random_words", "demos.seed=3")
    assert list(p.template.label_words) == words
    assert set(words) <= set(english_words()) and len(set(words)) == 2
    gold = plan("demos.k=6", "demos.seed=3")
    assert p.demo_sets[0].indices == gold.demo_sets[0].indices
    shown = [w for _, w in p.demos[0].pairs]
    assert shown == [words[c] for c in gold.demo_sets[0].gold]
    prefix = templates.render_prefix(p.template, p.demos[0].pairs)
    for original in gold.template.label_words:
        assert f" {original}\n" not in prefix


def test_random_words_are_fixed_per_seed_and_differ_between_seeds():
    assert random_label_words(4, 1) == random_label_words(4, 1)
    assert len({tuple(random_label_words(2, s)) for s in range(20)}) == 20


def test_no_labels_shows_the_inputs_only():
    p = plan("demos.k=3", "demos.labels=no_labels")
    pairs = p.demos[0].pairs
    prefix = templates.render_prefix(p.template, pairs)
    inputs = [templates.render_input(p.template, p.pool[i].fields) for i in p.demo_sets[0].indices]
    assert prefix == "".join(text + p.template.demo_sep for text in inputs)


def test_labels_only_shows_the_label_words_only():
    p = plan("demos.k=3", "demos.labels=labels_only")
    prefix = templates.render_prefix(p.template, p.demos[0].pairs)
    words = [p.template.label_words[c] for c in p.demo_sets[0].gold]
    assert prefix == "".join(w + p.template.demo_sep for w in words)


@pytest.mark.parametrize("setting", EVERY_SETTING)
def test_every_setting_runs_a_cell_end_to_end(tmp_path, setting):
    cfg = run_config(*SMALL, "demos.k=3", f"demos.labels={setting}", out_dir=tmp_path)
    metrics = run_cell(cfg, load_model=CountingLoader())
    assert metrics["labels"] == setting and metrics["n"] == 4
    assert (metrics["ood_corpus"] == "agnews") == (setting == "ood_inputs")
    if setting == "random_words":
        assert list(metrics["option_words"].values()) == random_label_words(2, 1)


def test_label_words_override_is_scored_and_names_the_cell(tmp_path):
    cfg = run_config(*SMALL, "demos.k=2", "label_words=[dog,cat]", out_dir=tmp_path)
    metrics = run_cell(cfg, load_model=CountingLoader())
    assert metrics["label_words"] == "dog/cat"
    assert metrics["option_words"] == {"negative": "dog", "positive": "cat"}
    again = ("demos.k=2", "label_words=[cat,dog]")
    # another cell in the same folder: refused, then run with overwrite=true
    with pytest.raises(ICLError, match="label_words: 'dog/cat' there, 'cat/dog' here"):
        run_cell(run_config(*SMALL, *again, out_dir=tmp_path), load_model=fail_if_loaded)
    cfg = run_config(*SMALL, *again, "overwrite=true", out_dir=tmp_path)
    assert run_cell(cfg, load_model=CountingLoader())["label_words"] == "cat/dog"


def test_label_words_override_must_give_one_word_per_class(tmp_path):
    cfg = run_config(*SMALL, "demos.k=2", "label_words=[dog]", out_dir=tmp_path)
    with pytest.raises(ICLError, match="one word per class"):
        run_cell(cfg, load_model=fail_if_loaded)
