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


def rescore(root: Path, rules: list[str]) -> int:
    """Add cheap rules to every finished run under root (``icl-collect --rescore``)."""
    from icl import runner
    from icl.results import METRICS_FILE

    run_dirs = sorted(path.parent for path in Path(root).rglob(METRICS_FILE))
    for run_dir in run_dirs:
        metrics = runner.rescore_cell(run_dir, rules)
        log.info("%s: %s", run_dir, {r: m["accuracy"] for r, m in metrics["rules"].items()})
    return len(run_dirs)


def collect(argv: list[str] | None = None) -> None:
    """Entry point of ``icl-collect DIR [--rescore RULES]``."""
    from icl.results import (
        format_balance_table,
        format_rule_table,
        format_table,
        rule_columns,
        rule_runs,
        summarise_seeds,
        write_summary,
    )

    parser = argparse.ArgumentParser(description="Gather every run under DIR into one table.")
    parser.add_argument("dir", type=Path)
    parser.add_argument(
        "--rescore",
        default=None,
        metavar="RULES",
        help="first add these rules (comma-separated: direct_mean, calibrated, pmi) to every "
        "finished run from its stored log-probs and only the extra passes they need",
    )
    args = parser.parse_args(argv)
    try:
        if args.rescore:
            setup()
            logging.basicConfig(level=logging.INFO, format="%(message)s")
            rescore(args.dir, [r.strip() for r in args.rescore.split(",") if r.strip()])
        runs, seeds = write_summary(args.dir)
    except FileNotFoundError as err:
        parser.exit(2, f"icl-collect: error: {err}\n")
    except ICLError as err:
        parser.exit(2, f"icl-collect: error: {err}\n")
    print(f"{len(runs)} runs -> {args.dir / 'summary.csv'}, {args.dir / 'summary_seeds.csv'}")
    print(format_table(seeds))
    if rule_columns(runs):
        by_rule = summarise_seeds(rule_runs(runs))
        print(f"\naccuracy (%) per rule -> {args.dir / 'summary_rules.csv'}")
        print(format_rule_table(by_rule))
        if "calibrated" in set(by_rule["scored_rule"]):
            print("\nprediction shares per class, before and after calibration")
            print(format_balance_table(by_rule))


def plot(argv: list[str] | None = None) -> None:
    """Entry point of ``icl-plot DIR``."""
    from icl.plots import plot_accuracy_vs_k
    from icl.results import rule_runs, write_summary

    parser = argparse.ArgumentParser(description="Plot accuracy against k per label setting.")
    parser.add_argument("dir", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="PNG path (DIR/accuracy_vs_k.png)")
    parser.add_argument("--metric", default="accuracy", choices=["accuracy", "macro_f1"])
    parser.add_argument(
        "--by",
        default="labels",
        choices=["labels", "rule"],
        help="a line per label setting, or per scoring rule (DIR/accuracy_vs_k_by_rule.png)",
    )
    args = parser.parse_args(argv)
    try:
        runs = write_summary(args.dir)[0]  # re-collected, so the figure matches the runs on disk
        if args.by == "rule":
            runs = rule_runs(runs)
    except (FileNotFoundError, ValueError) as err:
        parser.exit(2, f"icl-plot: error: {err}\n")
    suffix = "_by_rule" if args.by == "rule" else ""
    out = args.out or args.dir / f"{args.metric}_vs_k{suffix}.png"
    plot_accuracy_vs_k(
        runs, out, metric=args.metric, by="scored_rule" if args.by == "rule" else "labels"
    )
    print(f"figure -> {out}")
