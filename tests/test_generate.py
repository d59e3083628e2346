"""method=generate on the tiny model: the files it writes, answers mapped to label words,
seeded sampling, speculative decoding end to end, a stub model of known label-token mass, and
bad decoding settings stopped before any model loads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import CountingLoader, fail_if_loaded, run_config, tiny_lm

from icl import results
from icl.answers import answer_text, match_class
from icl.errors import ICLError
from icl.lm import decoding
from icl.lm.tiny import tiny_model_and_tokenizer
from icl.runner import run_cell

SMALL = ("task=sst2", "model=tiny-llama", "eval.n_test=4", "demos.k=2", "method=generate")


def generate_cell(tmp_path, *overrides, loader=None):
    cfg = run_config(*SMALL, *overrides, out_dir=tmp_path)
    metrics = run_cell(cfg, load_model=loader or CountingLoader())
    return metrics, results.read_predictions(tmp_path)


def test_answers_end_at_a_newline_and_map_to_label_words():
    assert answer_text(" positive\n\nReview:", "\n\n") == " positive"
    assert answer_text(" good ||| bad", " ||| ") == " good"
    words = ["negative", "positive"]
    assert match_class(" Positive.", words) == 1
    assert match_class(" positively", words) is None
    assert match_class(" positively", words, "prefix") == 1
    assert match_class("", words, "prefix") is None
    with pytest.raises(ICLError, match="unknown decoding.match 'fuzzy'"):
        match_class("x", words, "fuzzy")


def test_a_generation_cell_writes_its_answers_and_both_accuracies(tmp_path):
    metrics, rows = generate_cell(tmp_path)
    assert metrics["method"] == "generate" and metrics["decoding"] == "greedy"
    for key in ("format_valid_rate", "accuracy", "scoring_accuracy", "tokens_per_s", "macro_f1"):
        assert key in metrics
    assert set(metrics["prediction_share"]) == {"negative", "positive", "invalid"}
    assert sum(metrics["prediction_share"].values()) == pytest.approx(1.0)
    assert "temperature" not in metrics  # greedy: the sampling settings play no part
    for row in rows:
        (answer,) = row["generations"]
        assert 1 <= len(answer["tokens"]) <= 5 and answer["valid"] == (answer["class"] is not None)
        assert len(row["demo_ids"]) == 2 and row["scoring_prediction"] in ("negative", "positive")
    # the random-weight model writes no label words: every answer is invalid and counts wrong
    assert metrics["format_valid_rate"] == 0 and metrics["accuracy"] == 0


def test_a_scoring_cell_in_the_folder_is_not_taken_for_a_generation_cell(tmp_path):
    run_cell(run_config(*SMALL[:-1], out_dir=tmp_path), load_model=CountingLoader())
    with pytest.raises(ICLError, match="method: 'score' there, 'generate' here"):
        run_cell(run_config(*SMALL, out_dir=tmp_path), load_model=fail_if_loaded)
    loader = CountingLoader()
    metrics, _ = generate_cell(tmp_path, "overwrite=true", loader=loader)
    assert metrics["method"] == "generate" and loader.calls == 1
    assert run_cell(run_config(*SMALL, out_dir=tmp_path), load_model=fail_if_loaded) == metrics


def test_sampling_is_seeded_per_answer(tmp_path):
    sample = ("decoding.strategy=sample", "decoding.samples=3", "decoding.temperature=1.5")
    _, first = generate_cell(tmp_path / "a", *sample)
    _, again = generate_cell(tmp_path / "b", *sample)
    _, other = generate_cell(tmp_path / "c", *sample, "decoding.seed=1")
    tokens = [[g["tokens"] for g in r["generations"]] for r in first]
    assert tokens == [[g["tokens"] for g in r["generations"]] for r in again]
    assert tokens != [[g["tokens"] for g in r["generations"]] for r in other]
    assert all(len(set(map(tuple, answers))) > 1 for answers in tokens[:2])  # samples differ


@pytest.mark.parametrize("mode", ["prompt_lookup", "draft"])
def test_greedy_speculative_cells_write_the_plain_greedy_answers(tmp_path, mode):
    _, plain = generate_cell(tmp_path / "plain")
    extra = ["+model@decoding.draft=tiny-llama", "decoding.draft.tiny_seed=1"]
    overrides = [f"decoding.speculative={mode}", *(extra if mode == "draft" else [])]
    metrics, fast = generate_cell(tmp_path / mode, *overrides)
    assert [r["generations"] for r in fast] == [r["generations"] for r in plain]
    assert metrics["speculative"] == mode and "acceptance_rate" in metrics
    assert metrics.get("draft_model") == ("tiny-llama" if mode == "draft" else None)


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
@pytest.mark.parametrize(
    "decoder", [(), ("decoding.strategy=sample", "decoding.samples=3", "decoding.temperature=1.5")]
)
def test_answers_written_side_by_side_equal_answers_written_alone(
    tmp_path, monkeypatch, arch, decoder
):
    """Rows of other lengths, pad slots and the tiny Gemma-3's 8-token sliding window (the
    prompts are far longer) must not change a single answer; nor must rows leaving."""
    from icl.methods.generate import Decoder

    # a random-weight model seldom writes a newline: end answers at a token divisible by 3
    monkeypatch.setattr(Decoder, "stop", lambda self, tokens: tokens[-1] % 3 == 0)
    cell = ("eval.n_test=7", "demos.k=3", "decoding.max_new_tokens=6", *decoder)
    answers = {}
    for size in (1, 3, 16):
        _, rows = generate_cell(
            tmp_path / str(size), *cell, f"decoding.batch_size={size}", loader=CountingLoader(arch)
        )
        answers[size] = [[g["tokens"] for g in r["generations"]] for r in rows]
    assert answers[3] == answers[1] and answers[16] == answers[1]
    if decoder:  # sampled answers end at different steps: rows leave the batch midway
        assert len({len(tokens) for example in answers[1] for tokens in example}) > 1


def test_a_draft_model_of_another_tokenizer_is_refused_before_any_model_loads(tmp_path):
    model, tokenizer = tiny_model_and_tokenizer()
    tokenizer.add_tokens(["Review"])  # splits the prompts otherwise
    model.save_pretrained(tmp_path / "draft")
    tokenizer.save_pretrained(tmp_path / "draft")
    cfg = run_config(
        *SMALL, "decoding.speculative=draft", "+model@decoding.draft=folder",
        f"decoding.draft.path={tmp_path / 'draft'}", out_dir=tmp_path / "run",
    )  # fmt: skip
    assert cfg.decoding.draft.name == str(tmp_path / "draft")  # its own path, not the target's
    with pytest.raises(ICLError, match="does not share .* tokenizer"):
        run_cell(cfg, load_model=fail_if_loaded)


def test_a_draft_model_of_another_tokenizer_is_refused(tmp_path):
    def loader(model_cfg):
        lm = tiny_lm()
        if model_cfg.tiny_seed == 1:  # the draft: a tokenizer that splits text otherwise
            lm.tokenizer.add_tokens(["Review"])
        return lm

    cfg = run_config(
        *SMALL, "decoding.speculative=draft", "+model@decoding.draft=tiny-llama",
        "decoding.draft.tiny_seed=1", out_dir=tmp_path,
    )  # fmt: skip
    with pytest.raises(ICLError, match="does not share .* tokenizer"):
        run_cell(cfg, load_model=loader)


def test_the_valid_rate_matches_a_stub_model_of_known_label_mass(tmp_path, monkeypatch):
    """Every step's distribution is fixed: 0.6 of its mass on the two label words' tokens."""
    lm = tiny_lm()
    a, b, x = (lm.encode(ch)[0] for ch in "abx")
    fixed = torch.full((lm.model.config.vocab_size,), -1e9)
    fixed[[a, b, x]] = torch.tensor([0.35, 0.25, 0.4]).log()

    def stub_logits(model, hidden):
        return fixed.expand(*hidden.shape[:-1], -1)

    monkeypatch.setattr(decoding, "logits_from_hidden", stub_logits)
    metrics, rows = generate_cell(
        tmp_path, "label_words=[a,b]", "eval.n_test=40", "decoding.strategy=sample",
        "decoding.samples=5", "decoding.max_new_tokens=1", loader=lambda cfg: lm,
    )  # fmt: skip
    drawn = 40 * 5
    sd = np.sqrt(0.6 * 0.4 / drawn)
    assert abs(metrics["format_valid_rate"] - 0.6) < 4 * sd
    assert abs(metrics["prediction_share"]["negative"] - 0.35) < 4 * np.sqrt(0.35 * 0.65 / drawn)
    assert "vote_accuracy" in metrics
    assert all(len(r["generations"]) == 5 for r in rows)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("decoding.strategy=beam", "unknown decoding strategy 'beam'; valid names: greedy, sample"),
        ("decoding.speculative=magic", "valid names: draft, none, prompt_lookup"),
        ("decoding.top_p=1.5", r"top_p must be in \(0, 1\]"),
        ("decoding.top_k=-1", "top_k must be >= 1"),
        ("decoding.temperature=-0.5", "temperature must be > 0"),
        ("decoding.max_new_tokens=0", "max_new_tokens must be >= 1"),
        ("decoding.speculative=draft", r"needs a draft model .*\+model@decoding.draft=NAME"),
        ("decoding.samples=3", "needs decoding.strategy=sample"),
        ("decoding.match=fuzzy", "unknown decoding.match 'fuzzy'"),
        ("decoding.batch_size=0", "batch_size must be a positive integer or auto"),
    ],
)
def test_bad_decoding_settings_stop_before_any_model_loads(tmp_path, override, message):
    cfg = run_config(*SMALL, override, out_dir=tmp_path)
    with pytest.raises(ICLError, match=message):
        run_cell(cfg, load_model=fail_if_loaded)
    assert not (tmp_path / "metrics.json").exists()


def test_generation_rows_read_back(tmp_path):
    from icl.methods.generate_rows import GenerationRow

    _, rows = generate_cell(tmp_path)
    typed = [GenerationRow.from_json(r) for r in rows]
    assert [json.loads(json.dumps(t.to_json())) for t in typed] == rows
