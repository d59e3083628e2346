"""End to end, as a user waits for it: ``icl-run`` against lm-evaluation-harness, each run a
subprocess timed from start to exit, each at two sizes (the difference of the two wall times is
the cost of the extra examples without start-up: imports, model load, data, Hydra).

Runs, on one machine one after another, every process cold (no process reuse):

1. SmolLM2-135M, SST-2 test, 16 gold demonstrations (``demos.seed=1``), float32:
   - icl with both perplexity passes off (``eval.kshot_perplexity=false
     eval.zero_shot_perplexity=false``): the work lm-eval does;
   - icl with its defaults (the zero-shot perplexity on, the k-shot one off), a first process
     on an empty score cache, then a second process on the cache the first left (each size its
     own cache, so the small run warms no part of the large one);
   - icl with both perplexities on (the defaults before the k-shot one was turned off), a
     second process on a warm cache: what the k-shot perplexity costs;
   - the warm-cache target read from ``--repeats`` more runs at the larger size, perplexity off
     and defaults (2nd process) alternating, their medians compared (one run each is easily
     moved 20% by a busy moment);
   - lm-eval 0.4.13 (``simple_evaluate`` over HFLM, the benchmark's lm-eval worker) on the same
     prompts: icl's 16 demonstrations as its ``first_n`` few-shot rows, icl's test examples.
2. Gemma-3-270M at k=0, both perplexity passes off and the score cache off (each example
   computed), against lm-eval at ``num_fewshot=0``.

    python -m benchmarks.end_to_end [--small 10] [--large 110] [--gemma-large 210]
    python -m benchmarks.vs_lm_eval --end-to-end     # the same, from the comparison's CLI

The section it writes into benchmarks/RESULTS.md sits between markers; ``vs_lm_eval``'s own
report keeps it when it rewrites the file.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from benchmarks import icl_side  # noqa: E402
from benchmarks.vs_lm_eval.lm_eval_side import write_task_files  # noqa: E402
from benchmarks.vs_lm_eval.machine import machine_info  # noqa: E402
from benchmarks.vs_lm_eval.report import md_table  # noqa: E402
from benchmarks.vs_lm_eval.task import LABEL_WORDS, MODELS  # noqa: E402
from benchmarks.vs_lm_eval.timing import log, run_child  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
BEGIN, END = "<!-- end-to-end: begin -->", "<!-- end-to-end: end -->"
SMOL = ["task=sst2", "model=smollm2-135m", "demos.k=16", "demos.labels=gold", "demos.seed=1"]
GEMMA = ["task=sst2", "model=gemma3-270m", "demos.k=0"]
PPL_OFF = ["eval.kshot_perplexity=false", "eval.zero_shot_perplexity=false"]
PPL_BOTH = ["eval.kshot_perplexity=true", "eval.zero_shot_perplexity=true"]
OFF, WARM = "icl perplexity off", "icl defaults, 2nd process"
BOTH = "icl both perplexities, 2nd process"
# the targets of issue 17
TARGET_OFF, TARGET_WARM, TARGET_GEMMA = 20.0, 1.15, 2.0
RUN_HEADER = ["run", "N", "wall s", "scoring s", "scored", "from cache", "accuracy", "command"]


def slug(label: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in label)


def icl_run_command() -> list[str]:
    found = Path(sys.executable).with_name("icl-run")
    return [str(found)] if found.exists() else [shutil.which("icl-run") or "icl-run"]


def icl_run(
    label: str, overrides: list[str], n: int, tmp: Path, cache: Path, repeat: str = ""
) -> dict:
    """One ``icl-run`` process: its wall time, metrics.json and predictions."""
    out = tmp / f"{slug(label)}-{n}{repeat}"
    args = [*overrides, f"eval.n_test={n}", f"hydra.run.dir={out}"]
    env = {**os.environ, "ICL_SCORE_CACHE_DIR": str(cache)}
    log(f"[{label} N={n}] icl-run {shlex.join(args)}")
    started = time.perf_counter()
    subprocess.run([*icl_run_command(), *args], check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    metrics = json.loads((out / "metrics.json").read_text())
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    log(f"[{label} N={n}] {wall:.1f} s")
    shown = [a for a in args if not a.startswith("hydra.")]
    return {
        "label": label,
        "n": n,
        "repeat": repeat,
        "wall_s": wall,
        "metrics": metrics,
        "pred": [p["prediction_index"] for p in preds],
        "command": "icl-run " + " ".join(shown),
    }


def lm_eval_run(label: str, overrides: list[str], n: int, tmp: Path, args) -> dict:
    """lm-eval (its worker, a subprocess) on the prompts icl's plan of the same cell builds."""
    plan = icl_side.retrieval_plan([*overrides, f"eval.n_test={n}"])
    assert list(plan.template.label_words) == LABEL_WORDS
    demos = plan.demos[0].pairs
    train = [{"label": LABEL_WORDS.index(word), "text": f["text"]} for f, word in demos]
    tests = [{"label": ex.label, "text": ex.fields["text"]} for ex in plan.test]
    # k=0: lm-eval still loads a few-shot split (an empty JSONL file would not load); unused
    train = train or tests[:1]
    where = tmp / f"{slug(label)}-{n}"
    where.mkdir()
    task_dir = write_task_files(where, train, tests, len(demos))
    model = overrides[1].split("=", 1)[1]
    cfg = icl_side.model_config(MODELS[model], "cpu", "float32")
    lm_args = ["--worker", "lm_eval", "--folder", str(icl_side.model_folder(cfg))]
    lm_args += ["--task-dir", str(task_dir), "--add-bos", str(int(icl_side.adds_bos(cfg)))]
    lm_args += ["--device", "cpu", "--dtype", "float32", "--batch-size", str(args.batch_size)]
    out = run_child(f"{label} N={n}", lm_args, where / "result.json")
    return {
        "label": label,
        "n": n,
        "wall_s": out["wall_s"],
        "metrics": {"accuracy": out["accuracy"], "scoring_s": out["loglikelihood_s"]},
        "pred": [s["pred"] for s in out["samples"]],
        "command": f"lm-eval simple_evaluate, HFLM batch {args.batch_size}, "
        f"num_fewshot={len(demos)}",
    }


