"""Free generation against lm-evaluation-harness's ``generate_until`` on the same prompts.

SmolLM2-135M, SST-2, k fixed demonstrations (the first k training rows, lm-eval's ``first_n``),
greedy, ``until`` the newline, at most 5 new tokens. Both tools run in this one process, one
after the other, on the same model folder (icl's dequantised cache): icl decodes each example
over its demonstrations' KV cache, encoded once (``icl.lm.decoding``); lm-eval's HFLM encodes
every whole prompt. Reported: identical answers, examples/s of each, and the ratio.

    python -m benchmarks.generation [--n-test 100] [--k 16] [--lm-eval-batch-size 8]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from benchmarks import icl_side  # noqa: E402
from benchmarks.vs_lm_eval.prompts import native_requests, prompt_texts  # noqa: E402
from benchmarks.vs_lm_eval.task import MODELS, read_sst2  # noqa: E402

MAX_NEW = 5


def icl_answers(lm, requests) -> tuple[list[str], float]:
    """icl's greedy answers (text up to the newline) and the seconds they took."""
    t0 = time.perf_counter()
    answers = icl_side.greedy_answers(lm, requests, MAX_NEW)
    return [a.split("\n")[0] for a in answers], time.perf_counter() - t0


def lm_eval_answers(folder: Path, contexts: list[str], batch_size: int):
    """lm-eval's greedy answers through HFLM.generate_until and the seconds they took."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=str(folder), device="cpu", batch_size=batch_size, dtype="float32")
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
    parser.add_argument("--data-dir", type=Path, default=Path(icl_side.default_data_dir()))
    args = parser.parse_args(argv)
    demos = read_sst2(args.data_dir / "sst2" / "stsa.binary.train", args.k)
    tests = read_sst2(args.data_dir / "sst2" / "stsa.binary.test", args.n_test)
    cfg = icl_side.model_config(MODELS["smollm2-135m"], "cpu", "float32")
    lm = icl_side.load_language_model(cfg)
    requests, dropped = native_requests(lm, demos, tests)
    assert dropped == 0, "every prompt fits the context"
    ours, icl_s = icl_answers(lm, requests)
    theirs, lm_eval_s = lm_eval_answers(
        icl_side.model_folder(cfg), prompt_texts(demos, tests), args.lm_eval_batch_size
    )
    same = sum(a.strip() == b.strip() for a, b in zip(ours, theirs))
    n = len(tests)
    print(f"generation, SmolLM2-135M, SST-2, k={args.k}, {n} examples, greedy until '\\n':")
    print(f"  identical answers: {same}/{n} ({100 * same / n:.0f}%)")
    print(f"  icl {n / icl_s:.2f} ex/s ({icl_s:.1f} s); lm-eval {n / lm_eval_s:.2f} ex/s")
    print(f"  ({lm_eval_s:.1f} s, batch {args.lm_eval_batch_size}): {lm_eval_s / icl_s:.1f}x")


if __name__ == "__main__":
    main()
