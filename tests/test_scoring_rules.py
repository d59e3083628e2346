"""Scoring rules beyond direct: each against a hand computation on a tiny random-weight model,
config checks before any model, per-rule metrics, rescoring after the fact, the study's CLI."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import CountingLoader, fail_if_loaded, run_config, tiny_lm
from test_cli import ok, run_script

from icl import collect, results, templates
from icl.errors import ICLError
from icl.methods.rescore import rescore_cell
from icl.plan import plan_cell
from icl.rows import PredictionRow
from icl.rule_passes import pass_requests
from icl.runner import run_cell
from icl.scoring import (
    SCORING_RULES,
    OptionScores,
    calibrate,
    content_free_probs,
    normalise,
    predict,
    rule_scores,
)
from icl.studies import reports, tables

SMALL = (
    "task=sst2",
    "model=tiny-llama",
    "eval.n_test=3",
    "demos.k=2",
    "eval.kshot_perplexity=false",
)
ALL_RULES = "scoring.rules=[direct_mean,channel,calibrated,pmi]"
CHEAP_RULES = "scoring.rules=[direct_mean,calibrated,pmi]"


# --- the rule math ---------------------------------------------------------------------------


def test_normalise_is_a_softmax_over_the_options():
    p = normalise([np.log(0.2), np.log(0.6)])
    assert p == pytest.approx([0.25, 0.75])
    assert normalise([-1000.0, -1001.0]).sum() == pytest.approx(1.0)  # no underflow


def test_calibration_divides_by_the_content_free_probabilities():
    p_cf = content_free_probs([[np.log(0.7), np.log(0.3)], [np.log(0.9), np.log(0.1)]])
    assert p_cf == pytest.approx([0.8, 0.2])
    # the model says 0.6 / 0.4, but it says 0.8 / 0.2 with no input at all: the second class wins
    q = calibrate([np.log(0.6), np.log(0.4)], p_cf)
    assert q == pytest.approx(np.array([0.6 / 0.8, 0.4 / 0.2]) / (0.6 / 0.8 + 0.4 / 0.2))
    scores = OptionScores(sums=[np.log(0.6), np.log(0.4)], means=[0.0, 0.0])
    assert predict(scores, "direct") == 0
    assert predict(scores, "calibrated", {"content_free": p_cf.tolist()}) == 1


def test_each_rule_reads_its_own_numbers():
    scores = OptionScores(sums=[-3.0, -4.0], means=[-3.0, -1.0])
    assert predict(scores, "direct") == 0
    assert predict(scores, "direct_mean") == 1
    assert predict(scores, "pmi", {"premise": [-1.0, -3.5]}) == 1  # -2.0 < -0.5
    assert predict(scores, "channel", {"channel": [-20.0, -10.0]}) == 1
    assert predict(OptionScores([-1.0, -1.0], [-1.0, -1.0])) == 0  # ties go to the lower class
    with pytest.raises(ValueError, match="content_free"):
        rule_scores(scores, "calibrated")
    with pytest.raises(ICLError, match="'nope'") as info:
        predict(scores, "nope")
    assert all(rule in str(info.value) for rule in SCORING_RULES)


# --- templates in channel order and the domain premise ----------------------------------------


@pytest.mark.parametrize(
    ("input_format", "premise", "demo"),
    [
        ("Review: {text}\nSentiment:", "Sentiment:", "Sentiment: positive\nReview: a b"),
        ("{text} It was", "It was", "It was positive a b"),
        ("{text}", "", "positive\na b"),
        (
            "{premise}\nQuestion: {hypothesis} Yes or No?\nAnswer:",
            "Yes or No?\nAnswer:",
            "Yes or No?\nAnswer: positive P {x}\nQuestion: H",  # the break: what opened the tail
        ),
    ],
)
def test_channel_demo_puts_the_answer_prefix_and_word_before_the_input(input_format, premise, demo):
    template = SimpleNamespace(input=input_format, answer_sep=" ", instruction="", demo_sep="\n\n")
    fields = {"text": "a b", "premise": "P {x}", "hypothesis": "H"}
    assert templates.answer_prefix(template) == premise
    assert templates.render_channel_demo(template, fields, "positive") == demo
    label = templates.render_channel_label(template, "positive")
    assert label + templates.render_channel_input(template, fields) == demo


def test_channel_demo_leaves_out_a_missing_part_like_the_direct_one():
    template = SimpleNamespace(
        input="Review: {text}\nSentiment:", answer_sep=" ", instruction="", demo_sep="\n\n"
    )
    assert templates.render_channel_demo(template, None, "positive") == "positive"  # labels_only
    assert templates.render_channel_demo(template, {"text": "a b"}, None) == "Review: a b"


@pytest.mark.parametrize("labels", ["no_labels", "labels_only", "random_words"])
def test_every_rule_runs_under_the_demonstration_variants(tmp_path, labels):
    cfg = run_config(*SMALL, ALL_RULES, f"demos.labels={labels}", out_dir=tmp_path)
    metrics = run_cell(cfg, load_model=CountingLoader())
    assert set(metrics["rules"]) == set(SCORING_RULES)


# --- each rule against a hand computation ----------------------------------------------------


def continuation_logprobs(lm, context: str, continuation: str) -> list[float]:
    """log P(each continuation token | BOS + context), from one plain forward of the model."""
    head, tail = lm.bos + lm.encode(context), lm.encode(continuation)
    with torch.no_grad():
        logits = lm.model(input_ids=torch.tensor([head + tail])).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    return [logprobs[len(head) + j - 1, token].item() for j, token in enumerate(tail)]


def by_hand(lm, demos: list[tuple[str, str]], text: str) -> dict:
    """Every rule's numbers for one SST-2 example under the review template, written out."""
    words = ["negative", "positive"]
    prefix = "".join(f"Review: {t}\nSentiment: {w}\n\n" for t, w in demos)
    option = [
        continuation_logprobs(lm, f"{prefix}Review: {text}\nSentiment:", f" {w}") for w in words
    ]
    sums = [sum(lp) for lp in option]
    content_free = [
        normalise([sum(continuation_logprobs(lm, f"{prefix}Review: {cf}\nSentiment:", f" {w}"))
                   for w in words])
        for cf in ("N/A", "", "[MASK]")
    ]  # fmt: skip
    p_cf = np.mean(content_free, axis=0)
    premise = [sum(continuation_logprobs(lm, f"{prefix}Sentiment:", f" {w}")) for w in words]
    channel_prefix = "".join(f"Sentiment: {w}\nReview: {t}\n\n" for t, w in demos)
    channel = [
        # the scored input is the field itself (a BPE tokenizer would attach the space to it)
        sum(continuation_logprobs(lm, f"{channel_prefix}Sentiment: {w}\nReview: ", text))
        for w in words
    ]
    return {
        "sums": sums,
        "means": [float(np.mean(lp)) for lp in option],
        "p_cf": p_cf,
        "premise": premise,
        "channel": channel,
        "direct": np.array(sums),
        "direct_mean": np.array([np.mean(lp) for lp in option]),
        "calibrated": normalise(sums) / p_cf,
        "pmi": np.array(sums) - np.array(premise),
    }


