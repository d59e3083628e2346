"""Warpers against hand computations, and exact sampling: plain, warped and speculative samples
from tiny random-weight models with an 8-token vocabulary, against the enumerated distribution;
plain samples are drawn in batches beside rows of another length (padding must not leak), and
transformers' own sampling and assisted generation are held to the same distribution."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest
import torch
from scipy.stats import chisquare
from transformers import LlamaConfig, LlamaForCausalLM

from icl.errors import ICLError
from icl.lm.decoding import (
    BatchRows,
    ModelDrafter,
    PromptLookupDrafter,
    Stream,
    generate_batch,
    speculative_generate,
)
from icl.lm.forward import encode_prefix, logits_from_hidden
from icl.lm.sampling import Sampler, warp

VOCAB, NEW = 8, 2
PREFIX, CONTEXT = (0, 3, 1, 4), [1, 5, 3, 1]
# rows of another length decode beside CONTEXT's in a batch: padding must not reach them
NEIGHBOUR = [6, 2, 7, 1, 5, 0, 3]
DRAWS = 1200
BATCH = 40


def tiny(seed: int, layers: int = 2) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=layers,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # sharper than the default init, so the samplers' cuts bite
        model.lm_head.weight.mul_(8.0)
    # no token ends an answer: transformers' generate must draw NEW tokens as ours do
    model.generation_config.eos_token_id = model.generation_config.bos_token_id = None
    return model


TARGET, DRAFT = tiny(0), tiny(1, layers=1)


# --- warpers -------------------------------------------------------------------------------


def test_top_k_keeps_exactly_the_k_largest():
    logits = torch.tensor([0.3, 2.0, -1.0, 1.5, 0.9])
    kept = torch.isfinite(warp(logits, 1.0, 2, 1.0))
    assert kept.tolist() == [False, True, False, True, False]


def test_top_p_keeps_the_smallest_set_whose_mass_reaches_p():
    probs = torch.tensor([0.05, 0.5, 0.1, 0.3, 0.05])
    logits = probs.log()
    for p, want in [(0.5, {1}), (0.51, {1, 3}), (0.79, {1, 3}), (0.81, {1, 3, 2}), (1.0, set())]:
        kept = set(torch.nonzero(torch.isfinite(warp(logits, 1.0, 0, p))).flatten().tolist())
        assert kept == (want or set(range(5))), p
    renormalised = warp(logits, 1.0, 0, 0.79).softmax(-1)
    assert renormalised[[1, 3]].tolist() == pytest.approx([0.5 / 0.8, 0.3 / 0.8])


def test_temperature_divides_the_logits_and_its_limit_is_greedy():
    logits = torch.tensor([1.0, 3.0, 2.0])
    assert warp(logits, 2.0, 0, 1.0).tolist() == pytest.approx([0.5, 1.5, 1.0])
    cold = Sampler("sample", temperature=1e-3).probs(logits)
    assert cold.tolist() == pytest.approx(Sampler("greedy").probs(logits).tolist(), abs=1e-6)


@pytest.mark.parametrize(
    ("sampler", "message"),
    [
        (Sampler("beam"), "unknown decoding strategy 'beam'"),
        (Sampler("sample", temperature=0.0), "temperature must be > 0"),
        (Sampler("sample", top_k=-1), "top_k must be >= 1"),
        (Sampler("sample", top_p=0.0), r"top_p must be in \(0, 1\]"),
        (Sampler("sample", top_p=1.5), r"top_p must be in \(0, 1\]"),
    ],
)
def test_bad_sampler_settings_name_the_fix(sampler, message):
    with pytest.raises(ICLError, match=message):
        sampler.check()


# --- exactness -----------------------------------------------------------------------------


@torch.inference_mode()
def exact_distribution(model, sampler: Sampler) -> dict[tuple[int, ...], float]:
    """P(the next NEW tokens) under the sampler, by enumerating every continuation."""
    out = {(): 1.0}
    for _ in range(NEW):
        seqs = list(out)
        ids = torch.tensor([list(PREFIX) + CONTEXT + list(s) for s in seqs])
        hidden = model.base_model(input_ids=ids).last_hidden_state[:, -1]
        probs = sampler.probs(logits_from_hidden(model, hidden))
        out = {
            s + (t,): out[s] * float(probs[i, t]) for i, s in enumerate(seqs) for t in range(VOCAB)
        }
    return {s: p for s, p in out.items() if p > 0}


def draws(sampler: Sampler, drafter_kind: str | None, seed: int = 0) -> Counter:
    """DRAWS answers of NEW tokens: plain ones in batches (every other row a NEIGHBOUR), each
    speculative one from a fresh stream over the encoded prefix."""
    if drafter_kind is None:
        return batched_draws(sampler, seed)
    generator = torch.Generator().manual_seed(seed)
    target_prefix = encode_prefix(TARGET, PREFIX, (), "cpu", want_nll=False)
    draft_prefix = encode_prefix(DRAFT, PREFIX, (), "cpu", want_nll=False)
    counts = Counter()
    for _ in range(DRAWS):
        stream = Stream(TARGET, "cpu", target_prefix.cache, len(PREFIX))
        drafter = make_drafter(drafter_kind, draft_prefix)
        committed = list(PREFIX) + CONTEXT
        out = speculative_generate(
            stream, drafter, committed, sampler, NEW, never, generator, draft_tokens=2
        )
        counts[tuple(out.tokens[:NEW])] += 1
    return counts


def never(tokens) -> bool:
    return False


def batched_draws(sampler: Sampler, seed: int) -> Counter:
    """Plain answers for CONTEXT, BATCH // 2 per batch, each row with its own generator."""
    encoded = encode_prefix(TARGET, PREFIX, (), "cpu", want_nll=False)
    counts = Counter()
    row = 0
    while sum(counts.values()) < DRAWS:
        queries = [CONTEXT if i % 2 == 0 else NEIGHBOUR for i in range(BATCH)]
        generators = [torch.Generator().manual_seed(seed * 100_000 + row + i) for i in range(BATCH)]
        row += BATCH
        rows = BatchRows(TARGET, "cpu", encoded.cache, len(PREFIX), BATCH)
        out = generate_batch(rows, queries, sampler, NEW, never, generators)
        counts.update(tuple(answer.tokens) for answer in out[::2])
    return counts


