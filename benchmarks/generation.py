"""Free generation against lm-evaluation-harness's ``generate_until`` on the same prompts.

SmolLM2-135M, SST-2, k fixed demonstrations (the first k training rows, lm-eval's ``first_n``),
greedy, ``until`` the newline, at most 5 new tokens. Both tools run in this one process, on the
same model folder (icl's dequantised cache), in turn: icl decodes the examples over their
demonstrations' KV cache, encoded once (``icl.lm.decoding``), side by side in batches (its
default) and one at a time; lm-eval's HFLM encodes every whole prompt. Each is timed
``--repeats`` times, interleaved so a busy machine slows all alike; the median is reported
and every run listed. Reported: identical answers, examples/s of each, and the ratios.

    python -m benchmarks.generation [--n-test 100] [--k 16] [--lm-eval-batch-size 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from benchmarks import icl_side  # noqa: E402
from benchmarks.vs_lm_eval.prompts import native_requests, prompt_texts  # noqa: E402
from benchmarks.vs_lm_eval.task import MODELS, read_sst2  # noqa: E402

MAX_NEW = 5


def icl_answers(lm, requests, batch_size) -> tuple[list[str], float]:
    """icl's greedy answers (text up to the newline) and the seconds they took."""
    t0 = time.perf_counter()
    answers = icl_side.greedy_answers(lm, requests, MAX_NEW, batch_size)
    return [a.split("\n")[0] for a in answers], time.perf_counter() - t0


def lm_eval_model(folder: Path, batch_size: int):
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=str(folder), device="cpu", batch_size=batch_size, dtype="float32")


def lm_eval_answers(lm, contexts: list[str]):
    """lm-eval's greedy answers through HFLM.generate_until and the seconds they took."""
    from lm_eval.api.instance import Instance

    until = {"until": ["\n"], "max_gen_toks": MAX_NEW, "do_sample": False}
    requests = [
        Instance("generate_until", doc={}, arguments=(ctx, dict(until)), idx=i)
        for i, ctx in enumerate(contexts)
    ]
    t0 = time.perf_counter()
    answers = lm.generate_until(requests)
    return [a.split("\n")[0] for a in answers], time.perf_counter() - t0


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-test", type=int, default=100)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--lm-eval-batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, default=Path(icl_side.default_data_dir()))
    args = parser.parse_args(argv)
    demos = read_sst2(args.data_dir / "sst2" / "stsa.binary.train", args.k)
    tests = read_sst2(args.data_dir / "sst2" / "stsa.binary.test", args.n_test)
    cfg = icl_side.model_config(MODELS["smollm2-135m"], "cpu", "float32")
    lm = icl_side.load_language_model(cfg)
    requests, dropped = native_requests(lm, demos, tests)
    assert dropped == 0, "every prompt fits the context"
    theirs_lm = lm_eval_model(icl_side.model_folder(cfg), args.lm_eval_batch_size)
    contexts = prompt_texts(demos, tests)
    runs = {"batched": [], "alone": [], "lm-eval": []}
    answers = {}
    load = [os.getloadavg()[0]]
    for _ in range(args.repeats):  # interleaved: load on the machine hits every tool alike
        for name, call in [
            ("batched", lambda: icl_answers(lm, requests, "auto")),
            ("alone", lambda: icl_answers(lm, requests, 1)),
            ("lm-eval", lambda: lm_eval_answers(theirs_lm, contexts)),
        ]:
            answers[name], seconds = call()
            runs[name].append(seconds)
    load.append(os.getloadavg()[0])
    n = len(tests)
    median = {name: statistics.median(times) for name, times in runs.items()}
    print(f"generation, SmolLM2-135M, SST-2, k={args.k}, {n} examples, greedy until '\\n', "
          f"load average {load[0]:.1f} -> {load[1]:.1f}:")  # fmt: skip
    for name in ("batched", "alone"):
        same = sum(a.strip() == b.strip() for a, b in zip(answers[name], answers["lm-eval"]))
        print(f"  icl {name}: identical answers to lm-eval {same}/{n}")
    print("| tool | median s | examples/s | every run (s) |\n|---|---|---|---|")
    labels = {
        "batched": "icl, side by side (decoding.batch_size=auto: 16)",
        "alone": "icl, one at a time (decoding.batch_size=1)",
        "lm-eval": f"lm-eval 0.4.13 generate_until, batch {args.lm_eval_batch_size}",
    }
    for name, label in labels.items():
        every = ", ".join(f"{t:.1f}" for t in runs[name])
        print(f"| {label} | {median[name]:.1f} | {n / median[name]:.2f} | {every} |")
    print(f"icl batched / lm-eval: {median['lm-eval'] / median['batched']:.1f}x; "
          f"icl one at a time / lm-eval: {median['lm-eval'] / median['alone']:.1f}x; "
          f"batched / one at a time: {median['alone'] / median['batched']:.1f}x")  # fmt: skip


if __name__ == "__main__":
    main()
