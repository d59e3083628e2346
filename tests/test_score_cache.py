"""The cross-process score cache: hits, misses, what never hits, concurrent writers, a damaged
file, and eval.cache=false."""

from __future__ import annotations

import logging
import multiprocessing
import sqlite3

import pytest
from helpers import CountingLoader, run_config, tiny_lm

from icl import results
from icl.lm import score_cache
from icl.lm.requests import ScoreRequest, ScoreResult
from icl.lm.score_cache import ScoreCache
from icl.runner import run_cell

K0 = ("task=sst2", "model=tiny-llama", "eval.n_test=6", "demos.k=0")
N = 6


def run(tmp_path, name: str, *overrides: str, seed: int = 0) -> dict:
    """One cell in a store of its own, as a separate process would run it (no shared memo)."""
    cfg = run_config(*K0, *overrides, out_dir=tmp_path / name)
    return run_cell(cfg, load_model=CountingLoader(seed=seed, name="tiny-cached"))


def test_a_second_process_reads_k0_scores_from_the_cache(tmp_path):
    first = run(tmp_path, "a")
    assert (first["examples_scored"], first["examples_from_cache"]) == (N, 0)
    assert first["examples_per_s"] > 0
    second = run(tmp_path, "b")
    assert (second["examples_scored"], second["examples_from_cache"]) == (0, N)
    assert second["examples_per_s"] is None  # nothing computed: no rate to report
    assert results.read_predictions(tmp_path / "a") == results.read_predictions(tmp_path / "b")


def test_zero_shot_perplexities_come_from_the_cache_at_k_above_0(tmp_path):
    k2 = ("demos.k=2", "eval.kshot_perplexity=false")
    first = run(tmp_path, "a", *k2)
    second = run(tmp_path, "b", *k2)
    assert (first["zero_shot_computed"], first["zero_shot_from_cache"]) == (N, 0)
    assert (second["zero_shot_computed"], second["zero_shot_from_cache"]) == (0, N)
    # the k-shot prompts depend on the demonstrations: always computed
    assert second["examples_scored"] == N
    assert second["zero_shot_perplexity"] == first["zero_shot_perplexity"]


def test_another_model_never_hits(tmp_path):
    run(tmp_path, "a")
    other = run(tmp_path, "b", "model.tiny_seed=1", seed=1)
    assert other["examples_from_cache"] == 0


def test_another_template_never_hits(tmp_path):
    run(tmp_path, "a")
    cfg = run_config(*K0)
    other = next(name for name in cfg.task.templates if name != cfg.task.default_template)
    assert run(tmp_path, "b", f"template={other}")["examples_from_cache"] == 0


def test_another_engine_or_query_reading_never_hits(tmp_path):
    run(tmp_path, "a")
    assert run(tmp_path, "b", "scoring.engine=naive")["examples_from_cache"] == 0
    off = ("eval.kshot_perplexity=false", "eval.zero_shot_perplexity=false")
    assert run(tmp_path, "c", *off)["examples_from_cache"] == 0


def test_cache_false_bypasses_the_cache(tmp_path):
    run(tmp_path, "a", "eval.cache=false")
    assert not score_cache.cache_path().exists() or len(score_cache.process_cache()) == 0
    run(tmp_path, "b")
    assert run(tmp_path, "c", "eval.cache=false")["examples_from_cache"] == 0


def test_the_weights_fingerprint_follows_the_weights():
    same = tiny_lm(seed=0).weights_fingerprint
    assert same == tiny_lm(seed=0, name="renamed").weights_fingerprint
    assert same != tiny_lm(seed=1).weights_fingerprint
    assert same != tiny_lm("gemma3", seed=0).weights_fingerprint


def request(i: int) -> ScoreRequest:
    return ScoreRequest((0, 5), (7, i % 200, i // 200), ((3,), (4, 9)))


def result(i: int) -> ScoreResult:
    return ScoreResult([[-0.5 - i], [-1.0, -2.0 - i]], 1.5, 1, 2.5 + i, 3)


def write_entries(path: str, start: int, stop: int) -> None:
    """A writer process: one transaction per ten entries."""
    cache = ScoreCache(path)
    for lo in range(start, stop, 10):
        cache.put("m", "e", True, {request(i): result(i) for i in range(lo, min(lo + 10, stop))})
    cache.close()


def test_two_writer_processes_at_once_lose_nothing(tmp_path):
    path = tmp_path / "scores.sqlite"
    ctx = multiprocessing.get_context("fork")
    # overlapping ranges: both write 200..299, the first writer of each entry wins
    writers = [
        ctx.Process(target=write_entries, args=(str(path), a, b)) for a, b in ((0, 300), (200, 500))
    ]
    for w in writers:
        w.start()
    for w in writers:
        w.join(timeout=120)
        assert w.exitcode == 0
    cache = ScoreCache(path)
    found = cache.get("m", "e", True, [request(i) for i in range(500)])
    assert len(found) == 500 == len(cache)
    assert all(found[request(i)] == result(i) for i in range(500))


def test_a_damaged_cache_file_is_set_aside_and_rebuilt(tmp_path, caplog):
    path = tmp_path / "scores.sqlite"
    path.write_bytes(b"not a database, " * 512)
    cache = ScoreCache(path)
    with caplog.at_level(logging.WARNING, logger="icl.lm.score_cache"):
        assert cache.get("m", "e", True, [request(1)]) == {}
    assert "unreadable" in caplog.text and "rebuilding" in caplog.text
    assert list(tmp_path.glob("scores.sqlite.corrupt-*"))
    cache.put("m", "e", True, {request(1): result(1)})
    assert ScoreCache(path).get("m", "e", True, [request(1)]) == {request(1): result(1)}


def test_a_damaged_file_under_a_run_costs_a_warning_not_the_run(tmp_path, caplog):
    run(tmp_path, "a")
    score_cache.process_cache().close()
    score_cache.cache_path().write_bytes(b"\0garbage" * 1024)
    with caplog.at_level(logging.WARNING, logger="icl.lm.score_cache"):
        again = run(tmp_path, "b")
    assert again["examples_scored"] == N and "rebuilding" in caplog.text


@pytest.mark.parametrize("key", ["model", "engine"])
def test_entries_are_keyed_by_model_and_engine(tmp_path, key):
    cache = ScoreCache(tmp_path / "scores.sqlite")
    cache.put("m", "e", True, {request(1): result(1)})
    model, engine = ("other", "e") if key == "model" else ("m", "other")
    assert cache.get(model, engine, True, [request(1)]) == {}
    assert cache.get("m", "e", False, [request(1)]) == {}


def test_a_locked_cache_turns_itself_off_and_keeps_the_file(tmp_path, monkeypatch, caplog):
    path = tmp_path / "scores.sqlite"
    ScoreCache(path).put("m", "e", True, {request(1): result(1)})
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
    monkeypatch.setattr(score_cache, "BUSY_TIMEOUT_S", 0.1)
    cache = ScoreCache(path)
    with caplog.at_level(logging.WARNING, logger="icl.lm.score_cache"):
        cache.put("m", "e", True, {request(2): result(2)})
    assert cache.disabled and "scoring without it" in caplog.text
    holder.execute("ROLLBACK")
    holder.close()
    assert not list(tmp_path.glob("*.corrupt-*"))
    assert ScoreCache(path).get("m", "e", True, [request(1)]) == {request(1): result(1)}
