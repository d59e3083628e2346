"""Clocks, memory and subprocesses: what every measured part shares."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

# children run this package as a module (from the parent's working directory, the repo root)
ENTRY_MODULE = "benchmarks.vs_lm_eval"


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def peak_gpu_mib(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    import torch

    return torch.cuda.max_memory_allocated() / 2**20


def warm_up(model, device) -> None:
    """One small forward before anything is timed (thread pools, kernels, allocator)."""
    import torch

    with torch.inference_mode():
        model(input_ids=torch.arange(100, 164, device=device).view(2, 32))
    sync(str(device))


def self_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def write_json(path: str, obj) -> None:
    Path(path).write_text(json.dumps(obj))


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_child(label: str, worker_args: list[str], result_path: Path) -> dict:
    """Run a worker of this package; return its JSON plus wall time and peak RSS from wait4."""
    cmd = [
        sys.executable,
        "-m",
        ENTRY_MODULE,
        *worker_args,
        "--result",
        str(result_path),
    ]
    log(f"[{label}] {shlex.join(cmd[1:])}")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"worker {label} failed with exit code {proc.returncode}")
    out = json.loads(result_path.read_text())
    out["wall_s"] = wall
    out["rss_mib"] = usage.ru_maxrss / 1024  # this child's own peak, KiB on Linux
    log(f"[{label}] done in {wall:.1f} s, peak RSS {out['rss_mib']:.0f} MiB")
    return out
