"""Engines: forward passes that turn score requests into the log-probabilities scoring needs.

Three engines compute the same numbers:
- ``prefix``: the demonstration block (the prefix shared by a cell's examples) is encoded once;
  its KV cache is expanded over batches of right-padded suffixes (a view, never mutated), and
  the model's own attention (SDPA) concatenates it into each example.
- ``prefix_shared``: the same prefix, but the suffix batch attends to its single copy through
  a custom attention function (``prefix_attention``): no per-example copy of the prefix.
- ``naive``: every (prefix + query + option) sequence is recomputed from scratch with the
  model's plain forward; the reference the tests hold the fast engine to.

``auto`` picks ``prefix_shared`` on CPU and CUDA, where it has fused kernels (on a quiet 2-core
CPU, SmolLM2 at k=16: 1.4-1.7x ``prefix``; at k=32: 2.4x), and ``prefix`` elsewhere.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from icl.errors import unknown_name
from icl.lm.batching import (
    AUTO,
    CPU_BATCH_SIZE,
    RowProgress,
    auto_batch_size,
    build_rows,
    check_batch_size,
    run_rows,
)
from icl.lm.forward import encode_prefix, padded, to_device
from icl.lm.grouping import prefix_groups
from icl.lm.requests import ScoreRequest, ScoreResult, ScoreStats, empty_results
from icl.lm.score_cache import model_key as cache_model_key

ENGINES = ("prefix", "prefix_shared", "naive")
# what scoring.engine accepts: an engine, or auto (resolved for the device)
ENGINE_CHOICES = (AUTO, *ENGINES)
# where prefix_attention has fused kernels that return the log-sum-exp: auto picks prefix_shared
FUSED_DEVICES = ("cpu", "cuda")


def shared_query_start(queries) -> int:
    """How many leading tokens all queries share, leaving each at least its last token.

    Templates open every query alike (the separator, "Review:"): those tokens join the prefix
    and run once per group instead of once per example.
    """
    first = queries[0]
    limit = min(len(q) for q in queries) - 1
    n = 0
    while n < limit and all(q[n] == first[n] for q in queries):
        n += 1
    return n


def _sink_into(results, moved=None):
    """Where each read's log-prob goes: a query's NLL, or one token of one option; a merged
    request's leading query tokens (``moved``) were its prefix's, so they go to its prefix."""
    moved = moved or {}

    def sink(key, value):
        if key[0] == "q" and key[2] < moved.get(key[1], 0):
            results[key[1]].prefix_nll -= value
            results[key[1]].prefix_count += 1
        elif key[0] == "q":
            results[key[1]].query_nll -= value
            results[key[1]].query_count += 1
        else:
            _, i, o, j = key
            results[i].option_logprobs[o][j] = value

    return sink


def _credit_encoded_prefix(results, indices, encoded, moved, want_query: bool, sink, device):
    """The log-probs one prefix forward already gave: its NLL, the queries' shared start, and
    each query's first token after it (one transfer for the group)."""
    for i in indices:
        results[i].prefix_nll, results[i].prefix_count = encoded.nll, encoded.count
        if want_query:
            results[i].query_nll = -sum(encoded.query_logprobs)
            results[i].query_count = len(encoded.query_logprobs)
    if want_query and encoded.next_logprobs is not None:
        shared = len(encoded.query_logprobs)
        nexts = to_device([moved[i].query[0] for i in indices], device)
        for i, value in zip(indices, encoded.next_logprobs[nexts].tolist()):
            sink(("q", i, shared), value)


@torch.inference_mode()
def score_prefix_reuse(
    lm,
    requests,
    batch_size,
    want_query: bool,
    progress: bool | str,
    attention: str = "copy",
    merge: bool = False,
):
    """Encode each distinct prefix once and score its examples' suffixes over its cache
    (with ``merge``, requests of unshared prefixes after the prefix they all share)."""
    results = empty_results(requests)
    groups, requests = prefix_groups(requests, merge)
    sink = _sink_into(results, {i: n for g in groups for i, n in g.moved.items()})
    auto = batch_size == AUTO
    bar = tqdm(total=len(requests), desc=bar_label(progress), unit="ex", disable=not progress)
    tracker = RowProgress(bar, lm.device)
    for group in groups:
        prefix, indices = group.prefix, group.indices
        # a merged group's queries open with their own prefixes: no start to share
        shared = 0 if group.moved else shared_query_start([requests[i].query for i in indices])
        start = requests[indices[0]].query[:shared]
        encoded = encode_prefix(lm.model, prefix, start, lm.device, want_query)
        # the group's requests with the shared start moved from the query into the prefix
        moved = {
            i: ScoreRequest(prefix + start, requests[i].query[shared:], requests[i].options)
            for i in indices
        }
        _credit_encoded_prefix(results, indices, encoded, moved, want_query, sink, lm.device)
        rows = build_rows(moved, indices, want_query)
        length = encoded.length
        if batch_size == AUTO:  # measured once, on the first prefix; later ones may shrink it
            batch_size = auto_batch_size(
                lm.model, rows, encoded.cache, length, lm.device, attention
            )
        tracker.start(rows)
        batch_size = run_rows(
            lm.model, rows, encoded.cache, length, batch_size, lm.device, sink, attention, auto,
            tracker,
        )  # fmt: skip
        tracker.finish(len(indices))
    bar.close()
    return results


