"""Forward passes that turn token sequences into the log-probabilities scoring needs.

Three engines compute the same numbers:
- ``prefix``: the demonstration block (the prefix shared by a cell's examples) is encoded once;
  its KV cache is expanded over batches of right-padded suffixes (a view, never mutated), and
  the model's own attention (SDPA) concatenates it into each example.
- ``prefix_shared``: the same prefix, but the suffix batch attends to its single copy through
  a custom attention function (``prefix_attention``): no per-example copy of the prefix.
- ``naive``: every (prefix + query + option) sequence is recomputed from scratch with the
  model's plain forward; the reference the tests hold the fast engine to.

``auto`` picks ``prefix_shared`` on CPU and CUDA, where it has fused kernels (on a quiet 2-core
CPU, SmolLM2 at k=16: 1.4-1.7x ``prefix``; at k=32: 2.4x), and ``prefix`` elsewhere;
a batch size of ``auto`` fills free device memory, measured by a probe batch.
"""

from __future__ import annotations

import bisect
import copy
import dataclasses
import inspect
import logging
from collections import defaultdict
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from icl.errors import ICLError, unknown_name
from icl.lm.prefix_attention import prefix_from_cache, shared_prefix

log = logging.getLogger(__name__)

ENGINES = ("prefix", "prefix_shared", "naive")
AUTO = "auto"
# where prefix_attention has fused kernels that return the log-sum-exp: auto picks prefix_shared
FUSED_DEVICES = ("cpu", "cuda")
# batch_size=auto: a fixed size off CUDA (CPU throughput is flat in it), else what fits free
# memory, measured on PROBE_ROWS of the widest rows, leaving a margin, and at most the cap
CPU_BATCH_SIZE = 16
PROBE_ROWS = 32
MEMORY_SHARE = 0.8
MAX_AUTO_BATCH_SIZE = 4096


@dataclass(frozen=True)
class ScoreRequest:
    """One test example: the shared prefix (BOS + demonstrations), its query, its options."""

    prefix: tuple[int, ...]
    query: tuple[int, ...]
    options: tuple[tuple[int, ...], ...]

    def __hash__(self) -> int:
        # requests are memo keys and a prefix runs to hundreds of tokens: hash it once
        cached = self.__dict__.get("_hash")
        if cached is None:
            cached = hash((self.prefix, self.query, self.options))
            object.__setattr__(self, "_hash", cached)
        return cached


@dataclass
class ScoreResult:
    """Per-token log-probs of each option after the prompt, and the prompt's NLL parts."""

    option_logprobs: list[list[float]] = field(default_factory=list)
    prefix_nll: float = 0.0
    prefix_count: int = 0
    query_nll: float = 0.0
    query_count: int = 0

    def copy(self) -> ScoreResult:
        return dataclasses.replace(self, option_logprobs=[list(o) for o in self.option_logprobs])


def logits_from_hidden(model, hidden: torch.Tensor) -> torch.Tensor:
    """The LM head on chosen hidden states, with the final soft-capping some models apply."""
    logits = model.get_output_embeddings()(hidden).float()
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap is not None:
        logits = torch.tanh(logits / cap) * cap
    return logits


def to_device(values, device) -> torch.Tensor:
    """Host integers as a device tensor, copied without waiting for queued device work."""
    tensor = torch.tensor(values, dtype=torch.long)
    if torch.device(device).type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def logprobs_at(
    model, hidden: torch.Tensor, rows: list[int], targets: list[int], chunk: int = 256
) -> torch.Tensor:
    """log p(targets[i]) at hidden[rows[i]], on the device; several reads may share a row.

    Reads are grouped by chunk on the host, so nothing here waits for the device.
    """
    out = torch.empty(len(rows), dtype=torch.float32, device=hidden.device)
    if not rows:
        return out
    order = sorted(range(len(rows)), key=rows.__getitem__)
    sorted_rows = [rows[i] for i in order]
    rows_t = to_device(sorted_rows, hidden.device)
    targets_t = to_device([targets[i] for i in order], hidden.device)
    parts, lo = [], 0
    for start in range(0, sorted_rows[-1] + 1, chunk):
        hi = bisect.bisect_left(sorted_rows, start + chunk, lo)
        if hi > lo:
            logprobs = logits_from_hidden(model, hidden[start : start + chunk]).log_softmax(-1)
            parts.append(logprobs[rows_t[lo:hi] - start, targets_t[lo:hi]])
        lo = hi
    out[to_device(order, hidden.device)] = torch.cat(parts)
    return out


