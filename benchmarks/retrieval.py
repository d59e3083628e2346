"""Retrieval-mode scoring against lm-evaluation-harness on the same per-example prompts.

SmolLM2-135M, SST-2, the `review` template, k kNN demonstrations per test example (icl's
``demos.selection=knn``: MiniLM embeddings, nearest last), the first ``--n-test`` test examples
icl samples. Every prompt has demonstrations of its own, so no demonstration block is shared.
Both tools run in this one process, one after the other, on the same model folder (icl's
dequantised cache), float32, one batch size: icl scores the requests its score method builds
(``icl.lm.score_requests``, the engine ``auto`` picks, with the per-example grouping a
retrieval cell uses: all single-token options from one pass, the prompts' common start once,
length-sorted batches, only the read positions through the vocabulary head); lm-eval's HFLM
scores each context's two continuations with ``loglikelihood`` (its tokenization, its
one-token-continuation sharing, its batching). Reported: identical predictions, the largest
log-prob difference, examples/s of each and the ratio.

Also timed, on icl's batches: the model's transformer body alone over every prompt position
(no vocabulary head at all). These prompts share almost no tokens, so every exact scorer runs
every position through the body; that time is the floor, and lm-eval's seconds over it the
largest ratio exactness allows on this model (``--model gemma3-270m``: a 262k-word head, where
the head is most of the work per token).

    python -m benchmarks.retrieval [--n-test 100] [--k 8] [--batch-size 16] [--model NAME]
        [--unmerged]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from benchmarks import icl_side  # noqa: E402
from benchmarks.vs_lm_eval.task import ANSWER_SEP, LABEL_WORDS, MODELS  # noqa: E402


def icl_scores(lm, requests, batch_size: int, merge: bool):
    """Each example's option log-probs by icl, and the seconds the scoring took."""
    t0 = time.perf_counter()
    results = icl_side.score(lm, requests, "auto", batch_size, want_query=False, merge=merge)
    seconds = time.perf_counter() - t0
    return [[sum(o) for o in r.option_logprobs] for r in results], seconds


def body_floor_seconds(lm, requests, batch_size: int) -> float:
    """Seconds the transformer body alone takes over every position of every prompt, in
    length-sorted padded batches of ``batch_size`` (no head, nothing read): what any exact
    scorer pays when the prompts share no prefix."""
    sequences = sorted((list(r.prefix) + list(r.query) for r in requests), key=len, reverse=True)
    body = lm.model.base_model
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(sequences), batch_size):
            ids, mask, _ = icl_side.padded(sequences[i : i + batch_size], 0, lm.device)
            body(input_ids=ids, attention_mask=mask, use_cache=False)
    return time.perf_counter() - t0


def lm_eval_scores(folder, contexts: list[str], batch_size: int, add_bos: bool):
    """Each example's option log-probs by lm-eval's HFLM.loglikelihood, and its seconds."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=str(folder), device="cpu", batch_size=batch_size, dtype="float32",
              add_bos_token=add_bos)  # fmt: skip
    requests = [
        Instance("loglikelihood", doc={}, arguments=(ctx, ANSWER_SEP + word), idx=j)
        for ctx in contexts
        for j, word in enumerate(LABEL_WORDS)
    ]
    t0 = time.perf_counter()
    found = lm.loglikelihood(requests)
    seconds = time.perf_counter() - t0
    n = len(LABEL_WORDS)
    return [[ll for ll, _ in found[i : i + n]] for i in range(0, len(found), n)], seconds


def argmax(values: list[float]) -> int:
    return max(range(len(values)), key=lambda i: (values[i], -i))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-test", type=int, default=100)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--model", choices=sorted(MODELS), default="smollm2-135m")
    parser.add_argument("--unmerged", action="store_true", help="also time icl ungrouped")
    args = parser.parse_args(argv)
    plan = icl_side.retrieval_plan([
        "task=sst2", f"model={args.model}", "template=review", "demos.selection=knn",
        f"demos.k={args.k}", f"eval.n_test={args.n_test}", "model.dtype=float32",
        "model.device=cpu",
    ])  # fmt: skip
    assert list(plan.template.label_words) == LABEL_WORDS
    cfg = icl_side.model_config(MODELS[args.model], "cpu", "float32")
    lm = icl_side.load_language_model(cfg)  # lm-eval is given its add_bos_token to match
    requests, contexts = icl_side.retrieval_prompts(lm, plan)
    icl_side.score(lm, requests[:2], "auto", args.batch_size, False, True)  # warm-up
    ours, icl_s = icl_scores(lm, requests, args.batch_size, merge=True)
    lines = [f"icl (per-example grouping): {args.n_test / icl_s:.3f} ex/s ({icl_s:.1f} s)"]
    if args.unmerged:
        _, plain_s = icl_scores(lm, requests, args.batch_size, merge=False)
        lines.append(f"icl (each prefix alone): {args.n_test / plain_s:.3f} ex/s ({plain_s:.1f} s)")
    floor_s = body_floor_seconds(lm, requests, args.batch_size)
    folder = icl_side.model_folder(cfg)
    theirs, lm_eval_s = lm_eval_scores(folder, contexts, args.batch_size, lm.adds_bos)
    same = sum(argmax(a) == argmax(b) for a, b in zip(ours, theirs))
    worst = max(abs(x - y) for a, b in zip(ours, theirs) for x, y in zip(a, b))
    tokens = sum(len(r.prefix) + len(r.query) for r in requests)
    n = len(requests)
    print(f"retrieval-mode scoring, {args.model}, SST-2, k={args.k} kNN, {n} examples")
    print(f"  ({tokens / n:.0f} prompt tokens each, own demonstrations), batch {args.batch_size}:")
    print(f"  identical predictions: {same}/{n}; largest |log p difference| {worst:.2e}")
    for line in lines:
        print(f"  {line}")
    print(f"  lm-eval {n / lm_eval_s:.3f} ex/s ({lm_eval_s:.1f} s): {lm_eval_s / icl_s:.2f}x")
    print(f"  the body alone over every position (the exact floor): {floor_s:.1f} s;")
    print(f"    icl / floor {icl_s / floor_s:.2f}, lm-eval / floor {lm_eval_s / floor_s:.2f}x"
          " (the most an exact scorer can gain here)")  # fmt: skip


if __name__ == "__main__":
    main()
