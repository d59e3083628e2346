"""The run: every measured part in a worker subprocess of its own, then the comparison and
the report."""

from __future__ import annotations

import os
import shlex
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchmarks import end_to_end, icl_side
from benchmarks.vs_lm_eval.compare import accuracy, compare
from benchmarks.vs_lm_eval.lm_eval_side import write_task_files
from benchmarks.vs_lm_eval.machine import machine_info
from benchmarks.vs_lm_eval.report import report
from benchmarks.vs_lm_eval.task import MODELS, read_sst2
from benchmarks.vs_lm_eval.timing import ENTRY_MODULE, log, run_child, write_json


@dataclass
class Workers:
    """Runs worker subprocesses with the flags they all share; results land in ``tmp``."""

    tmp: Path
    common: list[str]

    def run(self, label: str, result: str, worker: str, *flags: str) -> dict:
        return run_child(label, ["--worker", worker, *flags, *self.common], self.tmp / result)


def icl_engines(args) -> tuple[str, list[str]]:
    """The engine ``auto`` picks here (what an icl run uses by default), then the others."""
    main = icl_side.resolve_engine("auto", args.device)
    engines = [e for e in args.engines.split(",") if e]
    engines = [main] + [e for e in dict.fromkeys(engines) if e != main]
    if args.skip_naive:
        engines = [e for e in engines if e != "naive"]
    unknown = [e for e in engines if e not in icl_side.ENGINES]
    if unknown:
        raise SystemExit(f"unknown icl engine(s) {unknown}; icl has {list(icl_side.ENGINES)}")
    return main, engines


def run_icl(args, workers: Workers, spec: Path, main: str, engines: list[str]):
    """Each engine on lm-eval's tokens, then icl's own prompts (in a process of its own, so the
    engines' timings stay clean); the first run's loader dequantises the GGUF into the folder.

    Returns the runs by engine and the own-prompts process's costs.
    """
    runs = {}
    for engine in engines:
        flags = ["--engine", engine, "--variant", "matched", "--spec", str(spec)]
        flags += ["--naive-n-test", str(args.naive_n_test)]
        runs[engine] = workers.run(f"icl {engine}", f"icl_{engine}.json", "icl", *flags)
    flags = ["--engine", main, "--variant", "native", "--spec", str(spec)]
    native = workers.run(f"icl {main}, icl's own prompts", "icl_native.json", "icl", *flags)
    runs[main]["variants"]["native"] = native["variants"]["native"]
    return runs, {k: native.get(k) for k in ("load_s", "wall_s", "rss_mib", "peak_gpu_mib")}


def run_lm_eval(args, workers: Workers, train_path: Path, tests, folder: Path, r: dict) -> None:
    """lm-eval on the same rows and model folder; its comparison with every icl run."""
    task_dir = write_task_files(workers.tmp, read_sst2(train_path), tests, args.k)
    flags = ["--folder", str(folder), "--task-dir", str(task_dir)]
    flags += ["--add-bos", str(int(r["adds_bos"]))]
    r["lm_eval"] = workers.run("lm-eval", "lm_eval.json", "lm_eval", *flags)
    lm_rows = r["lm_eval"]["samples"]
    contexts = r["icl"][r["main"]]["contexts"]
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


def run_raw(args, workers: Workers) -> dict:
    flags = ["--raw-batch", str(args.raw_batch), "--raw-len", str(args.raw_len)]
    flags += ["--raw-reps", str(args.raw_reps)]
    return workers.run("raw forward", "raw.json", "raw", *flags)


def run_scaling(args, workers: Workers, spec: Path, main: str) -> list[dict]:
    out = []
    for model in args.scaling_models.split(","):
        flags = ["--model", model, "--engine", main, "--ks", args.ks, "--spec", str(spec)]
        out.append(workers.run(f"scaling {model}", f"scaling_{model}.json", "scaling", *flags))
    return out