def _naive_read(result: ScoreResult, req, o: int, lp: list[float], want_query: bool) -> None:
    """File one full sequence's token log-probs under its option, prefix and query."""
    p, q = len(req.prefix), len(req.query)
    if req.options:
        result.option_logprobs[o] = lp[p + q - 1 :]
    if o == 0:
        result.prefix_nll = -sum(lp[: max(p - 1, 0)])
        result.prefix_count = max(p - 1, 0)
        if want_query:
            query_lp = lp[max(p - 1, 0) : p + q - 1]
            result.query_nll = -sum(query_lp)
            result.query_count = len(query_lp)


@torch.inference_mode()
def score_naive(lm, requests, batch_size: int, want_query: bool, progress: bool | str):
    """Recompute every full sequence with the model's own forward and full logits."""
    results = empty_results(requests)
    for i, req in enumerate(
        tqdm(requests, desc=f"{bar_label(progress)} (naive)", unit="ex", disable=not progress)
    ):
        sequences = [req.prefix + req.query + opt for opt in (req.options or ((),))]
        for start in range(0, len(sequences), batch_size):
            chunk = sequences[start : start + batch_size]
            ids, mask, _ = padded(chunk, 0, lm.device)
            logits = lm.model(input_ids=ids, attention_mask=mask)
            logprobs = logits.logits.float().log_softmax(-1).cpu()
            for b, seq in enumerate(chunk):
                lp = [logprobs[b, t - 1, seq[t]].item() for t in range(1, len(seq))]
                _naive_read(results[i], req, start + b, lp, want_query)
    return results


def resolve_engine(engine: str, device) -> str:
    """The engine ``auto`` stands for on this device; other names are returned as they are."""
    if engine != AUTO:
        return engine
    return "prefix_shared" if torch.device(device).type in FUSED_DEVICES else "prefix"


def compute(
    lm,
    requests,
    engine: str,
    batch_size,
    want_query: bool,
    progress: bool | str,
    merge: bool = False,
):
    """Run one engine over requests, every one computed (no memo)."""
    if engine == "naive":  # a batch holds one request's options
        size = CPU_BATCH_SIZE if batch_size == AUTO else batch_size
        return score_naive(lm, requests, size, want_query, progress)
    attention = "shared" if engine == "prefix_shared" else "copy"
    return score_prefix_reuse(lm, requests, batch_size, want_query, progress, attention, merge)


def score_requests(
    lm,
    requests,
    engine: str = AUTO,
    batch_size: int | str = AUTO,
    want_query: bool = True,
    progress: bool | str = False,
    memo=None,
    merge: bool = False,
    cache=None,
    stats: ScoreStats | None = None,
) -> list[ScoreResult]:
    """Option log-probs (and prompt NLLs) for each request, by the chosen engine.

    With a ``memo`` (``icl.lm.scorer.ScoreMemo``), requests it already holds for this model,
    engine and ``want_query`` are not computed again; with a ``cache``
    (``icl.lm.score_cache.ScoreCache``), neither are those an earlier process stored, and what
    is computed is stored there. ``merge``: requests whose prefix no other has run together
    (``icl.lm.grouping``). ``stats`` counts the requests computed, and served by each store.
    """
    if any(not req.query for req in requests):
        raise ValueError("every request needs a non-empty query")
    engine = resolve_engine(engine, lm.device)
    if engine not in ENGINES:
        raise unknown_name("scoring engine", engine, ENGINE_CHOICES)
    batch_size = check_batch_size(batch_size)
    stats = stats if stats is not None else ScoreStats()
    if memo is None and cache is None:
        stats.add(len(requests), computed=len(requests), cached=0)
        return compute(lm, list(requests), engine, batch_size, want_query, progress, merge)
    known = memo.view(lm, engine, want_query) if memo is not None else {}
    todo = list(dict.fromkeys(req for req in requests if req not in known))
    from_cache = {}
    if cache is not None and todo:
        model = cache_model_key(lm)
        from_cache = cache.get(model, engine, want_query, todo)
        known.update(from_cache)
        todo = [req for req in todo if req not in from_cache]
    if todo:
        computed = dict(
            zip(todo, compute(lm, todo, engine, batch_size, want_query, progress, merge))
        )
        known.update(computed)
        if cache is not None:
            cache.put(model, engine, want_query, computed)
    stats.add(len(requests), computed=len(todo), cached=len(from_cache))
    return [known[req].copy() for req in requests]


def bar_label(progress) -> str:
    """A progress bar's label: ``progress`` itself when it names the pass, else scoring."""
    return progress if isinstance(progress, str) and progress else "scoring"
