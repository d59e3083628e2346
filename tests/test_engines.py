"""Scoring exactness on tiny random-weight models: hand computation, engines, prefix reuse."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers import tiny_lm

from icl.errors import ICLError
from icl.lm.engines import ENGINES, ScoreRequest, score_requests

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


def fresh(lm):
    """The same model with nothing scored yet, so every call really computes."""
    names = {f.name for f in dataclasses.fields(lm)}
    return dataclasses.replace(lm, **({"memo": {}} if "memo" in names else {}))


def score(lm, requests, engine, batch_size=4, want_query=True):
    return score_requests(fresh(lm), requests, engine, batch_size, want_query)


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
    memoising = fresh(lm)
    first = score_requests(memoising, requests, "prefix")
    expected = flatten(first)
    first[0].option_logprobs[0][0] = 123.0
    first[0].query_nll = -1.0
    assert flatten(score_requests(memoising, requests, "prefix")) == expected


def test_a_request_with_an_empty_query_is_refused(lm):
    with pytest.raises(ValueError, match="non-empty query"):
        score(lm, [ScoreRequest(tuple(lm.bos), (), ((5,),))], "prefix")


def test_unknown_engine_lists_the_valid_engines(lm):
    request = ScoreRequest(tuple(lm.bos), (5, 6), ((7,),))
    with pytest.raises(ICLError, match="'turbo'") as info:
        score(lm, [request], "turbo")
    for engine in ENGINES:
        assert engine in str(info.value)
