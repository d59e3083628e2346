"""One prepared GPU check: engine exactness on the device and examples/s of the scoring engines.

Runs where only torch and transformers are installed (no model weights travel): models are the
SmolLM2-135M and Gemma-3-270M architectures with random weights, which cost the same to run.

    python -m benchmarks.gpu_check --device cuda --out results/gpu_check.md

Sections: the two-part attention against a float64 softmax (fused kernels and the manual
path, float32 and bfloat16); engine exactness against ``naive`` (float32) and ``prefix_shared``
against ``prefix`` in the benchmark dtype; a micro-benchmark of the attention function alone
(the manual path, the fused kernels, optionally torch.compile and an older implementation);
examples/s per model and engine, with ``batch_size=auto``'s choice. A smoke test on a CPU:
``--device cpu --dtype float32 --layers 2 --n 64 --batch-size 16 --prefix-len 60``.
"""
