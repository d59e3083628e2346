"""The two-part attention: fused kernels, the manual path and the merge against one softmax."""

from __future__ import annotations

import pytest
import torch

from icl.lm import prefix_attention as pa


def reference(q, keys, values, visible, scale, softcap=None):
    """One softmax over prefix and suffix keys together, in float64."""
    scores = (q.double() @ keys.double().transpose(-1, -2)) * scale
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    scores = scores.masked_fill(~visible, float("-inf"))
    return scores.softmax(-1) @ values.double()


def two_part_case(length: int, stored: int, window: int | None, seed: int = 0):
    """Random queries, suffix keys and a shared prefix, with the mask of one softmax."""
    gen = torch.Generator().manual_seed(seed)
    batch, heads, dim = 3, 2, 8
    q = torch.randn(batch, heads, length, dim, generator=gen)
    k, v = (torch.randn(batch, heads, length, dim, generator=gen) for _ in range(2))
    pk, pv = (torch.randn(1, heads, stored, dim, generator=gen) for _ in range(2))
    i = torch.arange(length)[:, None]
    visible_prefix = torch.ones(length, stored, dtype=torch.bool)
    visible_own = torch.arange(length)[None, :] <= i
    if window is not None:  # query i at distance stored - j + i from stored key j
        visible_prefix = (stored - torch.arange(stored)[None, :] + i) < window
        visible_own &= (i - torch.arange(length)[None, :]) < window
    keys = torch.cat([pk.expand(batch, -1, -1, -1), k], dim=2)
    values = torch.cat([pv.expand(batch, -1, -1, -1), v], dim=2)
    visible = torch.cat([visible_prefix, visible_own], dim=1)
    return q, k, v, pk, pv, keys, values, visible


@pytest.mark.parametrize("window", [None, 4, 30])
@pytest.mark.parametrize("softcap", [None, 0.5])
def test_two_parts_merged_equal_one_softmax(window, softcap):
    length, stored, scale = 7, 5, 0.4
    q, k, v, pk, pv, keys, values, visible = two_part_case(length, stored, window)
    batch, heads = q.shape[:2]
    cache: dict = {}
    own = pa.suffix_mask(length, window, q.dtype, q.device, cache)
    out, lse = pa.attend(q, k, v, scale, own, softcap)
    p_mask = pa.prefix_mask(length, stored, window, batch, q.dtype, q.device, cache)
    flat = q.transpose(0, 1).reshape(1, heads, batch * length, -1)
    p_out, p_lse = pa.attend(flat, pk, pv, scale, p_mask, softcap)
    p_out = p_out.view(heads, batch, length, -1).transpose(0, 1)
    p_lse = p_lse.view(heads, batch, length).transpose(0, 1)
    merged = pa.merge(out, lse, p_out, p_lse)
    expected = reference(q, keys, values, visible, scale, softcap)
    assert torch.allclose(merged.double(), expected, atol=1e-5)
    if window == 4:  # queries 3.. see no prefix key: their prefix part must weigh nothing
        assert p_mask.empty is not None and p_mask.empty.view(batch, length)[0, 3:].all()
        assert torch.isneginf(p_lse[:, :, 3:]).all()


@pytest.mark.parametrize("window", [None, 4])
def test_fused_kernel_and_manual_path_agree(window):
    q, k, v, *_ = two_part_case(9, 5, window, seed=1)
    mask = pa.suffix_mask(9, window, q.dtype, q.device, {})
    fused = pa._kernels(q, mask)[0](q, k, v, 0.3, mask)
    manual = pa._manual(q, k, v, 0.3, mask, None)
    assert torch.allclose(fused[0], manual[0], atol=1e-6)
    assert torch.allclose(fused[1], manual[1], atol=1e-6)


def test_masks_are_built_once_per_shape():
    cache: dict = {}
    first = pa.prefix_mask(7, 600, 512, 4, torch.float32, torch.device("cpu"), cache)
    again = pa.prefix_mask(7, 600, 512, 4, torch.float32, torch.device("cpu"), cache)
    assert first is again and first.bias.shape == (28, 600)
    # a prefix the window cannot cut needs no mask at all
    assert pa.prefix_mask(7, 400, 512, 4, torch.float32, torch.device("cpu"), cache).bias is None
    assert pa.prefix_mask(7, 600, None, 4, torch.float32, torch.device("cpu"), cache).bias is None


def test_a_kernel_that_refuses_falls_back_to_the_next_and_warns_once(monkeypatch, caplog):
    q, k, v, *_ = two_part_case(6, 5, None, seed=2)
    mask = pa.suffix_mask(6, None, q.dtype, q.device, {})

    def refusing(*args):
        raise RuntimeError("No available kernel")

    monkeypatch.setattr(pa, "_kernels", lambda q, mask: [refusing])
    monkeypatch.setattr(pa, "_FALLBACKS", set())
    for _ in range(2):
        out, lse = pa.attend(q, k, v, 0.3, mask)
    manual = pa._manual(q, k, v, 0.3, mask, None)
    assert torch.equal(out, manual[0]) and torch.equal(lse, manual[1])
    assert len([r for r in caplog.records if "refused" in r.getMessage()]) == 1
