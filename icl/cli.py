"""Console scripts: ``icl-run`` (the Hydra app), ``icl-collect`` and ``icl-plot``.

This is the only module that knows Hydra.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from omegaconf import OmegaConf

from icl.config import register_configs
from icl.data import default_data_dir, package_file, project_root
from icl.errors import ICLError

log = logging.getLogger("icl")


def conf_dir() -> Path:
    """The ``conf/`` folder of the checkout ($ICL_CONF_DIR overrides)."""
    return Path(os.environ.get("ICL_CONF_DIR") or project_root() / "conf")


def register_resolvers() -> None:
    """``${icl.pkgfile:dist,path}`` finds a file shipped in a package; ``${icl.data_dir:}``."""
    if not OmegaConf.has_resolver("icl.pkgfile"):
        OmegaConf.register_new_resolver("icl.pkgfile", package_file)
    if not OmegaConf.has_resolver("icl.names"):
        # a sweep over every key of a mapping, e.g. all templates of the task
        OmegaConf.register_new_resolver("icl.names", lambda mapping: ",".join(mapping))
    if not OmegaConf.has_resolver("icl.data_dir"):
        OmegaConf.register_new_resolver("icl.data_dir", default_data_dir)


def setup() -> None:
    register_configs()
    register_resolvers()


def checked(cfg):
    """The config merged onto the schema, so keys added with ``+`` cannot slip past it."""
    from omegaconf.errors import ConfigKeyError, MissingMandatoryValue

    from icl.config import RunConfig

    try:
        plain = OmegaConf.to_container(cfg, resolve=False)
        return OmegaConf.merge(OmegaConf.structured(RunConfig), plain)
    except ConfigKeyError as err:
        raise ICLError(f"unknown config key: {err.msg.splitlines()[0]}") from err
    except MissingMandatoryValue as err:
        raise ICLError(f"{err.msg.splitlines()[0]}: set it on the command line") from err


def execute(cfg) -> float:
    """Run one composed config (a DictConfig from Hydra or compose()) and return accuracy."""
    from icl import runner, tracking
    from icl.results import read_predictions

    run_cfg = OmegaConf.to_object(checked(cfg))
    metrics = runner.run_cell(run_cfg)
    if run_cfg.logger.name != "none":
        tracking.log_run(run_cfg, metrics, read_predictions(Path(run_cfg.out_dir)))
    log.info(
        "%s k=%s labels=%s seed=%s: accuracy %.3f macro-F1 %.3f (n=%d) -> %s",
        metrics["task"],
        metrics["k"],
        metrics["labels"],
        metrics["seed"],
        metrics["accuracy"],
        metrics["macro_f1"],
        metrics["n"],
        run_cfg.out_dir,
    )
    return metrics["accuracy"]


def run() -> None:
    """Entry point of ``icl-run``."""
    import hydra
    from hydra.core.hydra_config import HydraConfig

    setup()

    @hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")
    def _main(cfg) -> float:
        try:
            cfg.out_dir = HydraConfig.get().runtime.output_dir
            return execute(cfg)
        except ICLError as err:
            print(f"icl-run: error: {err}", file=sys.stderr)
            sys.exit(2)

    _main()


def collect(argv: list[str] | None = None) -> None:
    """Entry point of ``icl-collect DIR``."""
    from icl.results import format_table, write_summary

    parser = argparse.ArgumentParser(description="Gather every run under DIR into one table.")
    parser.add_argument("dir", type=Path)
    args = parser.parse_args(argv)
    try:
        runs, seeds = write_summary(args.dir)
    except FileNotFoundError as err:
        parser.exit(2, f"icl-collect: error: {err}\n")
    print(f"{len(runs)} runs -> {args.dir / 'summary.csv'}, {args.dir / 'summary_seeds.csv'}")
    print(format_table(seeds))


def plot(argv: list[str] | None = None) -> None:
    """Entry point of ``icl-plot DIR``."""
    from icl.plots import plot_accuracy_vs_k
    from icl.results import write_summary

    parser = argparse.ArgumentParser(description="Plot accuracy against k per label setting.")
    parser.add_argument("dir", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="PNG path (DIR/accuracy_vs_k.png)")
    parser.add_argument("--metric", default="accuracy", choices=["accuracy", "macro_f1"])
    args = parser.parse_args(argv)
    try:
        runs = write_summary(args.dir)[0]  # re-collected, so the figure matches the runs on disk
    except FileNotFoundError as err:
        parser.exit(2, f"icl-plot: error: {err}\n")
    out = args.out or args.dir / f"{args.metric}_vs_k.png"
    plot_accuracy_vs_k(runs, out, metric=args.metric)
    print(f"figure -> {out}")
