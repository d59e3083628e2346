"""The merged two-part attention of prefix_attention against one float64 softmax."""

from __future__ import annotations

import contextlib

import torch

from benchmarks import icl_side


def reference_two_parts(q, k, v, pk, pv, visible, scale):
    """One float64 softmax over the shared prefix and each example's suffix."""
    batch = q.shape[0]
    keys = torch.cat([pk.expand(batch, -1, -1, -1), k], dim=2).double()
    values = torch.cat([pv.expand(batch, -1, -1, -1), v], dim=2).double()
    scores = (q.double() @ keys.transpose(-1, -2)) * scale
    return scores.masked_fill(~visible, float("-inf")).softmax(-1) @ values


def attention_check(device, lines):
    """The table: max |error| per dtype, head dim and window, fused and manual."""
    lines.append("\n## Two-part attention vs one float64 softmax: max |error|\n")
    lines.append("| dtype | head dim | window | fused kernels | manual path | reference scale |")
    lines.append("|---|---|---|---|---|---|")
    for dtype in (torch.float32, torch.bfloat16):
        for dim, window in ((64, None), (256, None), (64, 50), (64, 16)):
            errors, scale = check_case(device, dtype, dim, window)
            lines.append(
                f"| {str(dtype)[6:]} | {dim} | {window} | {errors[0]:.2e} | {errors[1]:.2e} "
                f"| {scale:.2f} |"
            )


def check_case(device, dtype, dim: int, window: int | None, seed: int = 0):
    """Errors of the fused and manual paths on one random case, and the output's scale."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    batch, heads, length, stored = 4, 2, 24, 40

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)

    q, k, v = (rand(batch, heads, length, dim) for _ in range(3))
    pk, pv = (rand(1, heads, stored, dim) for _ in range(2))
    i = torch.arange(length, device=device)[:, None]
    j = torch.arange(stored, device=device)[None, :]
    own = torch.arange(length, device=device)[None, :] <= i
    seen = torch.ones(length, stored, dtype=torch.bool, device=device)
    if window is not None:
        seen = (stored - j + i) < window
        own &= (i - torch.arange(length, device=device)[None, :]) < window
    expected = reference_two_parts(q, k, v, pk, pv, torch.cat([seen, own], 1), dim**-0.5)
    errors = []
    for manual in (False, True):
        with icl_side.manual_attention() if manual else contextlib.nullcontext():
            got = two_parts(q, k, v, pk, pv, dim**-0.5, window)
        errors.append((got.double() - expected).abs().max().item())
    return errors, expected.abs().max().item()


def two_parts(q, k, v, pk, pv, scale, window):
    """shared_prefix_attention on raw tensors, back in (batch, heads, length, dim)."""
    out, _ = icl_side.shared_prefix_call(
        icl_side.prefix_attention,
        q,
        k,
        v,
        pk,
        pv,
        pk.shape[2] + 100,
        scaling=scale,
        sliding_window=window,
    )
    return out.transpose(1, 2)
