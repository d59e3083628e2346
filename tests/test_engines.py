"""Scoring exactness on tiny random-weight models: hand computation, engines, prefix reuse."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers import tiny_lm

from icl.errors import ICLError
from icl.lm import ScoreMemo, batching, engines, forward
from icl.lm.batching import (
    CPU_BATCH_SIZE,
    MAX_AUTO_BATCH_SIZE,
    auto_batch_size,
    check_batch_size,
    fit_batch_size,
)
from icl.lm.engines import ENGINES, resolve_engine, score_requests, shared_query_start
from icl.lm.requests import ScoreRequest

TOL = 1e-4
FAST_ENGINES = [e for e in ENGINES if e != "naive"]  # each is held to the naive reference
PREFIX_TEXTS = [
    "",  # BOS only
    "Review: fine\nSentiment: positive\n\n",  # longer than the gemma3 sliding window (8)
    "ab",
]
QUERY_TEXTS = ["Review: dull and long\nSentiment:", "x", "Review: a film that never ends\nS:"]
OPTION_TEXTS = [" positive", " negative", "y", " ok"]  # 9, 9, 1 and 3 byte tokens


@pytest.fixture(scope="module", params=["llama", "gemma3"])
def lm(request):
    return tiny_lm(request.param)


def score(lm, requests, engine, batch_size=4, want_query=True):
    """Scores computed afresh: no memo is passed."""
    return score_requests(lm, requests, engine, batch_size, want_query)


def requests_for(lm, with_empty_prefix: bool = True) -> list[ScoreRequest]:
    """Requests over several shared prefixes (BOS, short, long), queries and option lengths."""
    options = tuple(tuple(lm.encode(t)) for t in OPTION_TEXTS)
    prefixes = [tuple(lm.bos + lm.encode(t)) for t in PREFIX_TEXTS]
    if with_empty_prefix:
        prefixes.append(())
    return [
        ScoreRequest(prefix, tuple(lm.encode(q)), options)
        for prefix in prefixes
        for q in QUERY_TEXTS
    ]


@torch.inference_mode()
def hand_logprobs(lm, tokens: tuple[int, ...]) -> list[float]:
    """log p(token t | tokens before t) for t >= 1, from the model's plain forward."""
    logits = lm.model(input_ids=torch.tensor([tokens])).logits[0].float()
    logprobs = logits.log_softmax(-1)
    return [logprobs[t - 1, tokens[t]].item() for t in range(1, len(tokens))]


def assert_same_scores(a, b, tol=TOL):
    assert (a.prefix_count, a.query_count) == (b.prefix_count, b.query_count)
    assert a.prefix_nll == pytest.approx(b.prefix_nll, abs=tol)
    assert a.query_nll == pytest.approx(b.query_nll, abs=tol)
    assert len(a.option_logprobs) == len(b.option_logprobs)
    for x, y in zip(a.option_logprobs, b.option_logprobs):
        assert x == pytest.approx(y, abs=tol)


def test_byte_tokenizer_gives_single_and_multi_token_options(lm):
    assert len(lm.encode("y")) == 1
    assert len(lm.encode(" positive")) == 9
    assert lm.bos == [lm.tokenizer.bos_token_id]


@pytest.fixture(scope="module")
def hand(lm):
    """Three requests (BOS-only, long and short prefix) and each option's hand log-probs."""
    requests = requests_for(lm, with_empty_prefix=False)[::4]
    expected = [
        [hand_logprobs(lm, req.prefix + req.query + option) for option in req.options]
        for req in requests
    ]
    return requests, expected


@pytest.mark.parametrize("engine", ENGINES)
def test_option_score_equals_a_hand_computation(lm, hand, engine):
    requests, expected = hand
    assert {len(o) for o in requests[0].options} >= {1, 9}  # single- and multi-token options
    for req, res, per_option in zip(requests, score(lm, requests, engine), expected):
        start = len(req.prefix) + len(req.query) - 1
        for option, logprobs, full in zip(req.options, res.option_logprobs, per_option):
            assert len(logprobs) == len(option)
            assert logprobs == pytest.approx(full[start:], abs=TOL)
            assert sum(logprobs) == pytest.approx(sum(full[start:]), abs=TOL)


@pytest.mark.parametrize("engine", ENGINES)
def test_prompt_nlls_equal_a_hand_computation(lm, hand, engine):
    requests, expected = hand
    for req, res, per_option in zip(requests, score(lm, requests, engine), expected):
        p, q = len(req.prefix), len(req.query)
        lp = per_option[0][: p + q - 1]  # the prompt's tokens come before any option token
        assert (res.prefix_count, res.query_count) == (p - 1, q)
        assert res.prefix_nll == pytest.approx(-sum(lp[: p - 1]), abs=TOL)
        assert res.query_nll == pytest.approx(-sum(lp[p - 1 :]), abs=TOL)


