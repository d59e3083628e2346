"""Data pools: test texts never appear among demonstrations; test samples are nested."""

from __future__ import annotations

import csv

import pytest
from helpers import LOCAL_TASKS, task_pools
from hypothesis import given
from hypothesis import strategies as st

from icl.config import DatasetConfig, TaskConfig, TemplateConfig
from icl.data import Example, hold_out, load_pools, sample_test
from icl.errors import ICLError


@pytest.mark.parametrize("task_name", LOCAL_TASKS)
def test_no_test_text_appears_in_the_demonstration_pool(task_name):
    pools = task_pools(task_name)
    assert pools.demos and pools.test
    test_keys = {ex.key for ex in pools.test}
    assert not [ex.id for ex in pools.demos if ex.key in test_keys]
    assert len({ex.id for ex in pools.demos} | {ex.id for ex in pools.test}) == len(
        pools.demos
    ) + len(pools.test)


def test_sst2_pools_read_labels_and_text_from_each_line():
    pools = task_pools("sst2")
    assert {ex.label for ex in pools.test} == {0, 1}
    assert all(ex.fields["text"] and not ex.fields["text"][0].isdigit() for ex in pools.test[:50])
    assert all(ex.id.startswith("train-") for ex in pools.demos)
    assert all(ex.id.startswith("test-") for ex in pools.test)


def synthetic_task(
    tmp_path, splits: dict[str, list[tuple[str, str]]], demo_split: str, eval_split: str
) -> TaskConfig:
    """A two-class task over tiny made-up CSV files (text, label) under tmp_path."""
    data_files = {}
    for split, rows in splits.items():
        with open(tmp_path / f"{split}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            writer.writerows(rows)
        data_files[split] = f"{split}.csv"
    return TaskConfig(
        name="synthetic",
        dataset=DatasetConfig(path="csv", data_files=data_files),
        text_fields=["text"],
        label_values=["a", "b"],
        label_names=["a", "b"],
        demo_split=demo_split,
        eval_split=eval_split,
        eval_share=0.5,
        split_seed=3,
        templates={"t": TemplateConfig(input="{text}", label_words=["a", "b"])},
        default_template="t",
        data_dir=str(tmp_path),
    )


def test_synthetic_holdout_keeps_duplicate_texts_on_one_side(tmp_path):
    texts = [f"sentence {i % 13}" for i in range(60)]  # every text repeated, some across labels
    rows = [(t, "ab"[i % 2]) for i, t in enumerate(texts)]
    pools = load_pools(synthetic_task(tmp_path, {"train": rows}, "train", "train"))
    demo_texts = [ex.fields["text"] for ex in pools.demos]
    test_texts = [ex.fields["text"] for ex in pools.test]
    assert not set(demo_texts) & set(test_texts)
    assert sorted(demo_texts + test_texts) == sorted(set(texts))


def test_test_rows_copied_into_the_demo_split_are_removed_from_the_demo_pool(tmp_path):
    train = [(f"train text {i}", "ab"[i % 2]) for i in range(20)]
    test = [(f"test text {i}", "ab"[i % 2]) for i in range(6)]
    task = synthetic_task(tmp_path, {"train": train + test[:3], "test": test}, "train", "test")
    pools = load_pools(task)
    assert {ex.fields["text"] for ex in pools.demos} == {t for t, _ in train}
    assert len(pools.test) == len(test)


def test_unknown_label_value_is_an_error_that_names_the_setting(tmp_path):
    task = synthetic_task(tmp_path, {"train": [("x", "a"), ("y", "c")]}, "train", "train")
    with pytest.raises(ICLError, match="unknown_labels=drop"):
        load_pools(task)


def examples(n: int) -> list[Example]:
    return [Example(id=f"e{i}", fields={"text": f"t{i}"}, label=i % 2) for i in range(n)]


@given(n=st.integers(2, 200), share=st.floats(0.05, 0.95), seed=st.integers(0, 2**16))
def test_hold_out_partitions_a_split(n, share, seed):
    pool = examples(n)
    pools = hold_out(pool, share, seed)
    ids_demo, ids_test = [e.id for e in pools.demos], [e.id for e in pools.test]
    assert not set(ids_demo) & set(ids_test)
    assert sorted(ids_demo + ids_test) == sorted(e.id for e in pool)
    assert len(ids_test) == round(n * share)


@given(n_small=st.integers(1, 50), extra=st.integers(0, 50), seed=st.integers(0, 2**16))
def test_smaller_test_sample_is_a_prefix_of_a_larger_one(n_small, extra, seed):
    pool = examples(80)
    small, large = sample_test(pool, n_small, seed), sample_test(pool, n_small + extra, seed)
    assert large[: len(small)] == small
    assert len({e.id for e in large}) == len(large) == min(n_small + extra, len(pool))
