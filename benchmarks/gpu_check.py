"""One prepared GPU check: engine exactness on the device and examples/s of the scoring engines.

Runs where only torch and transformers are installed (no model weights travel): models are the
SmolLM2-135M and Gemma-3-270M architectures with random weights, which cost the same to run.

    PYTHONPATH=. python benchmarks/gpu_check.py --device cuda --out results/gpu_check.md

Sections: the two-part attention against a float64 softmax (fused kernels and the manual
path, float32 and bfloat16); engine exactness against ``naive`` (float32) and ``prefix_shared``
against ``prefix`` in the benchmark dtype; a micro-benchmark of the attention function alone
(the manual path, the fused kernels, optionally torch.compile and an older implementation);
examples/s per model and engine, with ``batch_size=auto``'s choice. A smoke test on a CPU:
``--device cpu --dtype float32 --layers 2 --n 64 --batch-size 16 --prefix-len 60``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import logging
import random
import statistics
import sys
import time
import types
from pathlib import Path

import torch

from icl.lm import prefix_attention as pa
from icl.lm.engines import ScoreRequest, score_requests
from icl.lm.loading import LanguageModel

ARCHS = {
    "smollm2-135m": dict(
        model_type="llama",
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        head_dim=64,
        vocab_size=49152,
        max_position_embeddings=8192,
        rope_theta=100000.0,
        tie_word_embeddings=True,
    ),
    "gemma3-270m": dict(
        model_type="gemma3_text",
        hidden_size=640,
        intermediate_size=2048,
        num_hidden_layers=18,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=256,
        vocab_size=262144,
        max_position_embeddings=32768,
        query_pre_attn_scalar=256,
        sliding_window=512,
        layer_types=(["sliding_attention"] * 5 + ["full_attention"]) * 3,
        tie_word_embeddings=True,
    ),
}


def build(arch: str, device, dtype, layers: int | None = None) -> LanguageModel:
    from transformers import AutoConfig, AutoModelForCausalLM

    spec = dict(ARCHS[arch])
    if layers:  # a shallower model of the same width, for smoke tests
        spec["num_hidden_layers"] = layers
        if "layer_types" in spec:
            spec["layer_types"] = spec["layer_types"][-layers:]
    config = AutoConfig.for_model(spec.pop("model_type"), **spec)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).to(device=device, dtype=dtype).eval()
    return LanguageModel(arch, model, None, False, config.max_position_embeddings, device)


def requests(n: int, prefix_len: int, suffix_len: int, option_lens, vocab: int, seed=0):
    rng = random.Random(seed)

    def toks(k):
        return tuple(rng.randrange(10, vocab - 10) for _ in range(k))

    prefix = toks(prefix_len)
    return [
        ScoreRequest(
            prefix, toks(suffix_len + rng.randint(-3, 3)), tuple(toks(k) for k in option_lens)
        )
        for _ in range(n)
    ]


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


def free_memory(device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


@contextlib.contextmanager
def manual_attention():
    """prefix_shared with its fused kernels switched off: the plain-operation path."""
    kernels = pa._kernels
    pa._kernels = lambda *args, **kwargs: []
    try:
        yield
    finally:
        pa._kernels = kernels


def reference_two_parts(q, k, v, pk, pv, visible, scale):
    """One float64 softmax over the shared prefix and each example's suffix."""
    batch = q.shape[0]
    keys = torch.cat([pk.expand(batch, -1, -1, -1), k], dim=2).double()
    values = torch.cat([pv.expand(batch, -1, -1, -1), v], dim=2).double()
    scores = (q.double() @ keys.transpose(-1, -2)) * scale
    return scores.masked_fill(~visible, float("-inf")).softmax(-1) @ values


def attention_check(device, lines):
    """The merged two-part attention of prefix_attention against a float64 softmax."""
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
        with manual_attention() if manual else contextlib.nullcontext():
            got = two_parts(q, k, v, pk, pv, dim**-0.5, window)
        errors.append((got.double() - expected).abs().max().item())
    return errors, expected.abs().max().item()


def two_parts(q, k, v, pk, pv, scale, window):
    """shared_prefix_attention on raw tensors, back in (batch, heads, length, dim)."""
    prefix = pa.PrefixKV(layers={0: (pk, pv)}, length=pk.shape[2] + 100)
    token = pa._ACTIVE.set(prefix)
    try:
        out, _ = pa.shared_prefix_attention(
            types.SimpleNamespace(layer_idx=0), q, k, v, scaling=scale, sliding_window=window
        )
    finally:
        pa._ACTIVE.reset(token)
    return out.transpose(1, 2)


