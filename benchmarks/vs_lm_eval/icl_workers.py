"""The measured icl parts, each run in a worker process: one engine on the comparison prompts,
the model's raw forward rate, and the scaling table over k."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from benchmarks import icl_side
from benchmarks.vs_lm_eval.prompts import matched_requests, native_requests, tokens_to_compute
from benchmarks.vs_lm_eval.task import MODELS
from benchmarks.vs_lm_eval.timing import peak_gpu_mib, self_rss_mib, sync, warm_up


def load_icl_model(args, name: str = "smollm2-135m"):
    """icl's LanguageModel, its load time, and one warm-up forward outside all timings."""
    t0 = time.perf_counter()
    lm = icl_side.load_language_model(icl_side.model_config(MODELS[name], args.device, args.dtype))
    load_s = time.perf_counter() - t0
    warm_up(lm.model, lm.device)
    return lm, load_s


def score_timed(lm, requests, engine: str, batch_size: int, device: str, repeats: int = 1):
    """Scores and the median wall time of ``repeats`` runs (a short run is easily disturbed
    by a busy moment of the machine; lm-eval's one long run averages over minutes).

    icl keeps no scores between calls (no memo is passed), so every run computes them all.
    """
    times = []
    for _ in range(max(repeats, 1)):
        sync(device)
        t0 = time.perf_counter()
        results = icl_side.score(lm, requests, engine, batch_size, want_query=False)
        sync(device)
        times.append(time.perf_counter() - t0)
    return results, statistics.median(times), times


def summarise(results) -> dict:
    sums = [[float(sum(lp)) for lp in r.option_logprobs] for r in results]
    preds = [max(range(len(s)), key=lambda i: (s[i], -i)) for s in sums]
    return {"option_logprob": sums, "pred": preds}


def request_stats(requests) -> dict:
    """Token counts of a set of requests."""
    return {
        "prefix_tokens": len(requests[0].prefix),
        "tokens_to_compute": tokens_to_compute(requests),
        "prompt_tokens_mean": sum(len(r.prefix) + len(r.query) for r in requests) / len(requests),
    }


def worker_icl(args) -> dict:
    """One engine of icl on SmolLM2: matched prompts (lm-eval's tokens), optionally native."""
    import torch

    data = json.loads(Path(args.spec).read_text())
    demos, tests = data["demos"], data["tests"]
    if args.engine == "naive" and args.naive_n_test:
        tests = tests[: args.naive_n_test]
    lm, load_s = load_icl_model(args)
    out = {
        "engine": args.engine,
        "load_s": load_s,
        "adds_bos": lm.adds_bos,
        "device": str(lm.device),
        "dtype": str(next(lm.model.parameters()).dtype),
        "torch_threads": torch.get_num_threads(),
        "variants": {},
    }
    for variant in [args.variant]:
        out["variants"][variant] = icl_variant(args, lm, variant, demos, tests, out)
    out["self_rss_mib"] = self_rss_mib()
    out["peak_gpu_mib"] = peak_gpu_mib(args.device)
    return out


def icl_variant(args, lm, variant: str, demos, tests, out: dict) -> dict:
    """Build one variant's requests (timed), score them (timed), and record both."""
    t0 = time.perf_counter()
    if variant == "matched":
        requests, contexts = matched_requests(lm, demos, tests)
        out["contexts"] = contexts
        dropped = 0
    else:
        requests, dropped = native_requests(lm, demos, tests)
    build_s = time.perf_counter() - t0
    repeats = 1 if args.engine == "naive" else args.repeats
    results, score_s, times = score_timed(
        lm, requests, args.engine, args.batch_size, args.device, repeats
    )
    return {
        **summarise(results),
        "build_s": build_s,
        "score_s": score_s,
        "score_times": times,
        "n": len(requests),
        "n_demos_dropped": dropped,
        **request_stats(requests),
        "tokens": [[list(r.prefix + r.query), [list(o) for o in r.options]] for r in requests],
    }


def worker_raw(args) -> dict:
    """The model's plain batched forward rate, last position's logits only."""
    import torch

    lm, load_s = load_icl_model(args)
    batch, length = args.raw_batch, args.raw_len
    gen = torch.Generator().manual_seed(0)
    vocab = lm.model.config.vocab_size
    ids = torch.randint(100, vocab - 1, (batch, length), generator=gen).to(lm.device)
    with torch.inference_mode():
        times = []
        for _ in range(args.raw_reps):
            t0 = time.perf_counter()
            lm.model(input_ids=ids, logits_to_keep=1)
            sync(args.device)
            times.append(time.perf_counter() - t0)
    best = min(times)
    return {
        "load_s": load_s,
        "batch": batch,
        "length": length,
        "times": times,
        "tokens_per_s": batch * length / best,
        "tokens_per_s_mean": batch * length * len(times) / sum(times),
        "self_rss_mib": self_rss_mib(),
        "peak_gpu_mib": peak_gpu_mib(args.device),
    }


def worker_scaling(args) -> dict:
    """icl examples/s (the engine auto picks) for several k on one model, with icl's own
    prompt building."""
    data = json.loads(Path(args.spec).read_text())
    demos_all, tests = data["demos_all"], data["tests"]
    lm, load_s = load_icl_model(args, args.model)
    ks = [int(x) for x in args.ks.split(",")]
    rows = [scaling_row(args, lm, k, demos_all[:k], tests) for k in ks]
    return {
        "model": args.model,
        "load_s": load_s,
        "rows": rows,
        "adds_bos": lm.adds_bos,
        "self_rss_mib": self_rss_mib(),
        "peak_gpu_mib": peak_gpu_mib(args.device),
    }


def scaling_row(args, lm, k: int, demos: list[dict], tests: list[dict]) -> dict:
    """One k of the scaling table: build (timed), score (timed, median), accuracy."""
    t0 = time.perf_counter()
    requests, dropped = native_requests(lm, demos, tests)
    build_s = time.perf_counter() - t0
    results, score_s, times = score_timed(
        lm, requests, args.engine, args.batch_size, args.device, args.repeats
    )
    preds = summarise(results)["pred"]
    return {
        "k": k,
        "n": len(requests),
        "build_s": build_s,
        "score_s": score_s,
        "score_times": times,
        "examples_per_s": len(requests) / score_s,
        **request_stats(requests),
        "n_demos_dropped": dropped,
        "accuracy": sum(int(p == t["label"]) for p, t in zip(preds, tests)) / len(tests),
    }
