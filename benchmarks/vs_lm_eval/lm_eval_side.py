"""lm-evaluation-harness's side: the task files it reads and the worker that runs it.

Nothing here imports icl: the lm-eval worker's wall time and peak RSS are lm-eval's own.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from benchmarks.vs_lm_eval.task import (
    ANSWER_SEP,
    DEMO_SEP,
    LABEL_WORDS,
    TASK_NAME,
    TEMPLATE_INPUT,
)
from benchmarks.vs_lm_eval.timing import peak_gpu_mib, self_rss_mib, sync, warm_up


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


def write_task_files(tmp: Path, train: list[dict], tests: list[dict], k: int) -> Path:
    """The rows as JSONL files and the task over them; returns the task folder."""
    task_dir = tmp / "tasks"
    task_dir.mkdir()
    jsonl = {}
    for split, rows in (("train", train), ("test", tests)):
        jsonl[split] = tmp / f"{split}.jsonl"
        with open(jsonl[split], "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    write_task(task_dir, jsonl["train"], jsonl["test"], k)
    return task_dir


def timed(method, key: str, timings: dict, device: str):
    """The method, with its wall time (device synchronised) added to timings[key]."""

    def wrapper(requests, *a, **kw):
        sync(device)
        t = time.perf_counter()
        res = method(requests, *a, **kw)
        sync(device)
        timings[key] += time.perf_counter() - t
        return res

    return wrapper


def instrument(lm, device: str) -> tuple[dict, dict]:
    """Time HFLM's loglikelihood and _loglikelihood_tokens, and capture the token ids the
    latter really scores; returns (timings, captured), filled as lm-eval runs."""
    timings = {"loglikelihood_s": 0.0, "forward_s": 0.0}
    captured = {}
    forward = timed(lm._loglikelihood_tokens, "forward_s", timings, device)

    def loglikelihood_tokens(requests, *a, **kw):
        for (ctx, cont), ctx_enc, cont_enc in requests:  # the token ids lm-eval really scores
            captured[(ctx, cont)] = (list(ctx_enc), list(cont_enc))
        return forward(requests, *a, **kw)

    lm.loglikelihood = timed(lm.loglikelihood, "loglikelihood_s", timings, device)
    lm._loglikelihood_tokens = loglikelihood_tokens
    return timings, captured


def sample_rows(samples: list[dict], captured: dict) -> list[dict]:
    """lm-eval's logged samples in doc order, with the token ids each option was scored on."""
    rows = []
    for s in sorted(samples, key=lambda x: x["doc_id"]):
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
    return rows


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
    timings, captured = instrument(lm, args.device)
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
    return {
        "load_s": load_s,
        "evaluate_s": evaluate_s,
        **timings,
        "samples": sample_rows(res["samples"][TASK_NAME], captured),
        "accuracy": res["results"][TASK_NAME].get("acc,none"),
        "add_bos_token": lm.add_bos_token,
        "batch_size": lm.batch_size,
        "device": str(lm.device),
        "torch_threads": torch.get_num_threads(),
        "lm_eval_version": getattr(lm_eval, "__version__", None),
        "self_rss_mib": self_rss_mib(),
        "peak_gpu_mib": peak_gpu_mib(args.device),
    }