@pytest.fixture(scope="module")
def all_rules_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("all_rules")
    cfg = run_config(*SMALL, ALL_RULES, out_dir=out)
    lm = tiny_lm("llama")
    metrics = run_cell(cfg, load_model=lambda _: lm)
    return cfg, lm, metrics, results.read_predictions(out)


def test_every_rule_matches_a_hand_computation(all_rules_run):
    cfg, lm, _, rows = all_rules_run
    plan = plan_cell(cfg)
    names, words = list(cfg.task.label_names), ["negative", "positive"]
    for row, example, demo_set in zip(rows, plan.test, plan.demo_sets):
        assert row["example_id"] == example.id and row["n_demos_dropped"] == 0
        shown = zip(demo_set.indices, demo_set.shown)
        demos = [(plan.pool[i].fields["text"], words[c]) for i, c in shown]
        want = by_hand(lm, demos, example.fields["text"])
        got = {key: [row[key][n] for n in names] for key in (
            "option_logprob", "option_logprob_mean", "content_free_probs", "premise_logprob",
            "channel_logprob")}  # fmt: skip
        assert got["option_logprob"] == pytest.approx(want["sums"], abs=1e-4)
        assert got["option_logprob_mean"] == pytest.approx(want["means"], abs=1e-4)
        assert got["content_free_probs"] == pytest.approx(want["p_cf"], abs=1e-5)
        assert got["premise_logprob"] == pytest.approx(want["premise"], abs=1e-4)
        assert got["channel_logprob"] == pytest.approx(want["channel"], abs=1e-3)
        for rule in SCORING_RULES:
            scores = np.sort(want[rule])
            if scores[-1] - scores[-2] > 1e-3 * max(1.0, abs(scores[-1])):  # not a near-tie
                assert row["predictions_by_rule"][rule] == names[int(np.argmax(want[rule]))], rule


