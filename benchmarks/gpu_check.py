"""One prepared GPU check: engine exactness on the device and examples/s of the scoring engines.

Runs where only torch and transformers are installed (no model weights travel): models are the
SmolLM2-135M and Gemma-3-270M architectures with random weights, which cost the same to run.

    PYTHONPATH=. python benchmarks/gpu_check.py --device cuda --out results/gpu_check.md
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch

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


def build(arch: str, device, dtype) -> LanguageModel:
    from transformers import AutoConfig, AutoModelForCausalLM

    spec = dict(ARCHS[arch])
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


def exactness(device, lines, n: int, prefix_len: int):
    lines.append("\n## Exactness (float32, random weights): max |fast - naive| log-prob\n")
    lines.append("| model | prefix tokens | options | prefix | prefix_shared | same predictions |")
    lines.append("|---|---|---|---|---|---|")
    for arch in ARCHS:
        lm = build(arch, device, torch.float32)
        for option_lens in ((1, 1), (2, 3)):
            reqs = requests(n, prefix_len, 25, option_lens, lm.model.config.vocab_size)
            out = {
                e: score_requests(lm, reqs, e, 8, True)
                for e in ("prefix", "prefix_shared", "naive")
            }
            same = all(
                max(range(len(x.option_logprobs)), key=lambda o: sum(x.option_logprobs[o]))
                == max(range(len(y.option_logprobs)), key=lambda o: sum(y.option_logprobs[o]))
                for x, y in zip(out["prefix"], out["naive"])
            )
            fast, copy = (
                max_diff(out["prefix"], out["naive"]),
                max_diff(out["prefix_shared"], out["naive"]),
            )
            lines.append(
                f"| {arch} | {prefix_len} | {option_lens} | {fast:.2e} | {copy:.2e} | {same} |"
            )
        del lm
        if device.type == "cuda":
            torch.cuda.empty_cache()


def rate(lm, reqs, engine, batch_size, device) -> float:
    lm.memo.clear()
    score_requests(lm, reqs[: batch_size * 2], engine, batch_size, False)  # warm-up
    lm.memo.clear()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    score_requests(lm, reqs, engine, batch_size, False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return len(reqs) / (time.perf_counter() - start)


def throughput(device, dtype, n, batch_size, prefix_len, lines):
    lines.append(
        f"\n## Throughput ({dtype}, batch {batch_size}, {n} examples, "
        f"suffix ~25 tokens, single-token options)\n"
    )
    lines.append("| model | prefix tokens | engine | examples/s |")
    lines.append("|---|---|---|---|")
    for arch in ARCHS:
        lm = build(arch, device, dtype)
        vocab = lm.model.config.vocab_size
        cases = [
            (0, "suffix only", "prefix"),
            (prefix_len, "prefix", "prefix"),
            (prefix_len, "prefix_shared", "prefix_shared"),
        ]
        for plen, label, engine in cases:
            reqs = requests(n, plen, 25, (1, 1), vocab, seed=plen)
            if plen == 0:
                reqs = [ScoreRequest((), r.query, r.options) for r in reqs]
            value = rate(lm, reqs, engine, batch_size, device)
            lines.append(f"| {arch} | {plen} | {label} | {value:,.0f} |")
            print(lines[-1], flush=True)
        del lm
        if device.type == "cuda":
            torch.cuda.empty_cache()


def profile(device, dtype, n, batch_size, prefix_len, engine, lines):
    """Where the time of one scoring call goes: the top operators by CPU and by device time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    lm = build("smollm2-135m", device, dtype)
    reqs = requests(n, prefix_len, 25, (1, 1), lm.model.config.vocab_size)
    rate(lm, reqs[: batch_size * 2], engine, batch_size, device)  # warm-up
    lm.memo.clear()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        score_requests(lm, reqs, engine, batch_size, False)
        if device.type == "cuda":
            torch.cuda.synchronize()
    for key in ("cpu_time_total", "self_cpu_time_total") + (
        ("cuda_time_total",) if device.type == "cuda" else ()
    ):
        lines.append(f"\n## Profile of engine {engine}, sorted by {key}\n\n```")
        lines.append(prof.key_averages().table(sort_by=key, row_limit=18, max_name_column_width=60))
        lines.append("```")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--n", type=int, default=8192)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--prefix-len", type=int, default=450)
    parser.add_argument("--exact-n", type=int, default=24)
    parser.add_argument("--exact-prefix-len", type=int, default=600, help="past Gemma's window")
    parser.add_argument("--profile", default=None, help="an engine to profile instead")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    import transformers

    lines = [
        f"# GPU check: {name}, torch {torch.__version__}, transformers {transformers.__version__}"
    ]
    if args.profile:
        profile(
            device,
            getattr(torch, args.dtype),
            args.n,
            args.batch_size,
            args.prefix_len,
            args.profile,
            lines,
        )
        text = "\n".join(lines) + "\n"
        print(text)
        if args.out:
            Path(args.out).write_text(text)
        return
    exactness(device, lines, args.exact_n, args.exact_prefix_len)
    print("\n".join(lines), flush=True)
    throughput(device, getattr(torch, args.dtype), args.n, args.batch_size, args.prefix_len, lines)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text)


if __name__ == "__main__":
    main()
