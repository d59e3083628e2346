"""The machine a run measured on: CPU, cores, library versions, GPU."""

from __future__ import annotations

import datetime as dt
import importlib.metadata as md
import os
import platform
from pathlib import Path


def cpu_name() -> str:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return cpu


def version(name: str) -> str:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return "not installed"


def machine_info(device: str) -> dict:
    import torch

    info = {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host_cpu": cpu_name(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "transformers": version("transformers"),
        "lm_eval": version("lm-eval"),
        "icl": version("icl"),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info
