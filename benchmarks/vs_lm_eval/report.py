"""The markdown report of a run: machine, settings, agreement, speed, raw rate, scaling, notes."""

from __future__ import annotations

from benchmarks.vs_lm_eval.task import ANSWER_SEP, LABEL_WORDS, TEMPLATE_INPUT

AGREEMENT_HEADER = [
    "icl run",
    "n",
    "same prediction",
    "max abs diff log p(' negative')",
    "max abs diff log p(' positive')",
    "mean abs diff",
    "token ids identical",
    "prompt text identical",
    "accuracy",
]
SPEED_HEADER = [
    "tool",
    "examples/s (scoring)",
    "scoring s",
    "model-only s",
    "model load s",
    "end-to-end s (subprocess)",
    "peak RSS MiB",
    "peak GPU MiB",
    "model-only s, each timed run",
]
RAW_HEADER = ["what", "shape", "tokens computed", "tokens/s", "share of raw"]
SCALING_HEADER = [
    "model",
    "k",
    "n",
    "prefix tokens",
    "mean prompt tokens",
    "tokens to compute",
    "score s",
    "examples/s",
    "accuracy",
]


def fmt(x, spec=".2f") -> str:
    return "n/a" if x is None else format(x, spec)


def md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def scoring_rate(variant: dict) -> float:
    """Examples/s of one icl run, prompt building included."""
    return variant["n"] / (variant["build_s"] + variant["score_s"])


def native_variant(r) -> dict | None:
    """The run on icl's own prompts, if there was one."""
    return r["icl"].get(r["main"], {}).get("variants", {}).get("native")


def report(args, info, r) -> str:
    parts = [f"# icl vs lm-evaluation-harness: SmolLM2-135M, SST-2, {args.k}-shot\n"]
    parts.append(f"Date: {info['date']}\n")
    parts.append(machine_section(info, r))
    parts.append(settings_section(args, r))
    if r.get("lm_eval") is not None:
        parts.append(agreement_section(r))
    parts.append(speed_section(args, r))
    if r.get("raw") is not None:
        parts.append(raw_section(r))
    if r.get("scaling"):
        parts.append(scaling_section(r))
    if r.get("notes"):
        parts.append("## Notes\n\n" + "\n".join(f"- {x}" for x in r["notes"]) + "\n")
    return "\n".join(parts)


def machine_section(info, r) -> str:
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
    return "## Machine\n\n" + md_table(["", ""], mach) + "\n"


def settings_section(args, r) -> str:
    n = args.n_test
    return (
        f"Settings: n_test={n} (first {n} lines of stsa.binary.test), k={args.k} (first {args.k}"
        f" rows of stsa.binary.train, lm-eval `first_n`), template `{TEMPLATE_INPUT!r}`, options "
        f"{[ANSWER_SEP + w for w in LABEL_WORDS]!r}, device={args.device}, dtype={args.dtype}, "
        f"batch_size={args.batch_size}, model folder `{r['folder']}`, "
        f"BOS prepended: {r['adds_bos']} (icl's `tokenizer_adds_bos`; lm-eval HFLM given "
        f"`add_bos_token={r['adds_bos']}`).\n\nCommand: `{r['command']}`\n"
    )


def agreement_section(r) -> str:
    main, icl_rows, lm = r["main"], r["icl"], r["lm_eval"]
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
    lm_row = ["lm-eval", f"{len(lm['samples'])}", *[""] * 6, f"{100 * lm['accuracy']:.1f}%"]
    rows.append(lm_row)
    return "## Agreement with lm-eval\n\n" + md_table(AGREEMENT_HEADER, rows) + "\n"


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


def speed_rows(r) -> list[list]:
    main, icl_rows, lm = r["main"], r["icl"], r.get("lm_eval")
    rows = []
    native = native_variant(r)
    if native is not None and r.get("icl_native"):
        rows.append(icl_speed_row(f"icl {main}, icl's own prompts", native, r["icl_native"]))
    for engine, w in icl_rows.items():
        rows.append(icl_speed_row(f"icl {engine}", w["variants"]["matched"], w))
    if lm is not None:
        rows.append(
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
    return rows


def speed_explained(repeats: int) -> str:
    return (
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
        f" score {repeats} times in their process and report the median run (a 10-second run"
        " is easily disturbed by a busy moment; lm-eval's one run spans minutes); their"
        " end-to-end time includes every run.\n"
    )


def speed_ratios(r) -> str:
    """icl / lm-eval examples/s, end-to-end and model-only ratios."""
    main, icl_rows, lm = r["main"], r["icl"], r["lm_eval"]
    v = icl_rows[main]["variants"]["matched"]
    icl_eps = scoring_rate(v)
    lm_eps = len(lm["samples"]) / lm["loglikelihood_s"]
    text = ""
    native = native_variant(r)
    if native is not None:
        text += (
            f"\nicl {main} (icl's own prompts) / lm-eval examples/s: "
            f"**{scoring_rate(native) / lm_eps:.1f}x** (scoring).\n"
        )
    text += (
        f"icl {main} (lm-eval's tokens) / lm-eval examples/s: {icl_eps / lm_eps:.1f}x "
        f"(scoring); {lm['wall_s'] / icl_rows[main]['wall_s']:.1f}x end-to-end wall time "
        f"(lm-eval / icl {main}).\n"
    )
    text += (
        f"Model-only (forward passes) ratio icl {main} / lm-eval: "
        f"{(v['n'] / v['score_s']) / (len(lm['samples']) / lm['forward_s']):.1f}x.\n"
    )
    for engine in [e for e in icl_rows if e != main]:
        w = icl_rows[engine]["variants"]["matched"]
        text += f"icl {engine} / lm-eval examples/s: {scoring_rate(w) / lm_eps:.2f}x.\n"
    return text


def speed_section(args, r) -> str:
    speed = "## Speed and memory\n\n" + md_table(SPEED_HEADER, speed_rows(r))
    speed += speed_explained(args.repeats)
    if r.get("lm_eval") is not None and r["main"] in r["icl"]:
        speed += speed_ratios(r)
    return speed


def raw_rows(r) -> list[list]:
    raw, main, icl_rows, lm = r["raw"], r["main"], r["icl"], r.get("lm_eval")
    rows = [
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
        rows.append(
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
            sum(len(x) for x in {tuple(c + o[:-1]) for c, o in s["tokens"]}) for s in lm["samples"]
        )
        rate = lm_tokens / lm["forward_s"]
        rows.append(
            [
                "lm-eval (_loglikelihood_tokens)",
                f"{len(lm['samples'])} examples",
                f"{lm_tokens}",
                fmt(rate, ".0f"),
                f"{100 * rate / raw['tokens_per_s']:.0f}%",
            ]
        )
    return rows


def raw_section(r) -> str:
    times = r["raw"]["times"]
    return (
        "## Raw forward token rate\n\n"
        + md_table(RAW_HEADER, raw_rows(r))
        + f"\n\nraw forward: `model(input_ids, logits_to_keep=1)` on random ids, best of "
        f"{len(times)} ({', '.join(f'{t:.2f}' for t in times)} s). icl's "
        "tokens = the distinct prefix once, with the start its queries share, + each "
        "example's distinct suffix rows after that start (query + option minus its last "
        "token); lm-eval's = one full sequence per example (one-token"
        " options share one forward through its logits cache, only when the two options"
        " tokenize to one token each).\n"
    )


def scaling_section(r) -> str:
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
    return (
        f"## icl scaling ({r['main']} engine, icl's own prompt building)\n\n"
        + md_table(SCALING_HEADER, rows)
        + f"\n\n{mem}.\n"
    )
