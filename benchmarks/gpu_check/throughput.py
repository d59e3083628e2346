"""Examples/s of the scoring engines per model, with batch_size=auto's choice; and a profile
of one scoring call."""

from __future__ import annotations

import contextlib
import logging
import time

from benchmarks import icl_side
from benchmarks.gpu_check.models import build, free_memory, requests
from benchmarks.gpu_check.timing import sync


class ChosenBatchSize(logging.Handler):
    """Collects what batch_size=auto logs."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def rate(lm, reqs, engine, batch_size, device) -> float:
    """Examples/s of one scoring call after a warm-up call on the first rows (icl keeps no
    scores between calls, so the timed call computes every request)."""
    warm = 2 * (batch_size if isinstance(batch_size, int) else 1024)
    icl_side.score(lm, reqs[:warm], engine, batch_size, want_query=False)  # warm-up
    sync(device)
    start = time.perf_counter()
    icl_side.score(lm, reqs, engine, batch_size, want_query=False)
    sync(device)
    return len(reqs) / (time.perf_counter() - start)


def cases(batch_size, prefix_len: int) -> list[tuple]:
    """(prefix tokens, label, engine, batch size, attention context) of each table row."""
    plain = contextlib.nullcontext
    manual = icl_side.manual_attention
    return [
        (0, "suffix only", "prefix", batch_size, plain),
        (prefix_len, "prefix", "prefix", batch_size, plain),
        (prefix_len, "prefix_shared, manual", "prefix_shared", batch_size, manual),
        (prefix_len, "prefix_shared", "prefix_shared", batch_size, plain),
        (prefix_len, "prefix_shared", "prefix_shared", "auto", plain),
    ]


def throughput(device, dtype, n, batch_size, prefix_len, lines, layers, archs):
    lines.append(
        f"\n## Throughput ({dtype}, batch {batch_size}, {n} examples, "
        f"suffix ~25 tokens, single-token options)\n"
    )
    lines.append("| model | prefix tokens | engine | batch size | examples/s |")
    lines.append("|---|---|---|---|---|")
    chosen = ChosenBatchSize()
    engine_log = logging.getLogger(icl_side.LOGGER)
    engine_log.addHandler(chosen)
    engine_log.setLevel(logging.INFO)
    for arch in archs:
        lm = build(arch, device, dtype, layers)
        vocab = lm.model.config.vocab_size
        for plen, label, engine, size, context in cases(batch_size, prefix_len):
            reqs = requests(n, plen, 25, (1, 1), vocab, seed=plen)
            if plen == 0:
                reqs = [icl_side.ScoreRequest((), r.query, r.options) for r in reqs]
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
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    started = time.perf_counter()
    with torch_profile(activities=activities) as prof:
        icl_side.score(lm, reqs, engine, batch_size, want_query=False)
        sync(device)
    wall = time.perf_counter() - started
    lines.append(f"\n{n} examples in {wall:.3f} s under the profiler ({n / wall:,.0f}/s)")
    for key in ("self_cpu_time_total",) + (("cuda_time_total",) if device.type == "cuda" else ()):
        lines.append(f"\n## Profile of engine {engine}, sorted by {key}\n\n```")
        lines.append(prof.key_averages().table(sort_by=key, row_limit=18, max_name_column_width=60))
        lines.append("```")