def measure(args, tmp: Path) -> list[dict]:
    """Every run, in the order they ran."""
    sizes = (args.small, args.large)
    runs = []
    for n in sizes:
        runs.append(icl_run(OFF, [*SMOL, *PPL_OFF], n, tmp, tmp / "cache-off"))
    for n in sizes:  # each size its own cache: the first process fills it, the second reads it
        runs.append(icl_run("icl defaults, 1st process", SMOL, n, tmp, tmp / f"cache-{n}"))
        runs.append(icl_run(WARM, SMOL, n, tmp, tmp / f"cache-{n}"))
        both = tmp / f"cache-both-{n}"
        runs.append(icl_run("icl both perplexities, 1st process", [*SMOL, *PPL_BOTH], n, tmp, both))
        runs.append(icl_run(BOTH, [*SMOL, *PPL_BOTH], n, tmp, both))
    large = args.large
    for i in range(args.repeats):  # alternating, so a busy spell falls on both alike
        runs.append(icl_run(OFF, [*SMOL, *PPL_OFF], large, tmp, tmp / "cache-off", f"r{i}"))
        runs.append(icl_run(WARM, SMOL, large, tmp, tmp / f"cache-{large}", f"r{i}"))
        both = tmp / f"cache-both-{large}"
        runs.append(icl_run(BOTH, [*SMOL, *PPL_BOTH], large, tmp, both, f"r{i}"))
    if not args.skip_lm_eval:
        for n in sizes:
            runs.append(lm_eval_run("lm-eval", SMOL, n, tmp, args))
    if not args.skip_gemma:
        gemma_sizes = (args.small, args.gemma_large)
        gemma_off = [*GEMMA, *PPL_OFF, "eval.cache=false"]
        for n in gemma_sizes:
            runs.append(icl_run("icl gemma k=0 perplexity off", gemma_off, n, tmp, tmp / "g"))
        if not args.skip_lm_eval:
            for n in gemma_sizes:
                runs.append(lm_eval_run("lm-eval gemma k=0", GEMMA, n, tmp, args))
    return runs