def exactness(device, dtype, lines, n: int, prefix_len: int, layers, archs):
    lines.append("\n## Exactness (float32, random weights): max |fast - naive| log-prob\n")
    lines.append("| model | prefix tokens | options | prefix | prefix_shared | same predictions |")
    lines.append("|---|---|---|---|---|---|")
    for arch in archs:
        lm = build(arch, device, torch.float32, layers)
        for option_lens in ((1, 1), (2, 3)):
            reqs = requests(n, prefix_len, 25, option_lens, lm.model.config.vocab_size)
            engines = ("prefix", "prefix_shared", "naive")
            out = {e: score_requests(lm, reqs, e, 8, True) for e in engines}
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
    if dtype == torch.float32:
        return
    lines.append(f"\n## {dtype}: max |prefix_shared - prefix| log-prob ({4 * n} examples)\n")
    lines.append("| model | prefix tokens | max diff | same predictions |")
    lines.append("|---|---|---|---|")
    for arch in archs:
        lm = build(arch, device, dtype, layers)
        reqs = requests(4 * n, prefix_len, 25, (1, 1), lm.model.config.vocab_size)
        a, b = (score_requests(lm, reqs, e, 64, True) for e in ("prefix_shared", "prefix"))
        lines.append(f"| {arch} | {prefix_len} | {max_diff(a, b):.2e} | {same_predictions(a, b)} |")
        del lm
        free_memory(device)


def load_legacy(path: str):
    """An older prefix_attention module from a file, for the micro-benchmark."""
    spec = importlib.util.spec_from_file_location("legacy_prefix_attention", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while decorating
    spec.loader.exec_module(module)
    return module


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn, device, reps: int = 10) -> float:
    """Median milliseconds of fn() after one warm-up call."""
    fn()
    times = []
    for _ in range(reps):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def attention_bench(device, dtype, batch_size, prefix_len, lines, legacy_path, compile_it, archs):
    """Milliseconds per call of one layer's shared-prefix attention, per implementation."""
    lines.append(
        f"\n## Attention alone ({dtype}, batch {batch_size}, suffix 25, prefix {prefix_len}): "
        "ms per layer call\n"
    )
    lines.append("| model | implementation | ms |")
    lines.append("|---|---|---|")
    legacy = load_legacy(legacy_path) if legacy_path else None
    for arch in archs:
        run = layer_call(ARCHS[arch], device, dtype, batch_size, prefix_len)
        cases = [("fused kernels (default)", contextlib.nullcontext, pa)]
        cases.append(("manual (matmul + logsumexp per part)", manual_attention, pa))
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
    layer = types.SimpleNamespace(layer_idx=0)

    def run(module):
        token = module._ACTIVE.set(module.PrefixKV(layers={0: (pk, pv)}, length=prefix_len))
        try:
            module.shared_prefix_attention(layer, q, k, v, scaling=dim**-0.5)
        finally:
            module._ACTIVE.reset(token)

    return run


def compiled_manual(run, device) -> str:
    """The manual path under torch.compile: its compile time and ms per call (or the error)."""
    manual = pa._manual
    started = time.perf_counter()
    try:
        pa._manual = torch.compile(manual, dynamic=False)
        with manual_attention():
            run(pa)
            warm = time.perf_counter() - started
            ms = time_call(functools.partial(run, pa), device)
        return f"torch.compile(manual), {warm:.0f} s to compile | {ms:.2f}"
    except Exception as err:  # a compiler missing on the machine is a result too
        return f"torch.compile(manual) failed: {type(err).__name__}: {str(err)[:80]} |"
    finally:
        pa._manual = manual


