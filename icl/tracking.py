"""Optional experiment tracking (wandb), off unless ``logger=wandb``."""

from __future__ import annotations

from omegaconf import OmegaConf

from icl.errors import unknown_name

LOGGERS = ("none", "wandb")


def log_run(cfg, metrics: dict, rows) -> None:
    """Send one finished cell's config, metrics and predictions table to the chosen tracker
    (``rows``: the cell's typed prediction rows, e.g. ``icl.rows.PredictionRow``)."""
    if cfg.logger.name == "none":
        return
    if cfg.logger.name != "wandb":
        raise unknown_name("logger", cfg.logger.name, LOGGERS)
    import wandb

    run = wandb.init(
        project=cfg.logger.project,
        entity=cfg.logger.entity,
        mode=cfg.logger.mode,
        config=OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True),
        name=run_name(metrics),
        tags=list(cfg.logger.tags),
        dir=cfg.out_dir,
        reinit="finish_previous",
    )
    scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    for rule, scored in (metrics.get("rules") or {}).items():  # every scoring rule computed
        scalars.update({f"{rule}/{name}": scored[name] for name in ("accuracy", "macro_f1")})
    run.log(scalars)
    columns, data = table_of(rows)
    run.log({"predictions": wandb.Table(columns=columns, data=data)})
    run.finish()


def run_name(metrics: dict) -> str:
    """task-model-kK-labels-sSEED for a cell on a task, else method-sSEED."""
    if metrics.get("task") is None:
        return f"{metrics['method']}-s{metrics.get('seed')}"
    return (
        f"{metrics['task']}-{metrics['model']}-k{metrics['k']}-{metrics['labels']}"
        f"-s{metrics['seed']}"
    )


def table_of(rows) -> tuple[list[str], list[list]]:
    """A predictions table: the row type's ``TABLE_COLUMNS``, one list per row."""
    if not rows:
        return [], []
    columns = list(type(rows[0]).TABLE_COLUMNS)
    return columns, [[row.to_json()[c] for c in columns] for row in rows]
