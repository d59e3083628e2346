"""Seconds per fine-tuning step by what is trained, side by side in one process:
``python -m benchmarks.finetune_steps [--model smollm2-135m] [--repeats 3]``.

Each setting trains a fresh copy of the model on the same batches of its SST-2 training set
(batch 8, template ``it_was``, inputs cut to 64 tokens), timed after one warm-up step (the
median of the repeats); the batched forward of 32 development examples is timed too.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from benchmarks.icl_side import finetune_plan
from icl.finetune.inputs import encode_examples
from icl.finetune.loop import Classifier, dev_score
from icl.finetune.objective import cross_entropy, pad_id
from icl.finetune.trainable import lm_is_frozen, make_head, trainable_copy
from icl.lm.store import PROCESS_MODELS
from icl.prompts import option_tokens

SETTINGS = (  # (label, kind, train_layers, lora_r)
    ("head, train_layers=0 (features cached)", "head", 0, 0),
    ("head, train_layers=2", "head", 2, 0),
    ("prompt, train_layers=0 (final norm)", "prompt", 0, 0),
    ("prompt, train_layers=2", "prompt", 2, 0),
    ("prompt, train_layers=4", "prompt", 4, 0),
    ("prompt, LoRA r=8 (q, v)", "prompt", 0, 8),
    ("prompt, train_layers=all", "prompt", "all", 0),
)


def classifier_for(lm, kind: str, layers, lora_r: int, options) -> Classifier:
    model = trainable_copy(lm.model, kind, layers, lora_r, 16.0, seed=0)
    head = None
    if kind == "head":
        width = model.config.get_text_config().hidden_size
        head = make_head("linear", width, len(options), 0, lm.device, torch.float32)
    frozen = kind == "head" and lm_is_frozen(model)
    return Classifier(model, kind, options, pad_id(lm), lm.device, head, frozen)


def step_seconds(classifier: Classifier, batches, repeats: int) -> float:
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=1e-5)
    times = []
    for i in range(repeats + 1):
        batch = batches[i % len(batches)]
        started = time.perf_counter()
        loss = cross_entropy(classifier.scores(batch), [e.label for e in batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - started)
    timed = sorted(times[1:])
    return timed[len(timed) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    plan = finetune_plan([f"model={args.model}", "template=it_was", "eval.n_test=8"])
    lm = PROCESS_MODELS.get(plan.cell.model)
    options = option_tokens(lm, plan.cell.template)
    train = encode_examples(lm, plan.cell.template, plan.train, options, 64)
    dev = encode_examples(lm, plan.cell.template, plan.dev, options, 64)
    batches = [train[i : i + 8] for i in range(0, len(train), 8)]
    tokens = sum(len(e.tokens) for e in train) / len(train)
    print(f"{args.model}, {torch.get_num_threads()} thread(s), load {os.getloadavg()[0]:.1f}, "
          f"batch 8, mean input {tokens:.1f} tokens")  # fmt: skip
    for label, kind, layers, lora_r in SETTINGS:
        classifier = classifier_for(lm, kind, layers, lora_r, options)
        seconds = step_seconds(classifier, batches, args.repeats)
        started = time.perf_counter()
        dev_score(classifier, dev)
        dev_s = time.perf_counter() - started
        print(f"| {label} | {seconds:.2f} s/step | dev eval (32) {dev_s:.2f} s |", flush=True)


if __name__ == "__main__":
    main()
