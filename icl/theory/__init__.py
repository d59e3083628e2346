"""Theory studies: in-context learning in models small enough to solve or train in seconds, with
no language model, task or prompt (``icl-study NAME`` runs them beside the measured studies).

- ``icl_as_gd``: linear self-attention trained on random linear-regression tasks against one
  step of gradient descent (von Oswald et al. 2023), and the construction that equals it;
- ``bayes_early_ascent``: the Bayes-optimal predictor of a Gaussian mixture of regression tasks
  (Lin & Lee 2024), whose risk rises before it falls when the inputs point at the wrong task.

A theory study is one computation, not a sweep of cells: its config (``conf/theory/NAME.yaml``
on a schema of ``icl.theory.config``) goes in whole, its tables come out as CSV files beside a
``metrics.json`` that names what produced them, and its report (Markdown tables, figures) is
drawn from those files, so a finished study is reported again without being recomputed
(``icl.theory.runner``). It shares the run files, the figure helpers and the errors of the
rest of icl.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from icl.errors import unknown_name

# the theory studies that ship with icl, imported on first use; each module registers itself
BUILTIN = {
    "icl_as_gd": "icl.theory.icl_as_gd",
    "bayes_early_ascent": "icl.theory.bayes_early_ascent",
}


@dataclass(frozen=True)
class Theory:
    name: str
    # cfg -> ({table name: DataFrame}, headline metrics): the whole computation
    compute: Callable
    # (results folder, tables, cfg) -> (text to print, figure paths): Markdown tables, figures
    report: Callable
    # cfg -> None, raising ICLError: what must hold before the computation starts
    check: Callable = lambda cfg: None


THEORIES: dict[str, Theory] = {}


def register(theory: Theory) -> Theory:
    THEORIES[theory.name] = theory
    return theory


def get_theory(name: str) -> Theory:
    """The theory study by name; the error lists every one there is."""
    if name not in THEORIES and name in BUILTIN:
        importlib.import_module(BUILTIN[name])
    if name not in THEORIES:
        raise unknown_name("theory study", name, {*BUILTIN, *THEORIES})
    return THEORIES[name]