class ChosenBatchSize(logging.Handler):
    """Collects what batch_size=auto logs."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def rate(lm, reqs, engine, batch_size, device) -> float:
    lm.memo.clear()
    warm = 2 * (batch_size if isinstance(batch_size, int) else 1024)
    score_requests(lm, reqs[:warm], engine, batch_size, False)  # warm-up
    lm.memo.clear()
    sync(device)
    start = time.perf_counter()
    score_requests(lm, reqs, engine, batch_size, False)
    sync(device)
    return len(reqs) / (time.perf_counter() - start)


def throughput(device, dtype, n, batch_size, prefix_len, lines, layers, archs):
    lines.append(
        f"\n## Throughput ({dtype}, batch {batch_size}, {n} examples, "
        f"suffix ~25 tokens, single-token options)\n"
    )
    lines.append("| model | prefix tokens | engine | batch size | examples/s |")
    lines.append("|---|---|---|---|---|")
    chosen = ChosenBatchSize()
    engine_log = logging.getLogger("icl.lm.engines")
    engine_log.addHandler(chosen)
    engine_log.setLevel(logging.INFO)
    for arch in archs:
        lm = build(arch, device, dtype, layers)
        vocab = lm.model.config.vocab_size
        cases = [
            (0, "suffix only", "prefix", batch_size, contextlib.nullcontext),
            (prefix_len, "prefix", "prefix", batch_size, contextlib.nullcontext),
            (prefix_len, "prefix_shared, manual", "prefix_shared", batch_size, manual_attention),
            (prefix_len, "prefix_shared", "prefix_shared", batch_size, contextlib.nullcontext),
            (prefix_len, "prefix_shared", "prefix_shared", "auto", contextlib.nullcontext),
        ]
        for plen, label, engine, size, context in cases:
            reqs = requests(n, plen, 25, (1, 1), vocab, seed=plen)
            if plen == 0:
                reqs = [ScoreRequest((), r.query, r.options) for r in reqs]
            chosen.messages.clear()
            with context():
                value = rate(lm, reqs, engine, size, device)
            shown = size if size != "auto" else f"auto: {auto_size(chosen.messages)}"
            lines.append(f"| {arch} | {plen} | {label} | {shown} | {value:,.0f} |")
            print(lines[-1], flush=True)
            for message in dict.fromkeys(chosen.messages):
                print(f"  {message}", flush=True)
        del lm
        free_memory(device)
    engine_log.removeHandler(chosen)


def auto_size(messages: list[str]) -> str:
    sizes = [m.split(": ")[1].split(" rows")[0] for m in messages if m.startswith("batch_size")]
    return sizes[-1] if sizes else "16 (not CUDA)"


def profile(device, dtype, n, batch_size, prefix_len, engine, lines, layers):
    """Where the time of one scoring call goes: the top operators by CPU and by device time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    lm = build("smollm2-135m", device, dtype, layers)
    reqs = requests(n, prefix_len, 25, (1, 1), lm.model.config.vocab_size)
    rate(lm, reqs[: batch_size * 2], engine, batch_size, device)  # warm-up
    lm.memo.clear()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    started = time.perf_counter()
    with torch_profile(activities=activities) as prof:
        score_requests(lm, reqs, engine, batch_size, False)
        sync(device)
    wall = time.perf_counter() - started
    lines.append(f"\n{n} examples in {wall:.3f} s under the profiler ({n / wall:,.0f}/s)")
    for key in ("self_cpu_time_total",) + (("cuda_time_total",) if device.type == "cuda" else ()):
        lines.append(f"\n## Profile of engine {engine}, sorted by {key}\n\n```")
        lines.append(prof.key_averages().table(sort_by=key, row_limit=18, max_name_column_width=60))
        lines.append("```")


def write(lines, out):
    text = "\n".join(lines) + "\n"
    print(text, flush=True)
    if out:
        Path(out).write_text(text)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--n", type=int, default=8192)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--prefix-len", type=int, default=450)
    parser.add_argument("--exact-n", type=int, default=24)
    parser.add_argument("--exact-prefix-len", type=int, default=600, help="past Gemma's window")
    parser.add_argument("--archs", default=",".join(ARCHS), help="comma-separated")
    parser.add_argument("--layers", type=int, default=None, help="shallower models (smoke test)")
    parser.add_argument("--legacy-attention", default=None, help="an older prefix_attention.py")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile(manual)")
    parser.add_argument("--skip-exact", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--profile", default=None, help="an engine to profile instead")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    archs = [a for a in args.archs.split(",") if a]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    import transformers

    lines = [
        f"# GPU check: {name}, torch {torch.__version__}, transformers {transformers.__version__}"
    ]
    if args.profile:
        size, plen = args.batch_size, args.prefix_len
        profile(device, dtype, args.n, size, plen, args.profile, lines, args.layers)
        return write(lines, args.out)
    if not args.skip_exact:
        attention_check(device, lines)
        exactness(device, dtype, lines, args.exact_n, args.exact_prefix_len, args.layers, archs)
        print("\n".join(lines), flush=True)
    attention_bench(
        device,
        dtype,
        args.batch_size,
        args.prefix_len,
        lines,
        args.legacy_attention,
        args.compile,
        archs,
    )
    if not args.skip_throughput:
        size, plen = args.batch_size, args.prefix_len
        throughput(device, dtype, args.n, size, plen, lines, args.layers, archs)
    write(lines, args.out)


if __name__ == "__main__":
    main()
