"""icl's results against lm-eval's: predictions, log-probabilities, token ids, prompt text."""

from __future__ import annotations

from benchmarks.vs_lm_eval.task import ANSWER_SEP, LABEL_WORDS


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