def test_metrics_report_every_requested_rule_and_p_cf(all_rules_run):
    cfg, _, metrics, rows = all_rules_run
    assert list(metrics["rules"]) == ["direct", "direct_mean", "channel", "calibrated", "pmi"]
    assert metrics["extra_rules"] == ["direct_mean", "channel", "calibrated", "pmi"]
    for rule, scored in metrics["rules"].items():
        correct = [r["predictions_by_rule"][rule] == r["gold"] for r in rows]
        assert scored["accuracy"] == pytest.approx(np.mean(correct))
        assert sum(scored["prediction_counts"].values()) == metrics["n"] == 3
    assert metrics["accuracy"] == metrics["rules"]["direct"]["accuracy"]
    assert sum(metrics["p_cf"].values()) == pytest.approx(1.0)
    # one demonstration set for the cell: every example has the same p_cf
    assert all(r["content_free_probs"] == pytest.approx(metrics["p_cf"]) for r in rows)
    assert json.loads((results.Path(cfg.out_dir) / results.METRICS_FILE).read_text()) == metrics


def test_the_primary_rule_makes_the_prediction(tmp_path):
    cfg = run_config(*SMALL, "scoring.rule=pmi", out_dir=tmp_path)
    metrics = run_cell(cfg, load_model=CountingLoader())
    rows = results.read_predictions(tmp_path)
    assert list(metrics["rules"]) == ["pmi"] and "p_cf" not in metrics
    assert all(r["prediction"] == r["predictions_by_rule"]["pmi"] for r in rows)
    assert all("channel_logprob" not in r and "content_free_probs" not in r for r in rows)


# --- config checks before any model ----------------------------------------------------------


@pytest.mark.parametrize("override", ["scoring.rule=noisy", "scoring.rules=[direct,noisy]"])
def test_unknown_rule_fails_before_the_model_and_lists_the_rules(tmp_path, override):
    cfg = run_config(*SMALL, override, out_dir=tmp_path)
    with pytest.raises(ICLError, match="'noisy'") as info:
        run_cell(cfg, load_model=fail_if_loaded)
    assert all(rule in str(info.value) for rule in SCORING_RULES)


def bare_template_config(*overrides: str, out_dir=None):
    """A config whose template is only the input field: no answer prefix."""
    cfg = run_config(*SMALL, *overrides, out_dir=out_dir)
    cfg.task.templates["review"].input = "{text}"
    return cfg


def test_pmi_without_an_answer_prefix_needs_a_domain_premise(tmp_path):
    cfg = bare_template_config("scoring.rules=[pmi]", out_dir=tmp_path)
    with pytest.raises(ICLError, match="scoring.domain_premise"):
        run_cell(cfg, load_model=fail_if_loaded)
    plan_cell(bare_template_config("scoring.rules=[pmi]", "scoring.domain_premise=Sentiment:"))


def test_content_free_input_that_renders_an_empty_query_is_rejected(tmp_path):
    cfg = bare_template_config("scoring.rules=[calibrated]", out_dir=tmp_path)
    with pytest.raises(ICLError, match="empty query"):
        run_cell(cfg, load_model=fail_if_loaded)


def test_extra_prompts_drop_demonstrations_to_fit_the_context():
    lm = tiny_lm("llama", max_length=300)
    plan = plan_cell(run_config(*SMALL, "demos.k=8", ALL_RULES))
    options = ((1,), (2,))
    for need in ("content_free", "premise", "channel"):
        for requests in pass_requests(lm, plan, [0] * len(plan.test), options, need):
            for r in requests:
                assert len(r.prefix) + len(r.query) + max(map(len, r.options)) <= lm.max_length


# --- after the fact --------------------------------------------------------------------------


def test_rescoring_a_finished_run_equals_computing_the_rules_in_the_run(tmp_path):
    loader = CountingLoader()
    together = run_cell(run_config(*SMALL, CHEAP_RULES, out_dir=tmp_path / "a"), load_model=loader)
    run_cell(run_config(*SMALL, out_dir=tmp_path / "b"), load_model=loader)
    before = results.read_predictions(tmp_path / "b")
    later = rescore_cell(tmp_path / "b", ["direct_mean", "calibrated", "pmi"], load_model=loader)
    assert loader.calls == 3
    assert later["rules"] == together["rules"] and later["p_cf"] == together["p_cf"]
    assert later["rules_added_after"] == ["calibrated", "direct_mean", "pmi"]
    assert results.read_metrics(tmp_path / "b") == later
    rows_a, rows_b = (results.read_predictions(tmp_path / d) for d in "ab")
    for a, b, old in zip(rows_a, rows_b, before):
        assert a["predictions_by_rule"] == b["predictions_by_rule"]
        assert a["content_free_probs"] == pytest.approx(b["content_free_probs"])
        assert b["option_logprob"] == old["option_logprob"]  # the test examples kept their scores
    # direct_mean needs no extra pass: no model loads
    rescore_cell(tmp_path / "b", ["direct_mean"], load_model=fail_if_loaded)
    with pytest.raises(ICLError, match="channel"):
        rescore_cell(tmp_path / "b", ["channel"], load_model=fail_if_loaded)


