"""eval.zero_shot_perplexity and eval.kshot_perplexity: what is computed, what rows and
metrics hold when a perplexity is off, and a resume that never reports one it did not compute."""

from __future__ import annotations

import pandas as pd
import pytest
from helpers import CountingLoader, run_config

from icl import results
from icl.lm import forward
from icl.runner import run_cell
from icl.studies import tables

SMALL = ("task=sst2", "model=tiny-llama", "eval.n_test=6")


class CountingForward:
    """Counts the prefix encodings and suffix forwards a cell runs."""

    def __init__(self, monkeypatch):
        self.prefixes = self.suffixes = 0
        encode, suffix = forward.encode_prefix, forward.forward_suffix

        def count_encode(*args, **kwargs):
            self.prefixes += 1
            return encode(*args, **kwargs)

        def count_suffix(*args, **kwargs):
            self.suffixes += 1
            return suffix(*args, **kwargs)

        monkeypatch.setattr("icl.lm.engines.encode_prefix", count_encode)
        monkeypatch.setattr(forward, "forward_suffix", count_suffix)


def test_the_zero_shot_perplexity_and_the_cache_default_on_the_kshot_perplexity_off(compose):
    cfg = compose()
    assert cfg.eval.zero_shot_perplexity is True
    assert cfg.eval.kshot_perplexity is False
    assert cfg.eval.cache is True


def test_template_sweep_keeps_the_zero_shot_perplexity(compose):
    cfg = compose("+experiment=template_sweep", "task=sst2")
    assert cfg.eval.zero_shot_perplexity is True


def test_zero_shot_perplexity_off_holds_null_and_runs_no_zero_shot_pass(tmp_path, monkeypatch):
    counts = CountingForward(monkeypatch)
    off = ("demos.k=2", "eval.kshot_perplexity=false", "eval.cache=false")
    cfg = run_config(*SMALL, *off, "eval.zero_shot_perplexity=false", out_dir=tmp_path / "off")
    metrics = run_cell(cfg, load_model=CountingLoader(name="tiny-switch-off"))
    passes_off = counts.prefixes
    assert metrics["zero_shot_perplexity"] is None
    assert "kshot_perplexity" not in metrics
    for row in results.read_predictions(tmp_path / "off"):
        assert row["zero_shot_perplexity"] is None
    # on: the zero-shot prompts run as a pass of their own (one more prefix group at least)
    cfg = run_config(*SMALL, *off, out_dir=tmp_path / "on")
    counts.prefixes = 0
    metrics = run_cell(cfg, load_model=CountingLoader(name="tiny-switch-on"))
    assert metrics["zero_shot_perplexity"] > 1
    assert counts.prefixes > passes_off


def test_k0_with_both_perplexities_off_reads_only_the_options(tmp_path):
    off = ("demos.k=0", "eval.kshot_perplexity=false", "eval.zero_shot_perplexity=false")
    on = run_cell(run_config(*SMALL, "demos.k=0", out_dir=tmp_path / "on"))
    cfg = run_config(*SMALL, *off, out_dir=tmp_path / "off")
    metrics = run_cell(cfg)
    assert metrics["zero_shot_perplexity"] is None
    assert metrics["accuracy"] == on["accuracy"]
    rows_on = results.read_predictions(tmp_path / "on")
    for a, b in zip(results.read_predictions(tmp_path / "off"), rows_on):
        for name, value in a["option_logprob"].items():
            assert value == pytest.approx(b["option_logprob"][name], abs=1e-5)


def test_a_resume_that_wants_a_perplexity_reruns_a_cell_that_did_not_compute_it(tmp_path):
    loader = CountingLoader(name="tiny-resume-ppl")
    quiet = ("demos.k=2", "eval.kshot_perplexity=false")
    off = (*quiet, "eval.zero_shot_perplexity=false")
    run_cell(run_config(*SMALL, *off, out_dir=tmp_path), loader)
    # the same switch skips it; asking for the perplexity runs it again and writes it
    skipped = run_cell(run_config(*SMALL, *off, out_dir=tmp_path), loader)
    assert skipped["zero_shot_perplexity"] is None and loader.calls == 1
    again = run_cell(run_config(*SMALL, *quiet, out_dir=tmp_path), loader)
    assert again["zero_shot_perplexity"] > 1
    assert results.read_metrics(tmp_path)["zero_shot_perplexity"] == again["zero_shot_perplexity"]
    # a cell that computed it is skipped by a resume that does not ask for it
    calls = loader.calls
    run_cell(run_config(*SMALL, *off, out_dir=tmp_path), loader)
    assert loader.calls == calls


def test_template_table_copes_with_runs_without_perplexity():
    runs = pd.DataFrame(
        {
            "task": ["sst2"] * 4,
            "model": ["m"] * 4,
            "template": ["a", "b", "c", "d"],
            "accuracy": [0.5, 0.6, 0.7, 0.8],
            "macro_f1": [0.5, 0.6, 0.7, 0.8],
            "zero_shot_perplexity": [10.0, None, 30.0, 20.0],
        }
    )
    table = tables.template_table(runs)
    assert table["zero_shot_perplexity"].isna().sum() == 1
    stats = tables.perplexity_correlations(table, n_lowest=1)
    assert stats.loc[0, "n_templates"] == 3


def test_k0_with_perplexity_off_reads_no_query_position(tmp_path, monkeypatch):
    """The vocabulary head runs at the options' positions only: no query token is read."""
    from icl.lm import batching, engines

    read: list[str] = []

    def recording(requests, indices, want_query):
        rows = batching.build_rows(requests, indices, want_query)
        read.extend(key[0] for row in rows for _, _, key in row.reads)
        return rows

    monkeypatch.setattr(engines, "build_rows", recording)
    off = ("demos.k=0", "eval.kshot_perplexity=false", "eval.zero_shot_perplexity=false")
    # stores of their own: the process's memo may hold these prompts from another test
    cfg = run_config(*SMALL, *off, "eval.cache=false", out_dir=tmp_path / "off")
    run_cell(cfg, load_model=CountingLoader())
    assert read and set(read) == {"o"}
    read.clear()
    cfg = run_config(*SMALL, "demos.k=0", "eval.cache=false", out_dir=tmp_path / "on")
    run_cell(cfg, load_model=CountingLoader())
    assert "q" in read