def by_label(runs: list[dict]) -> dict[str, dict[int, dict]]:
    """Each label's first run at each size (the repeats are read by ``repeated_walls``)."""
    out: dict[str, dict[int, dict]] = {}
    for run in runs:
        if not run.get("repeat"):
            out.setdefault(run["label"], {})[run["n"]] = run
    return out


def repeated_walls(runs: list[dict], label: str, n: int) -> list[float]:
    """Every wall time of one label at one size, first run and repeats."""
    return [r["wall_s"] for r in runs if r["label"] == label and r["n"] == n]


def differenced(pair: dict[int, dict]) -> tuple[float, int]:
    """Seconds the larger run took beyond the smaller one, and how many more examples."""
    small, large = sorted(pair)
    return pair[large]["wall_s"] - pair[small]["wall_s"], large - small


def verdict(ok: bool) -> str:
    return "target met" if ok else "**target missed**"


def speedup_line(what: str, icl: dict[int, dict], lm_eval: dict[int, dict], target: float) -> str:
    """icl against lm-eval over the examples between their two sizes, against a target."""
    icl_s, extra = differenced(icl)
    lm_s, _ = differenced(lm_eval)
    x = lm_s / icl_s
    return (
        f"- {what} vs lm-eval, {extra} examples without start-up: icl {icl_s:.1f} s, "
        f"lm-eval {lm_s:.1f} s: **{x:.1f}x** (target >= {target:.0f}x: {verdict(x >= target)})."
    )


def ratio_lines(runs: list[dict]) -> list[str]:
    """The ratios side by side, each against its target."""
    r = by_label(runs)
    lines = []
    off = r["icl perplexity off"]
    off_s, extra = differenced(off)
    if "lm-eval" in r:
        lm_s, _ = differenced(r["lm-eval"])
        lines.append(speedup_line("SmolLM2 k=16, perplexity off", off, r["lm-eval"], TARGET_OFF))
        for label in ("icl defaults, 1st process", "icl defaults, 2nd process"):
            s, _ = differenced(r[label])
            lines.append(f"- {label} vs lm-eval, the same {extra} examples: {lm_s / s:.1f}x.")
    large = max(off)
    off_walls = repeated_walls(runs, OFF, large)
    for label, what in ((WARM, "Defaults"), (BOTH, "Both perplexities on")):
        walls = repeated_walls(runs, label, large)
        ratio = median(walls) / median(off_walls)
        warm_s, _ = differenced(r[label])
        target = f" (target <= {TARGET_WARM:.2f}: {verdict(ratio <= TARGET_WARM)})"
        lines.append(
            f"- {what}, 2nd process (warm cache) against perplexity off, median wall time of "
            f"{len(walls)} and {len(off_walls)} alternating runs at N={large}: "
            f"{median(walls):.1f} s / {median(off_walls):.1f} s = **{ratio:.2f}**"
            f"{target if label == WARM else ''}; differenced (first runs): "
            f"{warm_s:.1f} s / {off_s:.1f} s = {warm_s / off_s:.2f}."
        )
    cold = r["icl defaults, 1st process"]
    lines.append(
        f"- Defaults, 1st process (empty cache) against perplexity off, wall time at N={large}: "
        f"{cold[large]['wall_s'] / off[large]['wall_s']:.2f}."
    )
    if "icl gemma k=0 perplexity off" in r and "lm-eval gemma k=0" in r:
        icl, lm_eval = r["icl gemma k=0 perplexity off"], r["lm-eval gemma k=0"]
        what = "Gemma-3-270M k=0, perplexity off, cache off"
        lines.append(speedup_line(what, icl, lm_eval, TARGET_GEMMA))
    return lines


def agreement_lines(runs: list[dict]) -> list[str]:
    """Whether icl and lm-eval predicted alike on the same prompts (the largest runs)."""
    r = by_label(runs)
    lines = []
    for icl_label, lm_label in (
        ("icl perplexity off", "lm-eval"),
        ("icl gemma k=0 perplexity off", "lm-eval gemma k=0"),
    ):
        if icl_label in r and lm_label in r:
            n = max(r[lm_label])
            a, b = r[icl_label][n]["pred"], r[lm_label][n]["pred"]
            same = sum(x == y for x, y in zip(a, b))
            lines.append(f"- {icl_label} and {lm_label}, N={n}: {same}/{len(b)} same prediction.")
    return lines