def expand_cache(cache, batch_size: int):
    """A per-batch view of the prefix cache: layers share the prefix tensors, never write them."""
    view = copy.copy(cache)
    view.layers = []
    for layer in cache.layers:
        clone = copy.copy(layer)  # update() rebinds clone.keys to a new tensor; the prefix stays
        clone.keys = layer.keys.expand(batch_size, -1, -1, -1)
        clone.values = layer.values.expand(batch_size, -1, -1, -1)
        view.layers.append(clone)
    return view


def cache_kwargs(base_model, cache) -> dict:
    """Pass a cache by the keyword this transformers version prefers (``cache`` from 5.2x)."""
    params = inspect.signature(base_model.forward).parameters
    return {"cache": cache} if "cache" in params else {"past_key_values": cache}


@dataclass
class Row:
    """One sequence to run: a query followed by all but the last token of one option."""

    tokens: tuple[int, ...]
    # (position, target token, where the log-prob goes): ("q", example, j) or ("o", example, o, j)
    reads: list[tuple[int, int, tuple]] = field(default_factory=list)


def build_rows(requests, indices, want_query: bool) -> list[Row]:
    """Rows for examples that share a prefix; identical rows (single-token options) merge."""
    rows: dict[tuple[int, ...], Row] = {}
    for i in indices:
        req = requests[i]
        q = len(req.query)
        for o, option in enumerate(req.options or ((),)):
            full = req.query + option
            tokens = full[:-1] if option else req.query
            row = rows.setdefault(tokens, Row(tokens))
            # only the first option's row reads the query; the others start at its last token
            first = 0 if want_query and o == 0 else q - 1
            for pos in range(first, len(tokens)):
                target = pos + 1  # position pos predicts token pos + 1 of the full sequence
                if target < q and want_query and o == 0:
                    row.reads.append((pos, full[target], ("q", i, target)))
                elif q <= target < len(full):
                    row.reads.append((pos, full[target], ("o", i, o, target - q)))
    return list(rows.values())


def forward_suffix(base, ids, positions, cache, prefix_len: int, attention: str):
    """Hidden states of right-padded suffixes that continue the prefix held by ``cache``."""
    if cache is None:
        return base(input_ids=ids, position_ids=positions, use_cache=False).last_hidden_state
    if attention == "shared":
        with shared_prefix(base, prefix_from_cache(cache, prefix_len)):
            return base(input_ids=ids, position_ids=positions, use_cache=False).last_hidden_state
    view = expand_cache(cache, ids.shape[0])
    return base(
        input_ids=ids, position_ids=positions, use_cache=True, **cache_kwargs(base, view)
    ).last_hidden_state


def run_batch(model, batch: list[Row], cache, prefix_len: int, device, attention: str):
    """The reads of one batch of rows: their keys and their log-probs, still on the device."""
    width = max(len(r.tokens) for r in batch)
    ids = to_device([row.tokens + (0,) * (width - len(row.tokens)) for row in batch], device)
    # right padding: causal attention keeps pads out of every real position, no mask needed
    positions = (prefix_len + torch.arange(width, device=device)).expand(len(batch), -1)
    hidden = forward_suffix(model.base_model, ids, positions, cache, prefix_len, attention)
    # each read position goes through the vocabulary head once, whatever it is read for
    slots: dict[tuple[int, int], int] = {}
    slot_of, targets, keys = [], [], []
    for b, row in enumerate(batch):
        for pos, target, key in row.reads:
            slot_of.append(slots.setdefault((b, pos), len(slots)))
            targets.append(target)
            keys.append(key)
    b_idx, p_idx = zip(*slots)
    chosen = hidden[to_device(b_idx, device), to_device(p_idx, device)]
    return keys, logprobs_at(model, chosen, slot_of, targets)


def run_rows(
    model,
    rows: list[Row],
    cache,
    prefix_len: int,
    batch_size: int,
    device,
    sink,
    attention: str = "copy",
    shrink: bool = False,
) -> int:
    """Forward rows in length-sorted batches over the (optional) prefix cache.

    The log-probs stay on the device until every batch is queued, so the host prepares the
    next batch while the device runs this one. With ``shrink``, a batch that runs out of
    device memory is halved and retried. Returns the batch size that worked.
    """
    order = sorted((r for r in rows if r.reads), key=lambda r: len(r.tokens))
    done: list[tuple[list, torch.Tensor]] = []
    start = 0
    while start < len(order):
        batch = order[start : start + batch_size]
        try:
            done.append(run_batch(model, batch, cache, prefix_len, device, attention))
        except torch.cuda.OutOfMemoryError:
            if not shrink or batch_size == 1:
                raise
        else:
            start += len(batch)
            continue
        batch_size //= 2  # outside the handler, so the failed batch's tensors are released
        log.warning("out of device memory: retrying with batch_size=%d", batch_size)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    if done:
        values = torch.cat([v for _, v in done]).tolist()
        keys = [key for batch_keys, _ in done for key in batch_keys]
        for key, value in zip(keys, values):
            sink(key, value)
    return batch_size


