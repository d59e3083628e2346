"""Milliseconds of one layer's shared-prefix attention alone: fused kernels, the manual path,
optionally torch.compile of it and an older implementation loaded from a file."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import sys
import time

import torch

from benchmarks import icl_side
from benchmarks.gpu_check.models import ARCHS
from benchmarks.gpu_check.timing import time_call


def load_legacy(path: str):
    """An older prefix_attention module from a file, for the micro-benchmark."""
    spec = importlib.util.spec_from_file_location("legacy_prefix_attention", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while decorating
    spec.loader.exec_module(module)
    return module


def attention_bench(device, dtype, batch_size, prefix_len, lines, legacy_path, compile_it, archs):
    """Milliseconds per call of one layer's shared-prefix attention, per implementation."""
    lines.append(
        f"\n## Attention alone ({dtype}, batch {batch_size}, suffix 25, prefix {prefix_len}): "
        "ms per layer call\n"
    )
    lines.append("| model | implementation | ms |")
    lines.append("|---|---|---|")
    legacy = load_legacy(legacy_path) if legacy_path else None
    pa = icl_side.prefix_attention
    for arch in archs:
        run = layer_call(ARCHS[arch], device, dtype, batch_size, prefix_len)
        cases = [("fused kernels (default)", contextlib.nullcontext, pa)]
        cases.append(("manual (matmul + logsumexp per part)", icl_side.manual_attention, pa))
        if legacy is not None:
            cases.append(("before: one softmax over cat(scores)", contextlib.nullcontext, legacy))
        for label, context, module in cases:
            with context():
                ms = time_call(functools.partial(run, module), device)
            lines.append(f"| {arch} | {label} | {ms:.2f} |")
            print(lines[-1], flush=True)
        if compile_it and arch == archs[0]:  # compiling takes tens of seconds per shape
            lines.append(f"| {arch} | {compiled_manual(run, device)} |")
            print(lines[-1], flush=True)


def layer_call(spec: dict, device, dtype, batch_size: int, prefix_len: int):
    """run(module): one layer's shared-prefix attention on random inputs of a model's shape."""
    heads, kv_heads = spec["num_attention_heads"], spec["num_key_value_heads"]
    dim = spec["head_dim"]

    def rand(*shape):
        return torch.randn(*shape, device=device, dtype=dtype)

    q = rand(batch_size, 25, heads, dim).transpose(1, 2)  # the layout models hand over
    k, v = (rand(batch_size, 25, kv_heads, dim).transpose(1, 2) for _ in range(2))
    pk, pv = (rand(1, kv_heads, prefix_len, dim) for _ in range(2))

    def run(module):
        icl_side.shared_prefix_call(module, q, k, v, pk, pv, prefix_len, scaling=dim**-0.5)

    return run


def compiled_manual(run, device) -> str:
    """The manual path under torch.compile: its compile time and ms per call (or the error)."""
    pa = icl_side.prefix_attention
    started = time.perf_counter()
    try:
        with icl_side.compiled_manual_attention():
            run(pa)
            warm = time.perf_counter() - started
            ms = time_call(functools.partial(run, pa), device)
        return f"torch.compile(manual), {warm:.0f} s to compile | {ms:.2f}"
    except Exception as err:  # a compiler missing on the machine is a result too
        return f"torch.compile(manual) failed: {type(err).__name__}: {str(err)[:80]} |"
