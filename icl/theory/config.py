"""Typed config schemas of the theory studies (``conf/theory/NAME.yaml`` names one).

A theory study has no model, task or demonstrations of text, so its settings are not fields of
``icl.config.RunConfig``: each study composes its own config, from ``conf/theory``, onto one of
these schemas, so a misspelt key fails at compose time as it does for ``icl-run``.
``register_configs`` stores them in Hydra's ConfigStore (``icl.cli`` calls it).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TheoryConfig:
    """What every theory study's config has."""

    # recompute into a results folder that holds a finished study (of this config or another)
    overwrite: bool = False


@dataclass
class TrainConfig:
    """Adam on fresh random tasks each step (von Oswald et al.: lr 1e-3, betas 0.9/0.98)."""

    steps: int = 5000
    batch: int = 2048
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-8
    # weights start from a truncated normal of variance init_scale / fan_in (the reference's
    # VarianceScaling(0.002)): small, so the layer starts near the zero predictor
    init_scale: float = 0.002
    # the comparisons with gradient descent are measured every eval_every steps (and at 0)
    eval_every: int = 100


@dataclass
class LineSearchConfig:
    """GD's learning rate: the minimiser of its loss on tasks of their own (grid, then Brent)."""

    tasks: int = 10000
    eta_max: float = 20.0
    grid: int = 81


@dataclass
class IclAsGdConfig(TheoryConfig):
    """In-context linear regression with linear self-attention (von Oswald et al. 2023)."""

    seed: int = 0
    # input dimension d, output dimension, and context pairs N per task
    d: int = 10
    d_out: int = 1
    n_context: int = 10
    # x ~ U(-input_range/2, input_range/2)^d, w ~ N(0, weight_scale^2 I), y = w x (no noise)
    input_range: float = 1.0
    weight_scale: float = 1.0
    # the tasks every comparison is measured on (fixed across training steps)
    eval_tasks: int = 10000
    train: TrainConfig = field(default_factory=TrainConfig)
    line_search: LineSearchConfig = field(default_factory=LineSearchConfig)
    # extension: K-layer models (one layer's weights applied K times) against K GD steps
    depths: list[int] = field(default_factory=lambda: [2, 3])
    depth_steps: int = 500
    # extension: the trained one-layer model and GD on inputs scaled by these factors
    input_scales: list[float] = field(
        default_factory=lambda: [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0]
    )


@dataclass
class BayesEarlyAscentConfig(TheoryConfig):
    """Lin & Lee 2024's Gaussian mixture of linear-regression tasks (their Figure 6 setting)."""

    seed: int = 0
    # the input dimensions d; the groups' centres are Lin & Lee's (2 groups for d=1, else 3)
    dims: list[int] = field(default_factory=lambda: [1, 3])
    # demonstrations k; for each trial the k shown are the first k of the largest (nested)
    ks: list[int] = field(
        default_factory=lambda: [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]
    )
    # Monte Carlo draws of the demonstrations and the query per (d, k)
    trials: int = 100000
    # the prior: x ~ N(mu, sigma^2 I), y = w x + N(0, tau^2), mu ~ N(mu_m, sigma_mu^2 I),
    # w ~ N(w_m, sigma_w^2 I) for group m, groups equally likely
    sigma: float = 1.0
    tau: float = 2.0
    sigma_mu: float = 0.05
    sigma_w: float = 0.05
    # the test task: inputs around group input_group's centre, weights group weight_group's
    # (1-based); the labels the demonstrations show carry this noise (Lin & Lee: none)
    input_group: int = 1
    weight_group: int = 2
    demo_label_noise: float = 0.0
    # gold: y = w x; random: each y is an independent draw of the task's labels (the label of
    # another input), so the label distribution is right and the input-label mapping is gone
    labels: list[str] = field(default_factory=lambda: ["gold", "random"])
    # the real-model curve drawn beside the theory: the shots table of the shots_curve study
    # (null: results/shots_curve/shots.csv when present, else experiments/shots_curve/shots.csv)
    shots_csv: str | None = None


SCHEMAS = {"icl_as_gd": IclAsGdConfig, "bayes_early_ascent": BayesEarlyAscentConfig}


def register_configs() -> None:
    """Store each study's schema as ``NAME_schema`` for ``conf/theory/NAME.yaml`` to name."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    for name, schema in SCHEMAS.items():
        cs.store(name=f"{name}_schema", node=schema)
