"""Engine exactness on the device: fast engines against ``naive``, bf16 ``prefix_shared``
against bf16 ``prefix``."""

from __future__ import annotations

import torch

from benchmarks import icl_side
from benchmarks.gpu_check.models import build, free_memory, requests

ENGINES = ("prefix", "prefix_shared", "naive")


def max_diff(a, b) -> float:
    worst = 0.0
    for x, y in zip(a, b):
        for ox, oy in zip(x.option_logprobs, y.option_logprobs):
            worst = max(worst, max(abs(u - v) for u, v in zip(ox, oy)))
        worst = max(worst, abs(x.query_nll - y.query_nll))
    return worst


def same_predictions(a, b) -> bool:
    def best(result):
        sums = [sum(o) for o in result.option_logprobs]
        return max(range(len(sums)), key=sums.__getitem__)

    return all(best(x) == best(y) for x, y in zip(a, b))


def exactness(device, dtype, lines, n: int, prefix_len: int, layers, archs):
    """Both tables; the second only when the benchmark dtype is not float32."""
    exact_float32(device, lines, n, prefix_len, layers, archs)
    if dtype != torch.float32:
        shared_vs_prefix(device, dtype, lines, n, prefix_len, layers, archs)


def exact_float32(device, lines, n: int, prefix_len: int, layers, archs):
    lines.append("\n## Exactness (float32, random weights): max |fast - naive| log-prob\n")
    lines.append("| model | prefix tokens | options | prefix | prefix_shared | same predictions |")
    lines.append("|---|---|---|---|---|---|")
    for arch in archs:
        lm = build(arch, device, torch.float32, layers)
        for option_lens in ((1, 1), (2, 3)):
            reqs = requests(n, prefix_len, 25, option_lens, lm.model.config.vocab_size)
            out = {e: icl_side.score(lm, reqs, e, 8, want_query=True) for e in ENGINES}
            same = same_predictions(out["prefix_shared"], out["naive"])
            fast, shared = (
                max_diff(out["prefix"], out["naive"]),
                max_diff(out["prefix_shared"], out["naive"]),
            )
            lines.append(
                f"| {arch} | {prefix_len} | {option_lens} | {fast:.2e} | {shared:.2e} | {same} |"
            )
        del lm
        free_memory(device)


def shared_vs_prefix(device, dtype, lines, n: int, prefix_len: int, layers, archs):
    lines.append(f"\n## {dtype}: max |prefix_shared - prefix| log-prob ({4 * n} examples)\n")
    lines.append("| model | prefix tokens | max diff | same predictions |")
    lines.append("|---|---|---|---|")
    for arch in archs:
        lm = build(arch, device, dtype, layers)
        reqs = requests(4 * n, prefix_len, 25, (1, 1), lm.model.config.vocab_size)
        a, b = (
            icl_side.score(lm, reqs, e, 64, want_query=True) for e in ("prefix_shared", "prefix")
        )
        lines.append(f"| {arch} | {prefix_len} | {max_diff(a, b):.2e} | {same_predictions(a, b)} |")
        del lm
        free_memory(device)
