"""One cell end to end in-process: input errors before any model, crash safety, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import CountingLoader, fail_if_loaded, run_config, task_pools, tiny_lm

from icl import plan, results
from icl.demos import LABEL_SETTINGS
from icl.errors import ICLError
from icl.lm.engines import ENGINE_CHOICES as SCORING_ENGINES
from icl.plan import plan_cell
from icl.runner import run_cell

SMALL = ("task=sst2", "model=tiny-llama", "eval.n_test=6", "demos.k=2")
# the k-shot perplexity is off by default; the tests that compare it turn it on
KSHOT = "eval.kshot_perplexity=true"


def test_unknown_template_lists_the_valid_names(tmp_path):
    cfg = run_config(*SMALL, "template=nope", out_dir=tmp_path)
    with pytest.raises(ICLError, match="'nope'") as info:
        run_cell(cfg, load_model=fail_if_loaded)
    for name in cfg.task.templates:
        assert name in str(info.value)


def test_unknown_label_setting_lists_the_valid_settings(tmp_path):
    cfg = run_config(*SMALL, "demos.labels=shuffled", out_dir=tmp_path)
    with pytest.raises(ICLError, match="'shuffled'") as info:
        run_cell(cfg, load_model=fail_if_loaded)
    assert all(name in str(info.value) for name in LABEL_SETTINGS)


def test_unknown_scoring_engine_lists_the_valid_engines(tmp_path):
    cfg = run_config(*SMALL, "scoring.engine=turbo", out_dir=tmp_path)
    with pytest.raises(ICLError, match="'turbo'") as info:
        run_cell(cfg, load_model=fail_if_loaded)
    assert all(name in str(info.value) for name in SCORING_ENGINES)


def test_template_naming_a_field_the_task_does_not_load_fails_before_the_model(tmp_path):
    cfg = run_config(*SMALL, out_dir=tmp_path)
    cfg.task.templates["review"].input = "Review: {sentence}\nSentiment:"
    with pytest.raises(ICLError, match=r"\['sentence'\]"):
        run_cell(cfg, load_model=fail_if_loaded)


@pytest.mark.parametrize("task_name", ["sst2", "rte"])
def test_field_the_dataset_lacks_fails_before_the_model(tmp_path, task_name):
    cfg = run_config(*SMALL, f"task={task_name}", "task.text_fields=[sentence]", out_dir=tmp_path)
    template = cfg.task.templates[cfg.task.default_template]
    template.input = "{sentence}\nAnswer:"
    with pytest.raises(ICLError, match=r"\['sentence'\] that split .* lacks; its columns are"):
        run_cell(cfg, load_model=fail_if_loaded)


def test_split_without_labels_fails_before_the_model_and_names_the_setting(tmp_path):
    cfg = run_config(*SMALL, "task=cb", "task.eval_split=test", out_dir=tmp_path)
    with pytest.raises(ICLError, match="split 'test' of task 'cb' has no labels.*eval_split"):
        run_cell(cfg, load_model=fail_if_loaded)


def test_label_words_colliding_between_classes_fail_before_the_model(tmp_path):
    cfg = run_config(*SMALL, "task.templates.review.label_words=[good,Good]", out_dir=tmp_path)
    with pytest.raises(ICLError, match="collide"):
        run_cell(cfg, load_model=fail_if_loaded)


def test_k_larger_than_the_demonstration_pool_fails_before_the_model(tmp_path):
    pool_size = len(task_pools("cb").demos)
    cfg = run_config(*SMALL, "task=cb", f"demos.k={pool_size + 1}", out_dir=tmp_path)
    with pytest.raises(ICLError, match=f"larger than the demonstration pool \\({pool_size} "):
        run_cell(cfg, load_model=fail_if_loaded)


def test_balanced_k_larger_than_the_smallest_class_fails_before_the_model(tmp_path):
    counts = np.bincount([ex.label for ex in task_pools("cb").demos], minlength=3)
    k = 3 * int(counts.min()) + 1  # one more than balanced sampling can give every class
    assert k <= counts.sum()  # uniform sampling could still draw it
    cfg = run_config(*SMALL, "task=cb", f"demos.k={k}", "demos.sampling=balanced", out_dir=tmp_path)
    with pytest.raises(ICLError, match=r"needs \d+ examples of every class"):
        run_cell(cfg, load_model=fail_if_loaded)
    assert not (tmp_path / results.METRICS_FILE).exists()


def raising_loader(model_cfg):
    """A tiny model whose forward raises, as a crash in the middle of scoring would."""
    lm = tiny_lm("llama")

    def crash(module, args, kwargs):
        raise RuntimeError("injected failure in forward")

    lm.model.model.register_forward_pre_hook(crash, with_kwargs=True)
    return lm


@pytest.mark.parametrize("engine", SCORING_ENGINES)
def test_crash_during_scoring_leaves_no_metrics(tmp_path, engine):
    cfg = run_config(*SMALL, f"scoring.engine={engine}", out_dir=tmp_path)
    with pytest.raises(RuntimeError, match="injected"):
        run_cell(cfg, load_model=raising_loader)
    assert not (tmp_path / results.METRICS_FILE).exists()
    assert results.read_metrics(tmp_path) is None


def test_finished_cell_is_skipped_on_rerun_unless_overwrite(tmp_path):
    loader = CountingLoader()
    first = run_cell(run_config(*SMALL, out_dir=tmp_path), load_model=loader)
    assert loader.calls == 1
    assert run_cell(run_config(*SMALL, out_dir=tmp_path), load_model=fail_if_loaded) == first
    again = run_cell(run_config(*SMALL, "overwrite=true", out_dir=tmp_path), load_model=loader)
    assert loader.calls == 2
    assert again["accuracy"] == first["accuracy"]


def test_auto_engine_is_recorded_resolved_and_resumes_an_explicit_run(tmp_path):
    loader = CountingLoader()
    explicit = run_cell(
        run_config(*SMALL, "scoring.engine=prefix_shared", out_dir=tmp_path), loader
    )
    assert explicit["engine"] == "prefix_shared"  # what auto stands for on this CPU
    resumed = run_cell(run_config(*SMALL, "scoring.engine=auto", out_dir=tmp_path), fail_if_loaded)
    assert resumed == explicit and loader.calls == 1


def test_auto_engine_names_prefix_shared_for_a_cuda_model(monkeypatch):
    monkeypatch.setattr(plan, "resolve_device", lambda device: torch.device("cuda"))
    cfg = run_config(*SMALL, "model.device=cuda")
    assert plan.cell_identity(cfg, "score").engine == "prefix_shared"
    cfg.scoring.engine = "prefix"
    assert plan.cell_identity(cfg, "score").engine == "prefix"


@pytest.mark.parametrize("value", ["many", "0"])
def test_invalid_batch_size_fails_before_the_model(tmp_path, value):
    cfg = run_config(*SMALL, f"eval.batch_size={value}", out_dir=tmp_path)
    with pytest.raises(ICLError, match="positive integer or 'auto'"):
        run_cell(cfg, load_model=fail_if_loaded)


def test_a_different_cell_in_the_same_folder_is_refused_then_not_skipped_with_overwrite(tmp_path):
    loader = CountingLoader()
    first = run_cell(run_config(*SMALL, out_dir=tmp_path), load_model=loader)
    kept = (tmp_path / results.PREDICTIONS_FILE).read_bytes()
    with pytest.raises(ICLError, match=r"another cell \(k: 2 there, 1 here\).*overwrite=true"):
        run_cell(run_config(*SMALL, "demos.k=1", out_dir=tmp_path), load_model=fail_if_loaded)
    assert (tmp_path / results.PREDICTIONS_FILE).read_bytes() == kept  # the first cell's files
    assert results.read_metrics(tmp_path) == json.loads(json.dumps(first))
    other = run_cell(
        run_config(*SMALL, "demos.k=1", "overwrite=true", out_dir=tmp_path), load_model=loader
    )
    assert loader.calls == 2
    assert other["k"] == 1 == json.loads((tmp_path / results.METRICS_FILE).read_text())["k"]


def test_metrics_agree_with_the_prediction_rows(tmp_path):
    cfg = run_config(*SMALL, "demos.labels=permuted", out_dir=tmp_path)
    metrics = run_cell(cfg, load_model=CountingLoader())
    rows = results.read_predictions(tmp_path)
    assert len(rows) == metrics["n"] == 6
    names = list(cfg.task.label_names)
    words = cfg.task.templates["review"].label_words
    for row in rows:
        assert row["prediction"] == max(row["option_logprob"], key=row["option_logprob"].get)
        assert row["correct"] == (row["prediction"] == row["gold"])
        for name in names:
            assert row["option_logprob"][name] == pytest.approx(
                sum(row["option_token_logprobs"][name])
            )
        assert all(s != g for s, g in zip(row["demo_label_words"], row["demo_gold_words"]))
        assert set(row["demo_label_words"]) <= set(words)
    assert metrics["accuracy"] == pytest.approx(np.mean([r["correct"] for r in rows]))
    assert metrics["share_demo_labels_correct"] == 0.0
    assert metrics["label_mapping"] == {"negative": "positive", "positive": "negative"}


def test_engines_give_the_same_predictions_end_to_end(tmp_path):
    by_engine = {}
    for engine in SCORING_ENGINES:
        cfg = run_config(*SMALL, KSHOT, f"scoring.engine={engine}", out_dir=tmp_path / engine)
        run_cell(cfg, load_model=CountingLoader("gemma3"))
        by_engine[engine] = results.read_predictions(tmp_path / engine)
    for engine, rows in by_engine.items():
        for a, b in zip(rows, by_engine["naive"]):
            assert a["prediction"] == b["prediction"], engine
            for name, value in a["option_logprob"].items():
                assert value == pytest.approx(b["option_logprob"][name], abs=1e-4), engine
            assert a["kshot_perplexity"] == pytest.approx(b["kshot_perplexity"], rel=1e-4)


def test_zero_shot_perplexity_equals_kshot_perplexity_at_k0(tmp_path):
    loader = CountingLoader(name="tiny-k0-consistency")
    run_cell(run_config(*SMALL, KSHOT, "demos.k=0", out_dir=tmp_path), load_model=loader)
    for row in results.read_predictions(tmp_path):
        assert row["zero_shot_perplexity"] == pytest.approx(row["kshot_perplexity"], rel=1e-4)


def test_zero_shot_perplexity_is_the_same_from_a_k0_pass_and_from_its_own_pass(tmp_path):
    # at k=0 it comes from the scoring pass; with demonstrations, from a separate zero-shot pass
    loader = CountingLoader(name="tiny-zero-shot-paths")
    run_cell(run_config(*SMALL, "demos.k=0", out_dir=tmp_path / "k0"), load_model=loader)
    run_cell(run_config(*SMALL, "demos.k=2", out_dir=tmp_path / "k2"), load_model=loader)
    k0 = {r["example_id"]: r for r in results.read_predictions(tmp_path / "k0")}
    for row in results.read_predictions(tmp_path / "k2"):
        expected = k0[row["example_id"]]["zero_shot_perplexity"]
        assert row["zero_shot_perplexity"] == pytest.approx(expected, rel=1e-4)


def test_zero_shot_perplexity_belongs_to_the_model_that_ran(tmp_path):
    for seed in (0, 1):
        loader = CountingLoader(seed=seed, name="tiny-same-name")
        cfg = run_config(
            *SMALL, KSHOT, "demos.k=0", f"model.tiny_seed={seed}", out_dir=tmp_path / str(seed)
        )
        run_cell(cfg, load_model=loader)
        for row in results.read_predictions(tmp_path / str(seed)):
            assert row["zero_shot_perplexity"] == pytest.approx(row["kshot_perplexity"], rel=1e-4)


def test_prompts_that_do_not_fit_drop_the_earliest_demonstrations(tmp_path):
    lm = tiny_lm("llama", max_length=300)
    cfg = run_config(*SMALL, "demos.k=8", out_dir=tmp_path)
    metrics = run_cell(cfg, load_model=lambda _: lm)
    rows = results.read_predictions(tmp_path)
    assert metrics["mean_demos_dropped"] > 0
    longest_option = max(len(lm.encode(" " + w)) for w in cfg.task.templates["review"].label_words)
    plan = plan_cell(cfg)
    for row, demo_set in zip(rows, plan.demo_sets):
        assert row["prompt_tokens"] + longest_option <= lm.max_length
        kept = [plan.pool[i].id for i in demo_set.indices][row["n_demos_dropped"] :]
        assert row["demo_ids"] == kept


def test_query_longer_than_the_context_is_an_error(tmp_path):
    lm = tiny_lm("llama", max_length=12)
    with pytest.raises(ICLError, match="context of 12"):
        run_cell(run_config(*SMALL, out_dir=tmp_path), load_model=lambda _: lm)


def test_metrics_name_the_prompt_layout_even_at_its_defaults(tmp_path):
    metrics = run_cell(
        run_config(*SMALL, out_dir=tmp_path), load_model=CountingLoader(name="tiny-layout")
    )
    assert metrics["prompt"] == {"format": "plain", "selection": "random", "order": "pool"}
    assert "selection" not in metrics  # the identity still leaves its defaults out
    stored = results.read_metrics(tmp_path)
    assert stored["prompt"] == metrics["prompt"]
