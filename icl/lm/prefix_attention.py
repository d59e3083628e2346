"""Attention over a shared prefix without copying it into every example of a batch.

With one demonstration set per cell, every example's keys and values start with the same
prefix. A KV cache expanded over the batch makes attention concatenate that prefix into each
example (B copies per layer). Here attention runs in two parts, each a fused kernel that also
returns its softmax normaliser (log-sum-exp): the suffix queries of the whole batch, flattened
into one long sequence per key head, attend to the single prefix copy; each example's queries
attend causally to its own suffix. A float32 log-sum-exp merge of the two partial outputs is
exactly one softmax over prefix and suffix together.

It plugs into transformers' attention-function interface: the model runs the suffix alone
(no cache, positions offset by the prefix length) while ``shared_prefix`` is active.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from dataclasses import dataclass, field

import torch

log = logging.getLogger(__name__)

ATTENTION_NAME = "icl_shared_prefix"
# the memory-efficient CUDA kernel reads its bias in aligned rows (as torch's own SDPA pads)
_BIAS_ALIGN = 16


@dataclass(frozen=True)
class PrefixKV:
    """Per-layer prefix keys and values (1, kv_heads, stored, head_dim) and the prefix length.

    ``masks`` caches the additive masks of one batch shape: every layer of a forward (and every
    batch of the same width) reuses them.
    """

    layers: dict[int, tuple[torch.Tensor, torch.Tensor]]
    length: int
    masks: dict = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Mask:
    """What a query may see in one attention part: plain causal, an additive bias, or all."""

    bias: torch.Tensor | None = None  # 0 where visible, -inf where not
    causal: bool = False  # the bias is the plain causal one: kernels take is_causal instead
    empty: torch.Tensor | None = None  # (queries,) rows that see no key at all


_ACTIVE: contextvars.ContextVar[PrefixKV | None] = contextvars.ContextVar(
    "icl_prefix", default=None
)
_FALLBACKS: set[tuple] = set()


def prefix_from_cache(cache, length: int) -> PrefixKV:
    """The prefix keys and values held by a transformers cache after encoding the prefix."""
    layers = {i: (layer.keys[:1], layer.values[:1]) for i, layer in enumerate(cache.layers)}
    return PrefixKV(layers=layers, length=length)


def _additive(visible: torch.Tensor, dtype, align: int = 1) -> torch.Tensor:
    """0 / -inf bias from a boolean mask, its rows padded in memory to a multiple of align."""
    rows, cols = visible.shape
    padded = -(-cols // align) * align
    bias = torch.full((rows, padded), float("-inf"), dtype=dtype, device=visible.device)
    bias[:, :cols].masked_fill_(visible, 0.0)
    return bias[:, :cols]


def suffix_mask(length: int, window: int | None, dtype, device, cache: dict) -> Mask:
    """Causal attention within each example's suffix, inside the sliding window if any."""
    key = ("suffix", length, window, dtype, device)
    if key not in cache:
        pos = torch.arange(length, device=device)
        visible = pos[None, :] <= pos[:, None]
        causal = window is None or length <= window
        if not causal:
            visible &= (pos[:, None] - pos[None, :]) < window
        align = _BIAS_ALIGN if device.type == "cuda" else 1
        cache[key] = Mask(bias=_additive(visible, dtype, align), causal=causal)
    return cache[key]


def prefix_mask(
    length: int, stored: int, window: int | None, repeat: int, dtype, device, cache: dict
) -> Mask:
    """Which stored prefix keys each flattened suffix query sees: all, unless a window cuts.

    Suffix query i sits at position prefix_length + i; stored key j at prefix_length - stored
    + j; a window lets it see keys less than ``window`` positions back, so j > i + stored -
    window. Queries are flattened as (batch x groups) repeats of the suffix's ``length`` rows.
    """
    if window is None or length - 1 + stored < window:
        return Mask()
    key = ("prefix", length, stored, window, repeat, dtype, device)
    if key not in cache:
        i = torch.arange(length, device=device)[:, None]
        j = torch.arange(stored, device=device)[None, :]
        visible = j > i + stored - window
        empty = ~visible.any(-1)
        # a row that sees nothing gets a harmless full row; its log-sum-exp is set to -inf
        visible |= empty[:, None]
        align = _BIAS_ALIGN if device.type == "cuda" else 1
        bias = _additive(visible.repeat(repeat, 1), dtype, align)
        cache[key] = Mask(bias=bias, empty=empty.repeat(repeat) if empty.any() else None)
    return cache[key]


def _flash_cpu(q, k, v, scale: float, mask: Mask):
    bias = None if mask.causal else mask.bias
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        q, k, v, 0.0, mask.causal, attn_mask=bias, scale=scale
    )


def _flash_cuda(q, k, v, scale: float, mask: Mask):
    out, lse, *_ = torch.ops.aten._scaled_dot_product_flash_attention(
        q, k, v, 0.0, mask.causal, scale=scale
    )
    return out, lse


