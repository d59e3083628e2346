"""method=finetune: the training set, what a step changes, the loss, cache isolation, bad
input, a NaN loss and the files a run writes (tiny random models; one real-model test)."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import CountingLoader, fail_if_loaded, run_config, tiny_lm

import icl.finetune.loop
from icl.errors import ICLError
from icl.finetune.inputs import encode_examples
from icl.finetune.loop import Classifier
from icl.finetune.objective import cross_entropy, pad_id
from icl.finetune.trainable import trainable_copy
from icl.lm.store import ModelStore
from icl.methods import get_method
from icl.prompts import option_tokens
from icl.runner import run_cell

# a tiny model, 4 test examples, 2 steps; the byte tokenizer needs long inputs kept whole
TINY = (
    "method=finetune",
    "model=tiny-llama",
    "task=sst2",
    "template=it_was",
    "eval.n_test=4",
    "finetune.steps=2",
    "finetune.eval_every=1",
    "finetune.max_tokens=512",
)


def finetune_plan(*overrides):
    return get_method("finetune").plan(run_config(*TINY, *overrides))


def test_training_set_is_the_balanced_k32_demonstration_set():
    ft = finetune_plan("demos.seed=3")
    icl_cell = get_method("score").plan(
        run_config("task=sst2", "demos.k=32", "demos.sampling=balanced", "demos.seed=3")
    )
    assert [ex.id for ex in ft.train] == icl_cell.demos[0].ids
    assert [ex.id for ex in ft.train] != [ex.id for ex in finetune_plan("demos.seed=4").train]
    dev_labels = [ex.label for ex in ft.dev]
    assert len(ft.dev) == 32 and dev_labels.count(0) == dev_labels.count(1) == 16
    assert not {ex.id for ex in ft.dev} & {ex.id for ex in ft.train}
    # the identity names the ICL cell's k, sampling and labels, so tables pair the two
    assert (ft.cell.identity.k, ft.cell.identity.sampling) == (32, "balanced")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("finetune.kind=lora", "valid names: head, prompt"),
        ("finetune.head=cnn", "valid names: linear, mlp"),
        ("finetune.k_per_class=100000", "lower finetune.k_per_class"),
        ("finetune.steps=0", "finetune.steps must be >= 1"),
        ("finetune.lr=0", "finetune.lr must be > 0"),
        ("finetune.lr=-1e-3", "finetune.lr must be > 0"),
        ("finetune.train_layers=3", "has 2 layers; use at most 2"),
        ("finetune.train_layers=some", "integer >= 0 or all"),
    ],
)
def test_bad_input_stops_before_any_model_loads(tmp_path, override, message):
    with pytest.raises(ICLError, match=message):
        run_cell(run_config(*TINY, override, out_dir=tmp_path), load_model=fail_if_loaded)
    assert not (tmp_path / "metrics.json").exists()


def classifier(lm, kind="prompt", layers=1, options=None):
    model = trainable_copy(lm.model, kind, layers, 0, 16.0, seed=0)
    return Classifier(model, kind, options, pad_id(lm), lm.device)


def tiny_batch(lm, plan):
    options = option_tokens(lm, plan.cell.template)
    return encode_examples(lm, plan.cell.template, plan.train[:8], options, 512), options


def test_a_step_changes_only_the_trainable_parameters():
    lm, plan = tiny_lm(), finetune_plan()
    base = {n: p.detach().clone() for n, p in lm.model.named_parameters()}
    batch, options = tiny_batch(lm, plan)
    clf = classifier(lm, layers=1, options=options)
    trainable = {n for n, p in clf.model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("model.layers.1.", "model.norm")) for n in trainable)
    optimizer = torch.optim.AdamW(clf.parameters(), lr=1e-2)
    cross_entropy(clf.scores(batch), [e.label for e in batch]).backward()
    optimizer.step()
    changed = {n for n, p in clf.model.named_parameters() if not torch.equal(p, base[n])}
    assert changed == trainable
    # the copy was trained, never the loaded model
    assert all(torch.equal(p, base[n]) for n, p in lm.model.named_parameters())


def test_a_prompt_based_step_lowers_the_training_loss_on_its_batch():
    lm, plan = tiny_lm(), finetune_plan()
    batch, options = tiny_batch(lm, plan)
    clf = classifier(lm, layers="all", options=options)
    optimizer = torch.optim.AdamW(clf.parameters(), lr=1e-3)
    labels = [e.label for e in batch]
    before = cross_entropy(clf.scores(batch), labels)
    before.backward()
    optimizer.step()
    with torch.no_grad():
        assert cross_entropy(clf.scores(batch), labels) < before


def test_multi_token_label_words_are_scored_by_their_summed_logprob():
    """The training objective reads the same numbers the scoring engines give."""
    lm, plan = tiny_lm(), finetune_plan()
    batch, options = tiny_batch(lm, plan)  # the byte tokenizer: every word is many tokens
    assert all(len(o) > 1 for o in options)
    from icl.lm import Scorer
    from icl.scoring import option_scores

    scored = Scorer(lm, "naive", 8).score([e.request for e in batch])
    expected = torch.tensor([option_scores(r.option_logprobs).sums for r in scored])
    got = classifier(lm, options=options).predict(batch)
    assert torch.allclose(got, expected, atol=1e-4)


def test_base_model_numbers_are_untouched_and_never_serve_the_finetuned_cell():
    lm = tiny_lm()
    store = ModelStore(lambda cfg: lm)
    score, finetune = get_method("score"), get_method("finetune")
    zero_shot = score.plan(run_config("model=tiny-llama", "task=sst2", "template=it_was",
                                      "eval.n_test=4", "eval.kshot_perplexity=false"))  # fmt: skip
    weights = {n: p.detach().clone() for n, p in lm.model.named_parameters()}
    before = [r.option_logprob for r in score.run(zero_shot, store).rows]
    tuned = finetune.run(finetune_plan("finetune.lr=1e-2", "finetune.train_layers=all"), store)
    after = [r.option_logprob for r in score.run(zero_shot, store).rows]
    assert after == before
    assert all(torch.equal(p, weights[n]) for n, p in lm.model.named_parameters())
    # the same prompts (no truncation) scored by the trained copy give its own numbers
    assert [r.example_id for r in tuned.rows] == [ex.id for ex in zero_shot.test]
    assert all(t.option_logprob != b for t, b in zip(tuned.rows, before))
    fingerprints = {key[0] for key in store.memo._tables}
    assert lm.fingerprint in fingerprints
    assert any(f.startswith(f"{lm.fingerprint}+finetune-") for f in fingerprints)


def test_a_nan_loss_stops_training_and_writes_no_metrics(tmp_path, monkeypatch):
    monkeypatch.setattr(icl.finetune.loop, "cross_entropy", lambda s, y: s.sum() * float("nan"))
    with pytest.raises(ICLError, match="training loss is not finite at step 1"):
        run_cell(run_config(*TINY, out_dir=tmp_path), load_model=CountingLoader())
    assert not (tmp_path / "metrics.json").exists()


@pytest.mark.parametrize("kind", ["prompt", "head"])
def test_a_tiny_run_writes_metrics_predictions_and_train_log(tmp_path, kind):
    cfg = run_config(*TINY, f"finetune.kind={kind}", out_dir=tmp_path)
    metrics = run_cell(cfg, load_model=CountingLoader())
    stored = json.loads((tmp_path / "metrics.json").read_text())
    assert stored["method"] == "finetune" and stored["finetune_kind"] == kind
    assert stored["finetune"]["steps"] == 2 and stored["finetune_steps"] == 2
    for key in ("accuracy", "macro_f1", "best_step", "wall_s", "peak_memory_mb", "train_s"):
        assert key in stored
    lines = (tmp_path / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 4 and "correct" in json.loads(lines[0])
    log = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in log] == [0, 1, 2]
    assert all(x["dev_accuracy"] is not None for x in log)
    # seeded: the same cell trains the same way
    cfg = run_config(*TINY, f"finetune.kind={kind}", out_dir=tmp_path / "again")
    again = run_cell(cfg, load_model=CountingLoader())
    assert again["accuracy"] == metrics["accuracy"]
    log_again = (tmp_path / "again" / "train_log.jsonl").read_text()
    assert log_again == (tmp_path / "train_log.jsonl").read_text()


def test_lora_trains_adapters_only(tmp_path):
    metrics = run_cell(
        run_config(*TINY, "finetune.lora_r=2", out_dir=tmp_path), load_model=CountingLoader()
    )
    assert "finetune_train_layers" not in metrics and metrics["finetune_lora_r"] == 2
    # two LoRA matrices (rank 2, width 32) on q and v of each of the 2 layers
    assert 0 < metrics["trainable_params"] < 2 * 2 * 2 * (2 * 32 * 2)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["prompt", "head"])
def test_the_contract_command_on_smollm2(tmp_path, kind):
    cfg = run_config("task=sst2", "model=smollm2-135m", "method=finetune",
                     f"finetune.kind={kind}", "template=it_was", "finetune.k_per_class=16",
                     "demos.seed=1", "eval.n_test=8", "finetune.steps=2",
                     "finetune.eval_every=2", out_dir=tmp_path)  # fmt: skip
    metrics = run_cell(cfg)
    assert metrics["n"] == 8 and metrics["n_train"] == 32 and metrics["steps_run"] == 2
    for name in ("metrics.json", "predictions.jsonl", "train_log.jsonl"):
        assert (tmp_path / name).is_file()


def test_the_study_report_places_every_row_beside_gao(tmp_path):
    from icl.studies.reports import figures, tables

    cells = {
        "zero": ("method=score", "demos.k=0", "label_words=[terrible,great]"),
        "icl": ("method=score", "demos.k=32", "demos.sampling=balanced", "demos.seed=2",
                "label_words=[dog,cat]"),
        "ft1": ("label_words=[dog,cat]", "demos.seed=1"),
        "ft2": ("label_words=[dog,cat]", "demos.seed=2"),
        "head": ("finetune.kind=head", "demos.seed=1"),
    }  # fmt: skip
    for name, overrides in cells.items():
        cfg = run_config(*TINY, "eval.kshot_perplexity=false", *overrides, out_dir=tmp_path / name)
        run_cell(cfg, load_model=CountingLoader())
    text = tables("finetune", tmp_path)
    table = (tmp_path / "finetune_vs_icl.csv").read_text().splitlines()
    header = "model,label words,zero-shot,ICL (32 demos),fine-tuned,Gao et al. (RoBERTa-large)"
    assert table[0] == header
    rows = {line.split(",")[1]: line.split(",") for line in table[1:]}
    assert list(rows) == ["great/terrible", "cat/dog", "classifier head"]
    assert rows["cat/dog"][5] == "91.5 (1.4)" and rows["classifier head"][5] == "81.4 (3.8)"
    assert rows["cat/dog"][4].endswith("[2]") and rows["cat/dog"][2] == "–"
    assert "accuracy (%)" in text
    assert [p.name for p in figures("finetune", tmp_path)] == ["finetune_vs_icl_tiny-llama.png"]


@pytest.mark.parametrize("arch", ["gemma3", "gemma2"])
@pytest.mark.parametrize("setting", ["finetune.train_layers=1", "finetune.lora_r=2"])
def test_gemma_models_train_their_top_layer_or_lora(tmp_path, arch, setting):
    cfg = run_config(*TINY, setting, f"model.tiny_arch={arch}", out_dir=tmp_path)
    metrics = run_cell(cfg, load_model=CountingLoader(arch))
    assert metrics["n"] == 4 and metrics["trainable_params"] > 0


def test_long_inputs_lose_the_end_of_their_text_and_keep_the_answer_cue():
    from icl.data import Example
    from icl.finetune.inputs import encode_example

    lm, plan = tiny_lm(), finetune_plan()
    options = option_tokens(lm, plan.cell.template)
    long = Example("x", {"text": "a fine and quiet film " * 10}, 1)
    encoded = encode_example(lm, plan.cell.template, long, options, max_tokens=40)
    assert encoded.truncated and len(encoded.tokens) <= 40
    assert lm.tokenizer.decode(encoded.request.query).endswith(" It was")
    short = encode_example(lm, plan.cell.template, Example("y", {"text": "fine"}, 1), options, 40)
    assert not short.truncated
    with pytest.raises(ICLError, match="raise finetune.max_tokens"):
        encode_example(lm, plan.cell.template, long, options, max_tokens=5)
