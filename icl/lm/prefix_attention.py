"""Attention over a shared prefix without copying it into every example of a batch.

With one demonstration set per cell, every example's keys and values start with the same
prefix. A KV cache expanded over the batch makes attention concatenate that prefix into each
example (B copies per layer). Here the suffix queries of the whole batch attend to the single
prefix copy in one matmul, and to their own suffix keys causally; one softmax over both parts
merges them, which is the log-sum-exp merge of the two partial attentions.

It plugs into transformers' attention-function interface: the model runs the suffix alone
(no cache, positions offset by the prefix length) while ``shared_prefix`` is active.
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass

import torch

ATTENTION_NAME = "icl_shared_prefix"


@dataclass(frozen=True)
class PrefixKV:
    """Per-layer prefix keys and values (1, kv_heads, stored, head_dim) and the prefix length."""

    layers: dict[int, tuple[torch.Tensor, torch.Tensor]]
    length: int


_ACTIVE: contextvars.ContextVar[PrefixKV | None] = contextvars.ContextVar(
    "icl_prefix", default=None
)


def prefix_from_cache(cache, length: int) -> PrefixKV:
    """The prefix keys and values held by a transformers cache after encoding the prefix."""
    layers = {i: (layer.keys[:1], layer.values[:1]) for i, layer in enumerate(cache.layers)}
    return PrefixKV(layers=layers, length=length)


def _masked(scores: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    return scores.masked_fill(~visible, float("-inf"))


def shared_prefix_attention(
    module,
    query,
    key,
    value,
    attention_mask=None,
    scaling=None,
    dropout=0.0,
    sliding_window=None,
    softcap=None,
    **kwargs,
):
    """Attention of suffix queries over the active prefix plus their own causal suffix."""
    prefix = _ACTIVE.get()
    batch, q_heads, length, dim = query.shape
    kv_heads = key.shape[1]
    groups = q_heads // kv_heads
    scale = scaling if scaling is not None else dim**-0.5
    q = query.reshape(batch, kv_heads, groups, length, dim)
    query_pos = torch.arange(length, device=query.device)
    own = torch.einsum("bhgld,bhmd->bhglm", q, key).float() * scale
    visible = query_pos[None, :] <= query_pos[:, None]  # causal within the suffix
    if sliding_window is not None:
        visible &= (query_pos[:, None] - query_pos[None, :]) < sliding_window
    parts, values = [own], [value]
    if prefix is not None and module.layer_idx in prefix.layers:
        p_key, p_value = prefix.layers[module.layer_idx]
        stored = p_key.shape[2]
        shared = torch.einsum("bhgld,hpd->bhglp", q, p_key[0]).float() * scale
        parts.insert(0, shared)
        values.insert(0, p_value)
        key_pos = prefix.length - stored + torch.arange(stored, device=query.device)
        prefix_visible = torch.ones(length, stored, dtype=torch.bool, device=query.device)
        if sliding_window is not None:
            prefix_visible = (
                prefix.length + query_pos[:, None] - key_pos[None, :]
            ) < sliding_window
        visible = torch.cat([prefix_visible, visible], dim=1)
    scores = torch.cat(parts, dim=-1)
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    probs = _masked(scores, visible).softmax(-1).to(query.dtype)
    out = torch.zeros_like(q)
    start = 0
    for part_values in values:
        width = part_values.shape[2]
        weights = probs[..., start : start + width]
        if part_values.shape[0] == 1 and batch > 1:  # the shared prefix: one copy for all
            out = out + torch.einsum("bhglp,hpd->bhgld", weights, part_values[0])
        else:
            out = out + torch.einsum("bhglm,bhmd->bhgld", weights, part_values)
        start += width
    out = out.reshape(batch, q_heads, length, dim).transpose(1, 2).contiguous()
    return out, None


def register() -> None:
    """Make the attention function selectable by name in transformers."""
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION_NAME, shared_prefix_attention)


@contextlib.contextmanager
def shared_prefix(model, prefix: PrefixKV | None):
    """Run the model's attention over ``prefix`` (and the suffix) inside the block."""
    register()
    previous = model.config._attn_implementation
    token = _ACTIVE.set(prefix)
    model.set_attn_implementation(ATTENTION_NAME)
    try:
        yield
    finally:
        model.set_attn_implementation(previous)
        _ACTIVE.reset(token)
