"""The ready-made studies: which sweeps each runs and which reports it writes.

A study is one or more ``icl-run`` multiruns of its experiment config (``conf/experiment``),
then tables (``tables``) and figures (``icl.plots``) from the collected runs, written by
``reports``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from icl.errors import unknown_name

LOCAL_TASKS = ("sst2", "rotten_tomatoes", "agnews", "rte", "cb")
# the zero-shot cells a study compares its k-shot cells with
ZERO_SHOT = ("demos.k=0", "demos.labels=gold", "demos.seed=1", "demos.selection=random")


@dataclass(frozen=True)
class Study:
    """An experiment config, the extra sweeps it needs, and what it reports."""

    name: str
    # extra override sets, each one more multirun of the experiment (e.g. the zero-shot cells)
    extra_sweeps: tuple[tuple[str, ...], ...] = ()
    # one multirun per task, for sweeps whose values depend on the task (its templates)
    per_task: tuple[str, ...] = ()
    # the report kinds (tables and figures) of this study
    reports: tuple[str, ...] = field(default_factory=tuple)


# finetune_vs_icl's other rows: the classifier head (label words unused: the template's), ICL
# with the 32 training examples as demonstrations, and zero-shot (one seed: no demonstrations)
FINETUNE_ROWS = (
    ("finetune.kind=head", "label_words=null"),
    ("method=score", "demos.k=32", "demos.sampling=balanced"),
    ("method=score", "demos.k=0", "demos.seed=1"),
)
STUDIES = {
    "demo": Study("demo", reports=("curve",)),
    "min2022_labels": Study(
        "min2022_labels",
        extra_sweeps=(("demos.k=0", "demos.labels=gold", "demos.seed=1"),),
        reports=("labels",),
    ),
    "template_sweep": Study("template_sweep", per_task=LOCAL_TASKS, reports=("templates",)),
    "label_words": Study("label_words", reports=("label_words",)),
    "shots_curve": Study("shots_curve", reports=("shots",)),
    "scoring_rules": Study("scoring_rules", reports=("rules",)),
    "decoding": Study("decoding", reports=("decoding",)),
    "selection": Study(
        "selection",
        extra_sweeps=(
            ZERO_SHOT,
            ("model=gemma3-270m", "format=plain"),
            ("model=gemma3-270m", "format=plain", *ZERO_SHOT),
        ),
        reports=("selection",),
    ),
    "finetune_vs_icl": Study("finetune_vs_icl", extra_sweeps=FINETUNE_ROWS, reports=("finetune",)),
}
QUICK_TASKS = {"template_sweep": ("sst2", "cb")}


def get_study(name: str) -> Study:
    if name not in STUDIES:
        raise unknown_name("study", name, STUDIES)
    return STUDIES[name]


def sweep_commands(study: Study, quick: bool, overrides: list[str]) -> list[list[str]]:
    """The icl-run argument lists that run a study (quick: its ``NAME_quick`` config)."""
    experiment = f"+experiment={study.name}_quick" if quick else f"+experiment={study.name}"
    tasks = QUICK_TASKS.get(study.name, study.per_task) if quick else study.per_task
    if study.per_task:
        # a task= override picks the per-task sweeps; passed on as well, it would run every
        # sweep on its task and write the cells into the other tasks' folders
        chosen, overrides = split_task_override(overrides)
        tasks = chosen or tasks
    base = [[experiment, f"task={t}"] for t in tasks] or [[experiment]]
    commands = []
    for args in base:
        commands.append(args + overrides)
        for extra in study.extra_sweeps:
            # the extra sweep's own values win over the user's (e.g. its single zero-shot seed)
            fixed = {o.split("=", 1)[0] for o in extra}
            kept = [o for o in overrides if o.split("=", 1)[0] not in fixed]
            commands.append(args + list(extra) + kept)
    return commands


def split_task_override(overrides: list[str]) -> tuple[tuple[str, ...], list[str]]:
    """The tasks a ``task=a,b`` override names (the last one wins, as in Hydra), and the
    other overrides."""
    tasks: tuple[str, ...] = ()
    rest = []
    for override in overrides:
        key, sep, value = override.partition("=")
        if sep and key.lstrip("+~") == "task":
            tasks = tuple(t.strip() for t in value.split(",") if t.strip())
        else:
            rest.append(override)
    return tasks, rest
