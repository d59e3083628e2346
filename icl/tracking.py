"""Optional experiment tracking (wandb), off unless ``logger=wandb``."""

from __future__ import annotations

from omegaconf import OmegaConf

from icl.config import LOGGERS
from icl.errors import unknown_name


def log_run(cfg, metrics: dict, rows: list[dict]) -> None:
    """Send one finished cell's config, metrics and predictions table to the chosen tracker."""
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
        name=f"{metrics['task']}-{metrics['model']}-k{metrics['k']}-{metrics['labels']}"
        f"-s{metrics['seed']}",
        tags=list(cfg.logger.tags),
        dir=cfg.out_dir,
        reinit="finish_previous",
    )
    scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    for rule, scored in (metrics.get("rules") or {}).items():  # every scoring rule computed
        scalars.update({f"{rule}/{name}": scored[name] for name in ("accuracy", "macro_f1")})
    run.log(scalars)
    columns = [
        "example_id",
        "prediction",
        "gold",
        "correct",
        "zero_shot_perplexity",
        "kshot_perplexity",
    ]
    table = wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in rows])
    run.log({"predictions": table})
    run.finish()
