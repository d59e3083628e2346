"""The command line: the parent's flags, and the hidden flags of its workers."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import benchmarks.vs_lm_eval as package
from benchmarks.vs_lm_eval.task import MODELS
from benchmarks.vs_lm_eval.timing import write_json

BENCHMARKS = Path(__file__).resolve().parents[1]

# imported only in the worker that runs: the lm-eval worker must not load icl
WORKERS = {
    "icl": "icl_workers:worker_icl",
    "raw": "icl_workers:worker_raw",
    "scaling": "icl_workers:worker_scaling",
    "lm_eval": "lm_eval_side:worker_lm_eval",
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"python -m {package.__name__}",
        description=package.__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--n-test", type=int, default=200, help="first N lines of the SST-2 test file")
    p.add_argument("--k", type=int, default=16, help="demonstrations for the comparison")
    p.add_argument("--batch-size", type=int, default=16, help="for both tools")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--skip-lm-eval", action="store_true", help="icl only (no comparison)")
    p.add_argument(
        "--engines",
        default="prefix,naive",
        help="more icl engines to compare with lm-eval (the engine auto picks always runs)",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="icl's fast engines: timed runs per measurement (the median is reported)",
    )
    p.add_argument("--skip-naive", action="store_true", help="skip icl's naive engine")
    p.add_argument(
        "--naive-n-test",
        type=int,
        default=0,
        help="score only the first N examples with the slow naive engine (0: all)",
    )
    p.add_argument(
        "--end-to-end",
        action="store_true",
        help="run only the end-to-end comparison (icl-run and lm-eval as subprocesses at two "
        "sizes; benchmarks/end_to_end.py) and write its section of the results file",
    )
    add_table_flags(p)
    add_worker_flags(p)
    return p


def add_table_flags(p: argparse.ArgumentParser) -> None:
    """The raw-rate and scaling tables, the data folder and the results file."""
    p.add_argument("--skip-raw", action="store_true", help="skip the raw forward-rate run")
    p.add_argument("--skip-scaling", action="store_true", help="skip the k / model scaling table")
    p.add_argument("--ks", default="0,4,16,32", help="k values of the scaling table")
    p.add_argument(
        "--scaling-models",
        default="smollm2-135m,gemma3-270m",
        help=f"models of the scaling table, of {sorted(MODELS)}",
    )
    p.add_argument("--raw-batch", type=int, default=16, help="raw forward: sequences")
    p.add_argument("--raw-len", type=int, default=512, help="raw forward: tokens per sequence")
    p.add_argument("--raw-reps", type=int, default=3, help="raw forward: timed repeats (best)")
    p.add_argument(
        "--data-dir",
        default=None,
        help="folder with stsa.binary.{train,test} (default: icl's data dir /sst2)",
    )
    p.add_argument(
        "--out", default=str(BENCHMARKS / "RESULTS.md"), help="markdown results file ('' to skip)"
    )


def add_worker_flags(p: argparse.ArgumentParser) -> None:
    """Flags only the parent passes to its workers (hidden from --help)."""
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    p.add_argument("--engine", help=argparse.SUPPRESS)
    p.add_argument("--variant", choices=["matched", "native"], help=argparse.SUPPRESS)
    p.add_argument("--model", default="smollm2-135m", help=argparse.SUPPRESS)
    p.add_argument("--folder", help=argparse.SUPPRESS)
    p.add_argument("--task-dir", help=argparse.SUPPRESS)
    p.add_argument("--add-bos", type=int, default=0, help=argparse.SUPPRESS)


def worker(name: str):
    """The function of a worker, importing only its own module."""
    module, function = WORKERS[name].split(":")
    return getattr(importlib.import_module(f"{package.__name__}.{module}"), function)


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    if args.worker:
        write_json(args.result, worker(args.worker)(args))
    elif args.end_to_end:
        from benchmarks.end_to_end import main as end_to_end

        end_to_end(["--batch-size", str(args.batch_size), "--out", args.out])
    else:
        from benchmarks.vs_lm_eval.parent import parent  # loads icl; workers import their own

        parent(args)
