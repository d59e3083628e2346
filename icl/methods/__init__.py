"""Methods: what a cell does with its plan, one module each, chosen by the ``method`` config
group (``conf/method/NAME.yaml``) and dispatched through this registry.

A method declares the cell's identity (``CellIdentity``, so a resumed sweep never mistakes one
method's cell for another's), its plan (decided before any model loads), its run (prediction
rows and metrics) and which metrics ``icl-collect`` averages over seeds. A method with no model
or task (a synthetic study) needs neither in the config.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

from icl.errors import unknown_name

# the methods that ship with icl, imported on first use; each module registers itself
BUILTIN = {
    "score": "icl.methods.score",
    "generate": "icl.methods.generate",
    "finetune": "icl.methods.finetune",
}
DEFAULT_METHOD = "score"


@dataclass
class CellOutput:
    """What a method's run gives the runner to write: rows (each with ``to_json``) and metrics,
    and any further JSONL files (name -> JSON rows, e.g. fine-tuning's train_log.jsonl)."""

    rows: list
    metrics: dict
    files: dict[str, list[dict]] = field(default_factory=dict)


@dataclass(frozen=True)
class Method:
    name: str
    # cfg -> CellIdentity; cheap: a finished cell is skipped before anything is planned
    identity: Callable
    # (cfg, identity) -> the method's plan, checked and resolved before any model loads
    plan: Callable
    # (plan, ModelStore) -> CellOutput
    run: Callable
    # the type of its prediction rows: from_json, to_json and TABLE_COLUMNS
    row_type: type
    # the metrics averaged over seeds in the collected tables; the first is the headline
    # (what icl-run returns to a Hydra sweeper)
    summary_metrics: tuple[str, ...] = ()
    # metrics -> the line icl-run logs when a cell finishes
    describe: Callable[[dict], str] = field(default=lambda metrics: "")
    # (cfg, a finished run's metrics) -> what this config asks for that the run did not
    # compute (settings outside the identity, e.g. a perplexity turned off there): the cell
    # runs again rather than report what it never computed
    missing: Callable[[object, dict], list[str]] = field(default=lambda cfg, metrics: [])

    @property
    def headline(self) -> str:
        return self.summary_metrics[0]


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    """The method by name; the error lists every method there is."""
    if name not in METHODS and name in BUILTIN:
        importlib.import_module(BUILTIN[name])
    if name not in METHODS:
        raise unknown_name("method", name, {*BUILTIN, *METHODS})
    return METHODS[name]


def summary_metrics(method_names) -> list[str]:
    """The summary metrics of every method named (runs from before methods were ``score``)."""
    names = [DEFAULT_METHOD if not isinstance(n, str) else n for n in method_names]
    return list(dict.fromkeys(m for n in names for m in get_method(n).summary_metrics))
