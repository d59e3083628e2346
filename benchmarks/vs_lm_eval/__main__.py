"""``python -m benchmarks.vs_lm_eval``: see the package docstring."""

from benchmarks.vs_lm_eval.cli import main

main()
