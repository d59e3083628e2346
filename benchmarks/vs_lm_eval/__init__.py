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

Every measured part runs in its own subprocess (``python -m benchmarks.vs_lm_eval --worker``);
the parent reads each child's own peak RSS from ``os.wait4``.

Modules: ``task`` (data, template, models), ``prompts`` (requests), ``icl_workers`` and
``lm_eval_side`` (the measured parts), ``timing`` (clocks and subprocesses), ``machine``,
``compare``, ``report``, ``parent`` (the run) and ``cli``.

Setup and the command (``python -m benchmarks.vs_lm_eval`` from the repo root): see
benchmarks/README.md.
"""

import os

# nothing may reach the Hugging Face hub: set before transformers / datasets / lm_eval import
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