def native_notes(r: dict, n_tests: int) -> list[str]:
    """How many of icl's own prompts have lm-eval's token ids, and why others would not."""
    native = r["icl"][r["main"]]["variants"].get("native")
    matched = r["icl"][r["main"]]["variants"]["matched"]
    if native is None:
        return []
    same = sum(int(a == b) for a, b in zip(native["tokens"], matched["tokens"]))
    notes = [
        f"icl's own prompt building (prompts.option_tokens + prompts.build_prompt) gives the "
        f"same token ids as lm-eval's whole-context tokenization for {same}/{n_tests} "
        f"examples (prefix {native['prefix_tokens']} tokens there, {matched['prefix_tokens']}"
        f' here: the matched prefix stops before the last "\\n\\n").'
    ]
    if same < n_tests:
        notes.append(
            "Where they differ, icl tokenized the prompt pieces apart: e.g. SmolLM2's"
            ' byte-level BPE encodes a trailing "\\n\\n" as one token (1116) but two'
            " (198 198) before a word, as in the whole prompt."
        )
    return notes


def measure(args, r: dict, data: dict, folder: Path) -> None:
    """Every worker, in order, filling ``r``: icl, lm-eval, raw forward, scaling."""
    common = ["--device", args.device, "--dtype", args.dtype, "--batch-size", str(args.batch_size)]
    common += ["--repeats", str(args.repeats)]
    main, engines = icl_engines(args)
    r["main"] = main
    tests = data["tests"]
    with tempfile.TemporaryDirectory(prefix="icl-vs-lm-eval-") as tmp:
        workers = Workers(Path(tmp), common)
        spec = workers.tmp / "spec.json"
        write_json(spec, {k: data[k] for k in ("demos", "tests", "demos_all")})
        r["icl"], r["icl_native"] = run_icl(args, workers, spec, main, engines)
        for w in r["icl"].values():
            for v in w["variants"].values():
                v["accuracy"] = accuracy(v["pred"], tests[: len(v["pred"])])
        r["adds_bos"] = r["icl"][main]["adds_bos"]
        if not (folder / "config.json").exists():
            raise SystemExit(f"icl did not leave a model folder at {folder}")
        if not args.skip_lm_eval:
            run_lm_eval(args, workers, data["train_path"], tests, folder, r)
        if not args.skip_raw:
            r["raw"] = run_raw(args, workers)
        r["scaling"] = [] if args.skip_scaling else run_scaling(args, workers, spec, main)


def read_data(args) -> dict:
    """The test rows, the demonstrations of the comparison and of the scaling table."""
    data_dir = Path(args.data_dir or Path(icl_side.default_data_dir()) / "sst2")
    train_path, test_path = data_dir / "stsa.binary.train", data_dir / "stsa.binary.test"
    ks = sorted({int(x) for x in args.ks.split(",")} | {args.k})
    demos_all = read_sst2(train_path, max(ks))
    return {
        "train_path": train_path,
        "tests": read_sst2(test_path, args.n_test),
        "demos": demos_all[: args.k],
        "demos_all": demos_all,
    }


def parent(args) -> None:
    data = read_data(args)
    cfg = icl_side.model_config(MODELS["smollm2-135m"], args.device, args.dtype)
    folder = icl_side.model_folder(cfg)
    info = machine_info(args.device)
    r = {
        "folder": str(folder),
        "command": shlex.join(["python", "-m", ENTRY_MODULE, *sys.argv[1:]]),
        "notes": [],
        "loadavg": [os.getloadavg()[0]],
    }
    measure(args, r, data, folder)
    r["notes"] += native_notes(r, len(data["tests"]))
    r["loadavg"].append(os.getloadavg()[0])
    text = report(args, info, r)
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        # the end-to-end section (benchmarks/end_to_end.py) is its own run's: keep it
        kept = end_to_end.kept_section(out.read_text()) if out.exists() else None
        out.write_text(end_to_end.with_section(text, kept) if kept else text)
        log(f"wrote {args.out}")