@pytest.mark.parametrize("engine", FAST_ENGINES)
def test_engine_agrees_with_naive_including_empty_prefixes(lm, engine):
    requests = requests_for(lm)
    assert any(not req.prefix for req in requests)
    for a, b in zip(score(lm, requests, engine), score(lm, requests, "naive")):
        assert_same_scores(a, b)


@pytest.mark.parametrize("engine", FAST_ENGINES)
def test_engine_agrees_with_naive_on_options_without_prompt_nlls(lm, engine):
    requests = requests_for(lm)
    fast = score(lm, requests, engine, want_query=False)
    slow = score(lm, requests, "naive", want_query=False)
    for a, b in zip(fast, slow):
        assert a.query_count == b.query_count == 0
        for x, y in zip(a.option_logprobs, b.option_logprobs):
            assert x == pytest.approx(y, abs=TOL)


@pytest.mark.parametrize("engine", FAST_ENGINES)
@pytest.mark.parametrize("arch", ["gemma3", "gemma2"])  # gemma2: soft-capped attention scores
def test_engine_agrees_with_naive_far_past_the_sliding_window(engine, arch):
    lm = tiny_lm(arch)
    window = lm.model.config.sliding_window
    assert window == 8
    prefix = tuple(lm.bos + lm.encode("Review: " + "long demonstration text " * 6 + "\n\n"))
    assert len(prefix) > 10 * window
    options = (tuple(lm.encode(" yes")), tuple(lm.encode(" no")))
    queries = ("Q:", "Query: a much longer query than the window\nA:")
    requests = [ScoreRequest(prefix, tuple(lm.encode(q)), options) for q in queries]
    for a, b in zip(score(lm, requests, engine, 2), score(lm, requests, "naive", 2)):
        assert_same_scores(a, b)


SHARED_START_QUERIES = [
    "Review: dull\nSentiment:",
    "Review: a film that never ends\nSentiment:",
    "Review: ok\nSentiment:",
]


def test_shared_query_start_leaves_every_query_its_last_token():
    assert shared_query_start([(1, 2, 3), (1, 2, 4)]) == 2
    assert shared_query_start([(1, 2), (1, 2, 3)]) == 1
    assert shared_query_start([(5,), (5,)]) == 0
    assert shared_query_start([(1, 2, 3)]) == 2
    assert shared_query_start([(1, 2), (3, 2)]) == 0


@pytest.mark.parametrize("engine", FAST_ENGINES)
@pytest.mark.parametrize("prefix_text", [None, "", "Review: fine\nSentiment: positive\n\n"])
def test_queries_sharing_their_start_score_like_naive(lm, engine, prefix_text):
    """The shared start moves into the prefix; prefix and query NLLs still split as before."""
    prefix = () if prefix_text is None else tuple(lm.bos + lm.encode(prefix_text))
    options = tuple(tuple(lm.encode(t)) for t in OPTION_TEXTS)
    requests = [ScoreRequest(prefix, tuple(lm.encode(q)), options) for q in SHARED_START_QUERIES]
    assert shared_query_start([r.query for r in requests]) == len("Review: ")
    for a, b in zip(score(lm, requests, engine), score(lm, requests, "naive")):
        assert_same_scores(a, b)


@pytest.mark.parametrize("engine", FAST_ENGINES)
def test_the_shared_query_start_runs_once_not_in_every_row(lm, engine, monkeypatch):
    widths = []
    real = forward.forward_suffix

    def recording(base, ids, positions, cache, prefix_len, attention):
        widths.append((ids.shape[1], prefix_len, int(positions[0, 0])))
        return real(base, ids, positions, cache, prefix_len, attention)

    monkeypatch.setattr(forward, "forward_suffix", recording)
    prefix = tuple(lm.bos)
    queries = [tuple(lm.encode(q)) for q in SHARED_START_QUERIES]
    requests = [ScoreRequest(prefix, q, ((1,), (2,))) for q in queries]
    score(lm, requests, engine, batch_size=8, want_query=False)
    shared = len("Review: ")
    assert widths == [(max(len(q) for q in queries) - shared, 1 + shared, 1 + shared)]