def fit_batch_size(free_bytes: float, bytes_per_row: float, cap: int = MAX_AUTO_BATCH_SIZE) -> int:
    """Rows per batch that fit a share of the free memory at the measured cost per row."""
    fits = int(free_bytes * MEMORY_SHARE // max(bytes_per_row, 1.0))
    return max(1, min(fits, cap))


def auto_batch_size(model, rows: list[Row], cache, prefix_len: int, device, attention: str):
    """batch_size=auto: CPU_BATCH_SIZE off CUDA; on CUDA, from a probe of the widest rows."""
    device = torch.device(device)
    if device.type != "cuda":
        return CPU_BATCH_SIZE
    probe = sorted((r for r in rows if r.reads), key=lambda r: len(r.tokens))[-PROBE_ROWS:]
    if not probe:
        return CPU_BATCH_SIZE
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    run_batch(model, probe, cache, prefix_len, device, attention)
    torch.cuda.synchronize(device)
    per_row = (torch.cuda.max_memory_allocated(device) - before) / len(probe)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    free = torch.cuda.mem_get_info(device)[0] + cached
    size = fit_batch_size(free, per_row)
    log.info(
        "batch_size=auto: %d rows (probe: %.2f MiB per row of %d tokens after a %d-token "
        "prefix; %.1f GiB free)",
        size,
        per_row / 2**20,
        len(probe[-1].tokens),
        prefix_len,
        free / 2**30,
    )
    return size


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


@dataclass
class EncodedPrefix:
    """A group's prefix after one forward: its cache and the log-probs it already gives."""

    cache: object
    length: int
    nll: float = 0.0  # of the prefix proper (demonstrations), from its second token on
    count: int = 0
    query_logprobs: list[float] = field(default_factory=list)  # shared query start, per token
    next_logprobs: torch.Tensor | None = None  # over the vocabulary, for the next token


@torch.inference_mode()
def encode_prefix(model, prefix: tuple[int, ...], shared: tuple[int, ...], device, want_nll: bool):
    """Encode the prefix and the queries' shared start in one forward; split their log-probs.

    Position t predicts token t + 1: targets inside the prefix give its NLL, targets inside
    the shared start belong to each query's NLL.
    """
    tokens = prefix + shared
    if not tokens:
        return EncodedPrefix(cache=None, length=0)
    out = model.base_model(input_ids=torch.tensor([tokens], device=device), use_cache=True)
    states = out.last_hidden_state[0]
    encoded = EncodedPrefix(
        cache=getattr(out, "cache", None) or out.past_key_values, length=len(tokens)
    )
    if want_nll and len(tokens) > 1:
        rows = list(range(len(tokens) - 1))
        values = logprobs_at(model, states[:-1], rows, list(tokens[1:])).tolist()
        in_prefix = max(len(prefix) - 1, 0)
        encoded.nll, encoded.count = -sum(values[:in_prefix]), in_prefix
        encoded.query_logprobs = values[in_prefix:]
    encoded.next_logprobs = logits_from_hidden(model, states[-1:]).log_softmax(-1)[0]
    return encoded


def _sink_into(results, requests):
    def sink(key, value):
        if key[0] == "q":
            results[key[1]].query_nll -= value
            results[key[1]].query_count += 1
        else:
            _, i, o, j = key
            results[i].option_logprobs[o][j] = value

    return sink


def _empty_results(requests) -> list[ScoreResult]:
    return [
        ScoreResult(option_logprobs=[[0.0] * len(opt) for opt in req.options]) for req in requests
    ]


@torch.inference_mode()
def score_prefix_reuse(
    lm, requests, batch_size, want_query: bool, progress: bool, attention: str = "copy"
):
    """Encode each distinct prefix once and score its examples' suffixes over its cache."""
    results = _empty_results(requests)
    sink = _sink_into(results, requests)
    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, req in enumerate(requests):
        groups[req.prefix].append(i)
    auto = batch_size == AUTO
    bar = tqdm(total=len(requests), desc="scoring", unit="ex", disable=not progress)
    for prefix, indices in groups.items():
        shared = shared_query_start([requests[i].query for i in indices])
        start = requests[indices[0]].query[:shared]
        encoded = encode_prefix(lm.model, prefix, start, lm.device, want_query)
        # the group's requests with the shared start moved from the query into the prefix
        moved = {
            i: ScoreRequest(prefix + start, requests[i].query[shared:], requests[i].options)
            for i in indices
        }
        for i in indices:
            results[i].prefix_nll, results[i].prefix_count = encoded.nll, encoded.count
            if want_query:
                results[i].query_nll = -sum(encoded.query_logprobs)
                results[i].query_count = len(encoded.query_logprobs)
        if want_query and encoded.next_logprobs is not None:  # one transfer for the group
            nexts = to_device([moved[i].query[0] for i in indices], lm.device)
            for i, value in zip(indices, encoded.next_logprobs[nexts].tolist()):
                sink(("q", i, shared), value)
        rows = build_rows(moved, indices, want_query)
        length = encoded.length
        if batch_size == AUTO:  # measured once, on the first prefix; later ones may shrink it
            batch_size = auto_batch_size(
                lm.model, rows, encoded.cache, length, lm.device, attention
            )
        batch_size = run_rows(
            lm.model, rows, encoded.cache, length, batch_size, lm.device, sink, attention, auto
        )
        bar.update(len(indices))
    bar.close()
    return results


@torch.inference_mode()
def score_naive(lm, requests, batch_size: int, want_query: bool, progress: bool):
    """Recompute every full sequence with the model's own forward and full logits."""
    results = _empty_results(requests)
    for i, req in enumerate(
        tqdm(requests, desc="scoring (naive)", unit="ex", disable=not progress)
    ):
        p, q = len(req.prefix), len(req.query)
        sequences = [req.prefix + req.query + opt for opt in (req.options or ((),))]
        for start in range(0, len(sequences), batch_size):
            chunk = sequences[start : start + batch_size]
            width = max(len(s) for s in chunk)
            ids = torch.zeros(len(chunk), width, dtype=torch.long)
            mask = torch.zeros(len(chunk), width, dtype=torch.long)
            for b, seq in enumerate(chunk):
                ids[b, : len(seq)] = torch.tensor(seq)
                mask[b, : len(seq)] = 1
            logits = lm.model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device))
            logprobs = logits.logits.float().log_softmax(-1).cpu()
            for b, seq in enumerate(chunk):
                lp = [logprobs[b, t - 1, seq[t]].item() for t in range(1, len(seq))]
                o = start + b
                if req.options:
                    results[i].option_logprobs[o] = lp[p + q - 1 :]
                if o == 0:
                    results[i].prefix_nll = -sum(lp[: max(p - 1, 0)])
                    results[i].prefix_count = max(p - 1, 0)
                    if want_query:
                        query_lp = lp[max(p - 1, 0) : p + q - 1]
                        results[i].query_nll = -sum(query_lp)
                        results[i].query_count = len(query_lp)
    return results