class BrokenDrafter(ModelDrafter):
    """Drafts the draft model's argmax but reports its plain softmax as q: not exact."""

    def propose(self, committed, n, sampler, generator):
        drafts, qs = super().propose(committed, n, Sampler("greedy"), generator)
        return drafts, [Sampler("sample").probs(self.last_logits)] * len(drafts)

    @property
    def last_logits(self):
        return torch.zeros(VOCAB)  # uniform: q says every draft was a 1-in-8 guess


def make_drafter(kind: str, draft_prefix):
    stream = Stream(DRAFT, "cpu", draft_prefix.cache, len(PREFIX))
    if kind == "model":
        return ModelDrafter(stream)
    if kind == "broken":
        return BrokenDrafter(stream)
    return PromptLookupDrafter(ngram=2)


def chi_square_p(counts: Counter, exact: dict) -> float:
    """Goodness of fit of the drawn answers to the exact distribution (sparse bins pooled)."""
    assert set(counts) <= set(exact), "a sampler drew an answer the target cannot produce"
    observed, expected = [], []
    pooled_o = pooled_e = 0.0
    for seq, p in sorted(exact.items(), key=lambda item: -item[1]):
        if p * DRAWS >= 5:
            observed.append(counts[seq])
            expected.append(p * DRAWS)
        else:
            pooled_o += counts[seq]
            pooled_e += p * DRAWS
    if pooled_e > 0:
        observed.append(pooled_o)
        expected.append(pooled_e)
    expected = np.asarray(expected) * sum(observed) / sum(expected)
    return float(chisquare(observed, expected).pvalue)


SAMPLERS = {
    "plain": Sampler("sample"),
    "warped": Sampler("sample", temperature=0.8, top_k=6, top_p=0.9),
}


@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("drafter", [None, "model", "lookup"])
def test_samples_follow_the_exact_distribution(name, drafter):
    sampler = SAMPLERS[name]
    p = chi_square_p(draws(sampler, drafter), exact_distribution(TARGET, sampler))
    assert p > 1e-3, (name, drafter, p)