def _efficient_cuda(q, k, v, scale: float, mask: Mask):
    bias = None if mask.causal or mask.bias is None else mask.bias
    if bias is not None:
        bias = bias.expand(q.shape[0], q.shape[1], -1, -1)
    out, lse, *_ = torch.ops.aten._scaled_dot_product_efficient_attention(
        q, k, v, bias, True, 0.0, mask.causal, scale=scale
    )
    return out, lse[..., : q.shape[2]]  # the kernel pads its log-sum-exp rows


def _kernels(q, mask: Mask) -> list:
    """Fused attentions that return (out, log-sum-exp) and may take these inputs, best first."""
    if q.device.type == "cpu":
        return [_flash_cpu]
    if q.device.type != "cuda":
        return []
    flash = (mask.causal or mask.bias is None) and q.dtype in (torch.float16, torch.bfloat16)
    return ([_flash_cuda] if flash and q.shape[-1] <= 256 else []) + [_efficient_cuda]


def _manual(q, k, v, scale: float, mask: Mask, softcap: float | None):
    """Softmax attention in plain operations (soft-capped scores, or where no kernel fits)."""
    scores = torch.matmul(q, k.transpose(-1, -2)).float() * scale
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if mask.bias is not None:
        scores = scores + mask.bias
    lse = scores.logsumexp(-1)
    # a row with no visible key has lse -inf and weight 0 in the merge; keep its output finite
    probs = (scores - lse.nan_to_num(neginf=0.0)[..., None]).exp()
    return torch.matmul(probs.to(v.dtype), v), lse


def attend(q, k, v, scale: float, mask: Mask, softcap: float | None = None):
    """Attention of q (B, H, N, d) over k, v (B, H, M, d) and its log-sum-exp (B, H, N)."""
    result = None
    for kernel in _kernels(q, mask) if softcap is None else []:
        try:
            result = kernel(q, k, v, scale, mask)
            break
        except RuntimeError as err:  # a kernel that refuses these shapes or dtypes
            key = (kernel.__name__, q.dtype, q.shape[-1], mask.bias is None)
            if key not in _FALLBACKS:
                _FALLBACKS.add(key)
                log.warning("attention kernel refused %s (%s); trying the next", key, err)
    out, lse = result if result is not None else _manual(q, k, v, scale, mask, softcap)
    if mask.empty is not None:
        lse = lse.masked_fill(mask.empty, float("-inf"))
    return out, lse


def merge(out_a, lse_a, out_b, lse_b) -> torch.Tensor:
    """One softmax over two key sets from the two partial attentions (float32 log-sum-exp).

    The weight of part a is exp(lse_a) / (exp(lse_a) + exp(lse_b)) = sigmoid(lse_a - lse_b).
    """
    weight_a = torch.sigmoid(lse_a - lse_b).unsqueeze(-1)
    return torch.lerp(out_b.float(), out_a.float(), weight_a)


def _repeat_heads(states: torch.Tensor, groups: int) -> torch.Tensor:
    if groups == 1:
        return states
    batch, heads, length, dim = states.shape
    return states[:, :, None].expand(batch, heads, groups, length, dim).flatten(1, 2)


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
    masks = prefix.masks if prefix is not None else {}
    own_mask = suffix_mask(length, sliding_window, query.dtype, query.device, masks)
    own_k, own_v = _repeat_heads(key, groups), _repeat_heads(value, groups)
    out, lse = attend(query, own_k, own_v, scale, own_mask, softcap)
    if prefix is None or module.layer_idx not in prefix.layers:
        # the caller wants (batch, length, heads, dim), which fused kernels already lay out
        return out.transpose(1, 2).contiguous(), None
    p_key, p_value = prefix.layers[module.layer_idx]
    stored = p_key.shape[2]
    p_mask = prefix_mask(
        length, stored, sliding_window, batch * groups, query.dtype, query.device, masks
    )
    # every query of the batch against the one prefix copy: (1, kv_heads, B*groups*L, d)
    grouped = (batch, kv_heads, groups, length)
    flat = query.unflatten(1, (kv_heads, groups)).transpose(0, 1)
    flat = flat.reshape(1, kv_heads, batch * groups * length, dim)
    p_out, p_lse = attend(flat, p_key, p_value, scale, p_mask, softcap)
    p_out = p_out.view(kv_heads, batch, groups, length, dim).transpose(0, 1)
    p_lse = p_lse.view(kv_heads, batch, groups, length).transpose(0, 1)
    merged = merge(out.view(*grouped, dim), lse.view(grouped), p_out, p_lse)
    result = torch.empty(batch, length, q_heads, dim, dtype=query.dtype, device=query.device)
    result.view(batch, length, kv_heads, groups, dim).copy_(merged.permute(0, 3, 1, 2, 4))
    return result, None


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