def resolve_engine(engine: str, device) -> str:
    """The engine ``auto`` stands for on this device; other names are returned as they are."""
    if engine != AUTO:
        return engine
    return "prefix_shared" if torch.device(device).type in FUSED_DEVICES else "prefix"


def check_batch_size(batch_size) -> int | str:
    """A positive integer or ``auto``; anything else fails with what is accepted."""
    if batch_size == AUTO or (
        isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size > 0
    ):
        return batch_size
    raise ICLError(f"batch_size must be a positive integer or {AUTO!r}, not {batch_size!r}")


def score_requests(
    lm,
    requests,
    engine: str = AUTO,
    batch_size: int | str = AUTO,
    want_query: bool = True,
    progress: bool = False,
) -> list[ScoreResult]:
    """Option log-probs (and prompt NLLs) for each request, by the chosen engine."""
    if any(not req.query for req in requests):
        raise ValueError("every request needs a non-empty query")
    engine = resolve_engine(engine, lm.device)
    if engine not in ENGINES:
        raise unknown_name("scoring engine", engine, (AUTO, *ENGINES))
    batch_size = check_batch_size(batch_size)
    memo = lm.memo.setdefault((engine, want_query), {})
    todo = list(dict.fromkeys(req for req in requests if req not in memo))
    if todo:
        if engine == "naive":  # a batch holds one request's options
            size = CPU_BATCH_SIZE if batch_size == AUTO else batch_size
            scored = score_naive(lm, todo, size, want_query, progress)
        else:
            attention = "shared" if engine == "prefix_shared" else "copy"
            scored = score_prefix_reuse(lm, todo, batch_size, want_query, progress, attention)
        for req, result in zip(todo, scored):
            memo[req] = result
    return [memo[req].copy() for req in requests]