@torch.inference_mode()
def transformers_draws(sampler: Sampler, assist: str | None, n: int) -> Counter:
    """Answers from transformers' own sampling (one batch) or assisted generation (one at a
    time: a draft model, or prompt lookup), under the same warpers."""
    from transformers import GenerationConfig

    ids = torch.tensor([list(PREFIX) + CONTEXT])
    # an explicit mask: token 0 opens the prompt, and a pad id equal to a prompt token would
    # otherwise be hidden from attention
    mask = torch.ones_like(ids)
    config = GenerationConfig(
        do_sample=True, max_new_tokens=NEW, pad_token_id=0, temperature=sampler.temperature,
        top_k=sampler.top_k or None, top_p=sampler.top_p,
    )  # fmt: skip
    torch.manual_seed(0)  # generate draws from the global generator
    if assist is None:
        out = TARGET.generate(ids.repeat(n, 1), attention_mask=mask.repeat(n, 1),
                              generation_config=config)  # fmt: skip
        return Counter(tuple(row[ids.shape[1] :].tolist()) for row in out)
    extra = {"assistant_model": DRAFT} if assist == "model" else {"prompt_lookup_num_tokens": 2}
    counts = Counter()
    for _ in range(n):
        out = TARGET.generate(ids, attention_mask=mask, generation_config=config, **extra)
        counts[tuple(out[0, ids.shape[1] :].tolist())] += 1
    return counts


@pytest.mark.parametrize(
    ("name", "assist", "n"),
    [("plain", None, DRAWS), ("warped", None, DRAWS), ("plain", "model", 400),
     ("plain", "lookup", 400)],
)  # fmt: skip
def test_transformers_samples_follow_the_same_exact_distribution(name, assist, n):
    """The cross-check: transformers' sampling and assisted generation (assistant_model=,
    prompt_lookup_num_tokens=) pass the test our samplers pass, so the enumerated
    distribution is the one transformers samples too."""
    sampler = SAMPLERS[name]
    p = chi_square_p(transformers_draws(sampler, assist, n), exact_distribution(TARGET, sampler))
    assert p > 1e-3, (name, assist, p)


def test_a_drafter_with_the_wrong_q_is_caught():
    sampler = SAMPLERS["plain"]
    p = chi_square_p(draws(sampler, "broken"), exact_distribution(TARGET, sampler))
    assert p < 1e-6


@pytest.mark.parametrize("drafter", ["model", "lookup"])
def test_greedy_speculative_decoding_gives_plain_greedy_tokens(drafter):
    greedy = Sampler("greedy")
    (plain,) = draws_n(greedy, None, 1)
    (fast,) = draws_n(greedy, drafter, 1)
    assert fast == plain
    assert list(exact_distribution(TARGET, greedy)) == [plain]


def draws_n(sampler, drafter, n):
    global DRAWS
    saved, DRAWS = DRAWS, n
    try:
        return list(draws(sampler, drafter))
    finally:
        DRAWS = saved


def test_decoding_never_writes_the_shared_prefix_cache():
    encoded = encode_prefix(TARGET, PREFIX, (), "cpu", want_nll=False)
    before = [layer.keys.clone() for layer in encoded.cache.layers]
    generator = torch.Generator().manual_seed(0)
    for kind in ("model", "lookup"):
        stream = Stream(TARGET, "cpu", encoded.cache, len(PREFIX))
        speculative_generate(
            stream, make_drafter(kind, encode_prefix(DRAFT, PREFIX, (), "cpu", False)),
            list(PREFIX) + CONTEXT, SAMPLERS["plain"], 5, lambda t: False, generator,
        )  # fmt: skip
    assert all(torch.equal(a, layer.keys) for a, layer in zip(before, encoded.cache.layers))
    assert all(layer.keys.shape[-2] == len(PREFIX) for layer in encoded.cache.layers)


def test_enumeration_covers_the_vocabulary():
    dist = exact_distribution(TARGET, SAMPLERS["plain"])
    assert sum(dist.values()) == pytest.approx(1.0, abs=1e-4)
    assert len(dist) == VOCAB**NEW  # the plain sampler gives every answer some mass
    assert list(itertools.islice(dist, 1))
