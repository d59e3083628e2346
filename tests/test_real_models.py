"""Real models from the installed model packages (slow: each loads a model on first use)."""

from __future__ import annotations

import pytest
import torch
from helpers import run_config, task_pools

from icl import templates
from icl.lm import ENGINES, ScoreRequest, score_requests
from icl.lm.loading import tokenizer_adds_bos
from icl.lm.store import PROCESS_MODELS
from icl.plan import plan_cell
from icl.prompts import build_prompt, option_tokens
from icl.results import read_predictions
from icl.runner import run_cell

pytestmark = pytest.mark.slow


def test_smollm2_beats_the_majority_class_on_sst2(tmp_path):
    cfg = run_config(
        "model=smollm2-135m", "task=sst2", "demos.k=4", "eval.n_test=40", out_dir=tmp_path
    )
    metrics = run_cell(cfg)
    assert metrics["n"] == 40
    assert metrics["accuracy"] > metrics["majority_baseline"], metrics


@pytest.mark.parametrize(("model", "adds_bos"), [("smollm2-135m", False), ("gemma3-270m", True)])
def test_tokenizer_bos_detection(model, adds_bos):
    lm = PROCESS_MODELS.get(run_config(f"model={model}").model)
    assert tokenizer_adds_bos(lm.tokenizer) is adds_bos
    assert lm.adds_bos is adds_bos
    assert lm.bos == ([lm.tokenizer.bos_token_id] if adds_bos else [])
    with_special = lm.tokenizer("a review").input_ids
    assert (with_special[0] == lm.tokenizer.bos_token_id) is adds_bos
    assert lm.bos + lm.encode("a review") == with_special


@pytest.mark.parametrize("model", ["gemma3-270m", "smollm2-135m"])  # gemma is loaded already
def test_engines_agree_on_a_real_model_with_a_long_prefix(model):
    lm = PROCESS_MODELS.get(run_config(f"model={model}").model)
    task = run_config("task=sst2").task
    template = task.templates["review"]
    pools = task_pools("sst2")
    # past the sliding window (Gemma: 512), so its local layers see only part of the prefix
    min_length = (getattr(lm.model.config, "sliding_window", None) or 256) + 32
    shown, prefix = [], tuple(lm.bos)
    for ex in pools.demos:
        if len(prefix) > min_length:
            break
        shown.append((ex.fields, template.label_words[ex.label]))
        prefix = tuple(lm.bos + lm.encode(templates.render_prefix(template, shown)))
    options = tuple(
        tuple(lm.encode(templates.render_answer(template, w))) for w in template.label_words
    )
    requests = [
        ScoreRequest(prefix, tuple(lm.encode(templates.render_input(template, ex.fields))), options)
        for ex in pools.test[:2]
    ]
    by_engine = {  # naive runs one full-vocabulary sequence at a time to bound memory
        engine: score_requests(lm, requests, engine, 1 if engine == "naive" else 4)
        for engine in ENGINES
    }
    for engine, results in by_engine.items():
        for a, b in zip(results, by_engine["naive"]):
            assert a.prefix_nll == pytest.approx(b.prefix_nll, rel=1e-3), engine
            assert a.query_nll == pytest.approx(b.query_nll, rel=1e-3), engine
            for x, y in zip(a.option_logprobs, b.option_logprobs):
                assert x == pytest.approx(y, abs=2e-3), engine


@pytest.mark.parametrize("model", ["smollm2-135m", "gemma3-270m"])
def test_prompt_tokens_are_those_of_the_whole_prompt_string(model, tmp_path):
    # encoding demonstrations and query apart would tokenize the seam unnaturally
    cfg = run_config(f"model={model}", "task=sst2", "demos.k=4", "eval.n_test=5", out_dir=tmp_path)
    lm = PROCESS_MODELS.get(cfg.model)
    plan = plan_cell(cfg)
    options = option_tokens(lm, plan.template)
    words = plan.template.label_words
    for demo_set, demos, example in zip(plan.demo_sets, plan.demos, plan.test):
        prompt = build_prompt(lm, plan.template, demos.pairs, example.fields, options)
        shown = [(plan.pool[i].fields, words[c]) for i, c in zip(demo_set.indices, demo_set.shown)]
        text = templates.render_prompt(plan.template, shown, example.fields)
        assert list(prompt.request.prefix + prompt.request.query) == lm.bos + lm.encode(text)
        assert len(prompt.request.prefix) > len(lm.bos)


@pytest.mark.slow
def test_generation_on_smollm2_matches_transformers_greedy_and_speculative_agrees(tmp_path):
    """Plain greedy answers equal transformers' generate; prompt lookup and a draft model (the
    same SmolLM2: the only model of its tokenizer that installs offline) give the same tokens."""
    base = ("model=smollm2-135m", "task=sst2", "demos.k=4", "eval.n_test=3", "method=generate")
    answers = {}
    for mode in ("none", "prompt_lookup", "draft"):
        extra = ["+model@decoding.draft=smollm2-135m"] if mode == "draft" else []
        cfg = run_config(*base, f"decoding.speculative={mode}", *extra, out_dir=tmp_path / mode)
        metrics = run_cell(cfg)
        rows = read_predictions(tmp_path / mode)
        answers[mode] = [r["generations"][0]["tokens"] for r in rows]
        assert metrics["format_valid_rate"] == 1.0  # k=4 SST-2: the model answers a label word
    assert answers["prompt_lookup"] == answers["none"] == answers["draft"]
    lm = PROCESS_MODELS.get(cfg.model)
    plan = plan_cell(cfg)
    options = option_tokens(lm, plan.template)
    for demos, example, tokens in zip(plan.demos, plan.test, answers["none"]):
        request = build_prompt(lm, plan.template, demos.pairs, example.fields, options).request
        ids = torch.tensor([list(request.prefix + request.query)])
        out = lm.model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
            max_new_tokens=len(tokens), pad_token_id=lm.tokenizer.eos_token_id,
        )  # fmt: skip
        assert out[0, ids.shape[1] :].tolist() == tokens
