"""Speculative decoding on the real model: which same-tokenizer drafts speed it up on a CPU?

No larger model of SmolLM2's or Gemma's tokenizer installs offline, so the drafts here are made
from SmolLM2-135M itself: an int8 dynamically quantised copy (``torch.ao`` on the linear
layers; faster per token, nearly the target's distribution) and its first N layers with the
shared final norm and head (an early-exit draft), beside prompt lookup (drafts copied from the
prompt). Each writes greedy continuations of ``--new`` tokens (no stop: an ICL answer ends
after a token or two, which leaves speculation nothing to gain) after SST-2 k-shot prompts,
one sequence at a time through icl's own speculative loop, against plain one-at-a-time greedy
decoding of the same prompts. Greedy speculative decoding writes the plain tokens (checked),
so the question is speed alone: tokens/s, the drafts' acceptance and tokens per target pass,
and each model's cost per token.

    python -m benchmarks.speculative_drafts [--n-test 12] [--k 16] [--new 24] [--layers 4,10]
"""

from __future__ import annotations

import argparse
import copy
import os
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from benchmarks import icl_side  # noqa: E402
from benchmarks.vs_lm_eval.prompts import native_requests  # noqa: E402
from benchmarks.vs_lm_eval.task import MODELS, read_sst2  # noqa: E402
from icl.lm.decoding import (  # noqa: E402
    ModelDrafter,
    PromptLookupDrafter,
    Stream,
    speculative_generate,
)
from icl.lm.forward import encode_prefix  # noqa: E402
from icl.lm.sampling import Sampler  # noqa: E402

GREEDY = Sampler("greedy")


def int8_copy(model):
    """The model with its linear layers dynamically quantised to int8 (CPU kernels)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's quantised tensors are deprecated, not gone
        return torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8
        )


def first_layers(model, n: int):
    """The model's first n decoder layers under its own final norm and head."""
    draft = copy.deepcopy(model)
    draft.model.layers = draft.model.layers[:n]
    draft.config.num_hidden_layers = n
    return draft


def ms_per_token(model, prefix, query, steps: int = 16) -> float:
    """CPU milliseconds of one single-token step after prefix + query."""
    encoded = encode_prefix(model, prefix, (), "cpu", want_nll=False)
    stream = Stream(model, "cpu", encoded.cache, len(prefix))
    stream.feed(list(query))
    started = time.process_time()
    for _ in range(steps):
        stream.feed([query[-1]])
    return 1000 * (time.process_time() - started) / steps


def plain(target, requests, new: int) -> tuple[list[list[int]], float]:
    encoded = encode_prefix(target, requests[0].prefix, (), "cpu", want_nll=False)
    started, outs = time.process_time(), []
    for request in requests:
        stream = Stream(target, "cpu", encoded.cache, len(request.prefix))
        logits, tokens = stream.feed(list(request.query))[-1], []
        while len(tokens) < new:
            tokens.append(int(logits.argmax()))
            logits = stream.feed(tokens[-1:])[-1]
        outs.append(tokens)
    return outs, time.process_time() - started


def speculative(target, draft, requests, new: int, draft_tokens: int):
    """Greedy speculative answers with a model draft (or prompt lookup when draft is None)."""
    prefix = requests[0].prefix
    encoded = encode_prefix(target, prefix, (), "cpu", want_nll=False)
    draft_encoded = encode_prefix(draft, prefix, (), "cpu", False) if draft is not None else None
    started, outs, stats = time.process_time(), [], [0, 0, 0]
    for request in requests:
        stream = Stream(target, "cpu", encoded.cache, len(prefix))
        drafter = (
            PromptLookupDrafter(3)
            if draft is None
            else ModelDrafter(Stream(draft, "cpu", draft_encoded.cache, len(prefix)))
        )
        out = speculative_generate(
            stream, drafter, list(prefix) + list(request.query), GREEDY, new,
            lambda tokens: False, torch.Generator().manual_seed(0), draft_tokens,
        )  # fmt: skip
        outs.append(out.tokens)
        stats = [stats[0] + out.drafted, stats[1] + out.accepted, stats[2] + out.target_passes]
    return outs, time.process_time() - started, stats


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-test", type=int, default=12)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--new", type=int, default=24)
    parser.add_argument("--draft-tokens", type=int, default=4)
    parser.add_argument("--layers", default="4,10", help="early-exit drafts: first N layers")
    parser.add_argument("--data-dir", type=Path, default=Path(icl_side.default_data_dir()))
    args = parser.parse_args(argv)
    demos = read_sst2(args.data_dir / "sst2" / "stsa.binary.train", args.k)
    tests = read_sst2(args.data_dir / "sst2" / "stsa.binary.test", args.n_test)
    lm = icl_side.load_language_model(
        icl_side.model_config(MODELS["smollm2-135m"], "cpu", "float32")
    )
    requests, _ = native_requests(lm, demos, tests)
    target = lm.model
    drafts = {"int8 copy": int8_copy(target)}
    drafts.update(
        {f"first {n} layers": first_layers(target, int(n)) for n in args.layers.split(",")}
    )
    prefix, query = requests[0].prefix, requests[0].query
    print(f"SmolLM2-135M, SST-2 k={args.k} ({len(prefix)} prefix tokens), {len(requests)} "
          f"prompts x {args.new} greedy tokens, {args.draft_tokens} drafts per target pass, "
          f"load average {os.getloadavg()[0]:.1f}; CPU seconds (process time)\n")  # fmt: skip
    print("| model | ms per token |\n|---|---|")
    for name, model in [("target", target), *drafts.items()]:
        print(f"| {name} | {ms_per_token(model, prefix, query):.1f} |")
    reference, plain_s = plain(target, requests, args.new)
    tokens = sum(map(len, reference))
    print("\n| decoding | tokens/s | speed-up | acceptance | tokens per target pass | "
          "same tokens as plain |\n|---|---|---|---|---|---|")  # fmt: skip
    print(f"| plain, one at a time | {tokens / plain_s:.2f} | 1.00x | | 1.00 | |")
    for name, draft in [("prompt lookup", None), *drafts.items()]:
        outs, seconds, (drafted, accepted, passes) = speculative(
            target, draft, requests, args.new, args.draft_tokens
        )
        same = sum(a == b for a, b in zip(outs, reference))
        print(f"| {name} | {tokens / seconds:.2f} | {plain_s / seconds:.2f}x | "
              f"{accepted / max(drafted, 1):.2f} | {tokens / passes:.2f} | "
              f"{same}/{len(outs)} |")  # fmt: skip


if __name__ == "__main__":
    main()