def test_soft_capping_changes_the_tiny_gemma2_scores():
    """The tiny gemma2's cap bites, so agreeing with naive there tests the capped path."""
    lm = tiny_lm("gemma2")
    assert lm.model.config.attn_logit_softcapping is not None
    request = requests_for(lm, with_empty_prefix=False)[4]
    capped = score(lm, [request], "prefix_shared")[0]
    for layer in lm.model.model.layers:
        layer.self_attn.attn_logit_softcapping = None
    uncapped = score(lm, [request], "prefix_shared")[0]
    pairs = zip(capped.option_logprobs[0], uncapped.option_logprobs[0])
    assert max(abs(a - b) for a, b in pairs) > 1e-2


def flatten(results) -> list[float]:
    out = []
    for r in results:
        out += [r.prefix_nll, r.query_nll, r.prefix_count, r.query_count]
        out += [v for option in r.option_logprobs for v in option]
    return out


@pytest.mark.parametrize("engine", FAST_ENGINES)
def test_scoring_twice_on_one_model_gives_the_same_numbers(lm, engine):
    requests = requests_for(lm)
    first = score(lm, requests, engine, 3)
    second = score(lm, requests, engine, 3)  # the prefix caches of the first call are gone
    assert flatten(second) == pytest.approx(flatten(first), abs=1e-6)


@pytest.mark.parametrize("engine", FAST_ENGINES)
def test_batch_size_does_not_change_the_numbers(lm, engine):
    requests = requests_for(lm)
    reference = flatten(score(lm, requests, "naive", 16))
    for batch_size in (1, 3, 16):
        numbers = flatten(score(lm, requests, engine, batch_size))
        assert numbers == pytest.approx(reference, abs=TOL), batch_size