def test_runs_from_before_the_rules_resume_and_rescore(tmp_path):
    cfg = run_config(*SMALL, out_dir=tmp_path)
    run_cell(cfg, load_model=CountingLoader())
    metrics = results.read_metrics(tmp_path)
    rows = results.read_predictions(tmp_path)
    for key in ("method", "extra_rules", "content_free", "domain_premise", "rules"):
        del metrics[key]
    for row in rows:
        del row["predictions_by_rule"]
    results.write_metrics(tmp_path, metrics)
    results.write_predictions(tmp_path, [PredictionRow.from_json(row) for row in rows])
    assert "predictions_by_rule" not in results.read_predictions(tmp_path)[0]
    assert run_cell(cfg, load_model=fail_if_loaded) == metrics  # still a finished cell
    later = rescore_cell(tmp_path, ["pmi"], load_model=CountingLoader())
    assert list(later["rules"]) == ["direct", "pmi"]
    assert later["rules"]["direct"]["accuracy"] == metrics["accuracy"]


# --- the collected table and the figure ------------------------------------------------------


def test_collected_rules_give_a_table_per_rule_and_a_figure(tmp_path):
    loader = CountingLoader()
    for k in (0, 1):
        for seed in (1, 2):
            cfg = run_config(
                *SMALL, CHEAP_RULES, f"demos.k={k}", f"demos.seed={seed}",
                out_dir=tmp_path / f"k{k}-s{seed}",
            )  # fmt: skip
            run_cell(cfg, load_model=loader)
    runs = reports.summary(tmp_path)
    seeds = pd.read_csv(tmp_path / "summary_seeds.csv")
    assert len(runs) == 4 and len(seeds) == 2
    assert {"calibrated_accuracy_mean", "p_cf_positive_mean"} <= set(seeds.columns)
    by_rule = pd.read_csv(tmp_path / "summary_rules.csv")
    assert len(by_rule) == 2 * 4  # (k) x (rule)
    long = collect.rule_runs(runs)
    for _, row in long.iterrows():
        run = runs[runs["run_dir"] == row["run_dir"]].iloc[0]
        assert row["accuracy"] == run[f"{row['scored_rule']}_accuracy"]
    table = tables.rule_table(by_rule)
    assert list(table.columns) == ["direct", "direct_mean", "calibrated", "pmi"]
    assert list(table.index.get_level_values("k")) == [0, 1]
    balance = tables.balance_table(by_rule)
    assert list(balance.columns) == [
        "direct predictions (negative / positive)",
        "calibrated predictions (negative / positive)",
        "p_cf (negative / positive)",
    ]
    text = reports.tables("rules", tmp_path)
    assert "accuracy per scoring rule" in text and "p_cf (negative / positive)" in text
    assert (tmp_path / "rules_accuracy.md").exists() and (tmp_path / "rules_balance.csv").exists()
    (figure,) = reports.figures("rules", tmp_path)
    assert figure.name == "accuracy_vs_k_by_rule.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_quick_study_end_to_end_through_the_cli_on_smollm2(tmp_path):
    sweep = tmp_path / "sweep"
    # icl-study runs the quick sweep and writes the rules report (tables and figure)
    args = ("scoring_rules", "--quick", "--dir", str(sweep), "eval.n_test=6", "eval.progress=false")
    ok(run_script("icl-study", *args, cwd=tmp_path))
    assert (sweep / "rules_accuracy.md").exists() and (sweep / "rules_balance.md").exists()
    cells = [json.loads(p.read_text()) for p in sweep.rglob(results.METRICS_FILE)]
    assert sorted((m["k"], m["seed"]) for m in cells) == [
        (k, s) for k in (0, 1, 4, 8) for s in (1, 2)
    ]
    for metrics in cells:
        assert metrics["model"] == "smollm2-135m" and metrics["n"] == 6
        assert set(metrics["rules"]) == set(SCORING_RULES) and set(metrics["p_cf"]) == {
            "negative",
            "positive",
        }
    collected = ok(
        run_script("icl-collect", str(sweep), "--report", "rules", "--rescore", "direct_mean",
                   cwd=tmp_path)
    )  # fmt: skip
    assert "accuracy per scoring rule" in collected.stdout
    assert "before and after calibration" in collected.stdout
    assert len(pd.read_csv(sweep / "summary_rules.csv")) == 4 * len(SCORING_RULES)
    ok(run_script("icl-plot", str(sweep), "--report", "rules", cwd=tmp_path))
    assert (sweep / "accuracy_vs_k_by_rule.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