def run_rows(runs: list[dict]) -> list[list]:
    rows = []
    for run in runs:
        m = run["metrics"]
        scoring = m.get("scoring_s")
        rows.append(
            [
                run["label"] + (f" (repeat {run['repeat'][1:]})" if run.get("repeat") else ""),
                run["n"],
                f"{run['wall_s']:.1f}",
                "n/a" if scoring is None else f"{scoring:.2f}",
                m.get("examples_scored", "n/a"),
                m.get("examples_from_cache", "n/a")
                if "zero_shot_from_cache" not in m
                else f"{m['examples_from_cache']} (zero-shot ppl: {m['zero_shot_from_cache']})",
                f"{m['accuracy']:.3f}",
                f"`{run['command']}`",
            ]
        )
    return rows


def report(args, info: dict, runs: list[dict], load: tuple[str, str]) -> str:
    lines = [
        BEGIN,
        "## End to end: `icl-run` against lm-eval, each a subprocess",
        "",
        f"Date: {info['date']}. Machine: {info['host_cpu']}, {info['usable_cores']} usable cores, "
        f"torch {info['torch']}, transformers {info['transformers']}, lm-eval {info['lm_eval']}; "
        f"no GPU. `uptime` at start: `{load[0]}`; at end: `{load[1]}` (the machine was shared: "
        f"the ratios of runs made one after another are what to read, not the seconds).",
        "",
        f"Command: `{args.command}`. Every run is a fresh process timed from start to exit; "
        f"lm-eval is given icl's own 16 demonstrations (as `first_n` few-shot rows) and icl's "
        f"test examples, so both score the same prompts; batch size {args.batch_size} for both "
        f"(icl's `batch_size=auto` is {args.batch_size} on CPU), float32.",
        "",
        *ratio_lines(runs),
        *agreement_lines(runs),
        "",
        md_table(RUN_HEADER, run_rows(runs)),
        "",
        "scoring s: icl's `scoring_s` from metrics.json (the scoring pass and the rules' passes; "
        "the zero-shot perplexity pass is timed apart, `zero_shot_perplexity_s`); lm-eval's "
        "`HFLM.loglikelihood`. scored / from cache: examples icl computed / served by the score "
        "cache (at k=16 the k-shot prompts are always computed; the zero-shot perplexities come "
        "from the cache in a 2nd process).",
        END,
    ]
    return "\n".join(lines) + "\n"


def with_section(text: str, section: str) -> str:
    """The results file with its end-to-end section replaced (or put first)."""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        return head + section.rstrip("\n") + rest.split(END, 1)[1]
    title, _, body = text.partition("\n")
    return f"{title}\n\n{section}\n{body}" if title.startswith("# ") else f"{section}\n{text}"


def kept_section(old: str) -> str | None:
    """The end-to-end section of an existing results file, for a rewrite to keep."""
    if BEGIN in old and END in old:
        return BEGIN + old.split(BEGIN, 1)[1].split(END, 1)[0] + END + "\n"
    return None


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", type=int, default=10, help="the smaller N of each pair")
    p.add_argument("--large", type=int, default=110, help="the larger N (SmolLM2 k=16)")
    p.add_argument("--gemma-large", type=int, default=210, help="the larger N (Gemma k=0)")
    p.add_argument("--batch-size", type=int, default=16, help="lm-eval's batch size")
    p.add_argument("--repeats", type=int, default=2, help="more alternating warm-cache runs")
    p.add_argument("--skip-lm-eval", action="store_true")
    p.add_argument("--skip-gemma", action="store_true")
    p.add_argument("--out", default=str(RESULTS), help="results file to write into ('' skips)")
    return p


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    args.command = shlex.join(["python", "-m", "benchmarks.end_to_end", *(argv or sys.argv[1:])])
    info = machine_info("cpu")
    start_load = uptime()
    with tempfile.TemporaryDirectory(prefix="icl-end-to-end-") as tmp:
        runs = measure(args, Path(tmp))
    text = report(args, info, runs, (start_load, uptime()))
    print(text)
    if args.out:
        out = Path(args.out)
        out.write_text(with_section(out.read_text() if out.exists() else "", text))
        log(f"wrote {out}")


if __name__ == "__main__":
    main()
