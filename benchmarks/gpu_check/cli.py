"""The command line: which sections run, on which device, dtype and sizes."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import benchmarks.gpu_check as package
from benchmarks.gpu_check.attention import attention_check
from benchmarks.gpu_check.attention_bench import attention_bench
from benchmarks.gpu_check.exactness import exactness
from benchmarks.gpu_check.models import ARCHS
from benchmarks.gpu_check.throughput import profile, throughput


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m {package.__name__}", description=package.__doc__
    )
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
    return parser


def write(lines, out):
    text = "\n".join(lines) + "\n"
    print(text, flush=True)
    if out:
        Path(out).write_text(text)


def main():
    args = parser().parse_args()
    import transformers

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    archs = [a for a in args.archs.split(",") if a]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    lines = [
        f"# GPU check: {name}, torch {torch.__version__}, transformers {transformers.__version__}"
    ]
    size, plen = args.batch_size, args.prefix_len
    if args.profile:
        profile(device, dtype, args.n, size, plen, args.profile, lines, args.layers)
        return write(lines, args.out)
    if not args.skip_exact:
        attention_check(device, lines)
        exactness(device, dtype, lines, args.exact_n, args.exact_prefix_len, args.layers, archs)
        print("\n".join(lines), flush=True)
    legacy = args.legacy_attention
    attention_bench(device, dtype, size, plen, lines, legacy, args.compile, archs)
    if not args.skip_throughput:
        throughput(device, dtype, args.n, size, plen, lines, args.layers, archs)
    write(lines, args.out)
