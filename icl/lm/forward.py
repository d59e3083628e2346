"""Forward helpers the engines share: device moves, log-probs at read positions, the prefix's
KV cache (encoding it once, and views of it over a batch), and the suffix forward over it."""

from __future__ import annotations

import bisect
import copy
import inspect
from dataclasses import dataclass, field

import torch

from icl.lm.prefix_attention import prefix_from_cache, shared_prefix


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


def padded(sequences, pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Right-padded ids, their attention mask and each sequence's length."""
    lengths = [len(s) for s in sequences]
    ids = torch.full((len(sequences), max(lengths)), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids.to(device), mask.to(device), lengths


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