@pytest.mark.parametrize("engine", FAST_ENGINES)
def test_a_request_scores_the_same_alone_as_among_others(lm, engine):
    requests = requests_for(lm)
    together = score(lm, requests, engine, 16)
    for i in (0, len(requests) // 2, len(requests) - 1):
        alone = score(lm, [requests[i]], engine, 16)
        assert flatten(alone) == pytest.approx(flatten([together[i]]), abs=1e-5)
    reordered = score(lm, requests[::-1], engine, 3)
    assert flatten(reordered[::-1]) == pytest.approx(flatten(together), abs=1e-5)


def test_results_handed_out_do_not_share_state_with_later_calls(lm):
    requests = requests_for(lm)[:2]
    memo = ScoreMemo()
    first = score_requests(lm, requests, "prefix", memo=memo)
    expected = flatten(first)
    first[0].option_logprobs[0][0] = 123.0
    first[0].query_nll = -1.0
    assert flatten(score_requests(lm, requests, "prefix", memo=memo)) == expected


def test_the_memo_computes_a_request_once_per_model_fingerprint(lm, monkeypatch):
    requests = requests_for(lm)[:3]
    computed = []
    real = engines.compute

    def counting(lm_, todo, *args):
        computed.append((lm_.fingerprint, len(todo)))
        return real(lm_, todo, *args)

    monkeypatch.setattr(engines, "compute", counting)
    memo = ScoreMemo()
    first = score_requests(lm, requests, "prefix", memo=memo)
    assert flatten(score_requests(lm, requests[::-1], "prefix", memo=memo)[::-1]) == flatten(first)
    assert computed == [(lm.fingerprint, 3)]  # the second call was served from the memo
    # another model (other weights: another fingerprint) never reads this model's scores
    other = tiny_lm(lm.name.removeprefix("tiny-"), seed=1, name="other")
    other = dataclasses.replace(other, fingerprint="other-weights")
    theirs = score_requests(other, requests, "prefix", memo=memo)
    assert computed[-1] == ("other-weights", 3)
    assert flatten(theirs) != pytest.approx(flatten(first), abs=1e-3)
    assert len(memo) == 6
    memo.clear()
    score_requests(lm, requests, "prefix", memo=memo)
    assert computed[-1] == (lm.fingerprint, 3)


def test_without_a_memo_every_call_computes(lm, monkeypatch):
    calls = []
    real = engines.compute
    monkeypatch.setattr(engines, "compute", lambda *a: calls.append(1) or real(*a))
    requests = requests_for(lm)[:2]
    score_requests(lm, requests, "prefix")
    score_requests(lm, requests, "prefix")
    assert len(calls) == 2


def test_a_request_with_an_empty_query_is_refused(lm):
    with pytest.raises(ValueError, match="non-empty query"):
        score(lm, [ScoreRequest(tuple(lm.bos), (), ((5,),))], "prefix")


def test_unknown_engine_lists_the_valid_engines(lm):
    request = ScoreRequest(tuple(lm.bos), (5, 6), ((7,),))
    with pytest.raises(ICLError, match="'turbo'") as info:
        score(lm, [request], "turbo")
    for engine in ENGINES:
        assert engine in str(info.value)


def test_auto_engine_is_prefix_shared_where_fused_kernels_exist_and_prefix_elsewhere():
    assert resolve_engine("auto", torch.device("cuda")) == "prefix_shared"
    assert resolve_engine("auto", "cuda:1") == "prefix_shared"
    assert resolve_engine("auto", torch.device("cpu")) == "prefix_shared"
    assert resolve_engine("auto", "mps") == "prefix"
    for engine in ENGINES:
        assert resolve_engine(engine, "cuda") == engine


def test_auto_engine_and_batch_size_score_like_the_engine_they_stand_for(lm):
    requests = requests_for(lm)
    assert auto_batch_size(lm.model, [], None, 0, lm.device, "copy") == CPU_BATCH_SIZE
    automatic = score(lm, requests, "auto", batch_size="auto")
    assert flatten(automatic) == flatten(score(lm, requests, "prefix_shared", CPU_BATCH_SIZE))


@pytest.mark.parametrize("value", [0, -2, "big", True, 2.5, None])
def test_invalid_batch_size_is_refused_with_what_is_accepted(value):
    with pytest.raises(ICLError, match="positive integer or 'auto'"):
        check_batch_size(value)


def test_batch_size_fitting_free_memory_keeps_a_margin_and_a_cap():
    mib = 2**20
    assert fit_batch_size(100 * mib, 1 * mib) == 80
    assert fit_batch_size(10 * mib, 64 * mib) == 1
    assert fit_batch_size(2**40, 1 * mib) == MAX_AUTO_BATCH_SIZE


def test_auto_batch_size_on_cuda_divides_free_memory_by_a_probe_rows_peak(monkeypatch):
    """The CUDA branch with the device mocked: 4 MiB peak over a 2-row probe, 1 GiB free."""
    mib = 2**20
    allocated = {"now": 100 * mib, "peak": 100 * mib}
    probed = []

    def fake_run_batch(model, batch, *args):
        probed.append([len(r.tokens) for r in batch])
        allocated["peak"] = allocated["now"] + 4 * mib

    fake = {
        "synchronize": lambda device=None: None,
        "reset_peak_memory_stats": lambda device=None: None,
        "memory_allocated": lambda device=None: allocated["now"],
        "max_memory_allocated": lambda device=None: allocated["peak"],
        "memory_reserved": lambda device=None: allocated["now"] + 24 * mib,
        "mem_get_info": lambda device=None: (1000 * mib, 80_000 * mib),
    }
    for name, function in fake.items():
        monkeypatch.setattr(torch.cuda, name, function)
    monkeypatch.setattr(batching, "run_batch", fake_run_batch)
    rows = [batching.Row((1,) * n, [(0, 1, ("o", 0, 0, 0))]) for n in (5, 3, 9)]
    rows.append(batching.Row((1,) * 20))  # a row nothing is read from is never run
    size = auto_batch_size(None, rows, None, 10, torch.device("cuda"), "shared")
    assert probed == [[3, 5, 9]]  # the widest rows, at most PROBE_ROWS of them
    assert size == int((1000 + 24) * mib * batching.MEMORY_SHARE // (4 * mib / 3))


def oom_above(limit: int, sizes: list[int]):
    """A forward_suffix that runs out of memory on batches of more than ``limit`` rows."""
    real = forward.forward_suffix

    def limited(base, ids, *args):
        sizes.append(ids.shape[0])
        if ids.shape[0] > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(base, ids, *args)

    return limited


@pytest.mark.parametrize("engine", FAST_ENGINES)
def test_out_of_memory_halves_an_auto_batch_and_keeps_the_numbers(lm, engine, monkeypatch):
    requests = requests_for(lm)
    expected = flatten(score(lm, requests, engine, 4))
    sizes: list[int] = []
    monkeypatch.setattr(forward, "forward_suffix", oom_above(3, sizes))
    assert flatten(score(lm, requests, engine, "auto")) == pytest.approx(expected, abs=1e-5)
    # the first batch (up to 16 rows) fails, 16 halves to 8, 4 and 2, which is then kept
    assert sizes[0] > 3 and sizes[1:4] == [8, 4, 2] and max(sizes[4:]) <= 2


def test_out_of_memory_with_a_fixed_batch_size_is_raised(lm, monkeypatch):
    monkeypatch.setattr(forward, "forward_suffix", oom_above(3, []))
    with pytest.raises(torch.cuda.OutOfMemoryError):
        score(lm, requests_for(lm), "prefix", 8)
