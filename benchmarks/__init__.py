"""Benchmarks of icl, run from the repo root as modules.

- ``python -m benchmarks.vs_lm_eval``: icl against lm-evaluation-harness (see README.md);
- ``python -m benchmarks.gpu_check``: engine exactness and speed on a GPU (see GPU_CHECK.md).

Every use of icl goes through ``benchmarks.icl_side``.
"""
