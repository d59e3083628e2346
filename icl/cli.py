"""Console scripts: ``icl-run`` (the Hydra app), ``icl-collect``, ``icl-plot`` and ``icl-study``.

The only code that runs Hydra (``icl.config.register_configs`` stores the schemas for it).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import subprocess
import sys
import time
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
    """Run one composed config (a DictConfig from Hydra or compose()); return the headline
    metric of its method (accuracy for ``score``), which a sweeper can optimise."""
    from icl import runner, tracking
    from icl.methods import get_method
    from icl.results import read_predictions

    run_cfg = OmegaConf.to_object(checked(cfg))
    method = get_method(run_cfg.method.name)
    metrics = runner.run_cell(run_cfg)
    if run_cfg.logger.name != "none":
        rows = read_predictions(Path(run_cfg.out_dir))
        tracking.log_run(run_cfg, metrics, [method.row_type.from_json(r) for r in rows])
    log.info("%s -> %s", method.describe(metrics), run_cfg.out_dir)
    return metrics[method.headline]


# config groups whose choice on the command line is checked before Hydra composes
CHECKED_GROUPS = ("task", "model", "method")


def config_dirs(argv: list[str]) -> list[Path] | None:
    """conf/ and the folders --config-dir and hydra.searchpath add (None: a pkg:// entry, which
    this check cannot list)."""
    dirs = [conf_dir()]
    for i, arg in enumerate(argv):
        if arg in ("--config-dir", "-cd") and i + 1 < len(argv):
            dirs.append(Path(argv[i + 1]))
        elif arg.startswith("--config-dir="):
            dirs.append(Path(arg.split("=", 1)[1]))
        elif arg.startswith("hydra.searchpath="):
            for entry in arg.split("=", 1)[1].strip("[]").split(","):
                entry = entry.strip().strip("'\"")
                if entry.startswith("pkg://"):
                    return None
                dirs.append(Path(entry.removeprefix("file://")))
    return dirs


def unknown_choice(argv: list[str]) -> str | None:
    """The message for ``task=NAME`` (model, method) naming no config file, with the names
    there are and how to add a config from outside the repo; None when all are found."""
    dirs = config_dirs(argv)
    if dirs is None:
        return None
    for arg in argv:
        group, _, value = arg.partition("=")
        if group not in CHECKED_GROUPS or not re.fullmatch(r"[\w.-]+(,[\w.-]+)*", value):
            continue
        known = sorted({p.stem for d in dirs for p in (d / group).glob("*.yaml")})
        for name in value.split(","):
            if name not in known:
                return (
                    f"unknown {group} {name!r}; valid names: {', '.join(known)}. A {group} "
                    f"config of your own, outside the repo: write DIR/{group}/{name}.yaml and "
                    f"add --config-dir DIR (or hydra.searchpath=[file://DIR])"
                )
    return None


def run() -> None:
    """Entry point of ``icl-run``."""
    import hydra
    from hydra.core.hydra_config import HydraConfig

    setup()
    problem = unknown_choice(sys.argv[1:])
    if problem:
        print(f"icl-run: error: {problem}", file=sys.stderr)
        sys.exit(2)

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
    from icl.methods.rescore import rescore_cell
    from icl.results import METRICS_FILE

    run_dirs = sorted(path.parent for path in Path(root).rglob(METRICS_FILE))
    for run_dir in run_dirs:
        metrics = rescore_cell(run_dir, rules)
        log.info("%s: %s", run_dir, {r: m["accuracy"] for r, m in metrics["rules"].items()})
    return len(run_dirs)


def collect(argv: list[str] | None = None) -> None:
    """Entry point of ``icl-collect DIR [--report KIND] [--rescore RULES]``."""
    from icl.studies.reports import REPORTS, summary, tables, write_effects

    parser = argparse.ArgumentParser(description="Gather every run under DIR into one table.")
    parser.add_argument("dir", type=Path)
    parser.add_argument(
        "--report", default="curve", choices=REPORTS, help="which study's tables (curve: k, labels)"
    )
    parser.add_argument(
        "--rescore",
        default=None,
        metavar="RULES",
        help="first add these scoring rules (comma-separated: direct_mean, calibrated, pmi) to "
        "every finished run, from its stored log-probs and only the extra passes they need",
    )
    parser.add_argument(
        "--effects",
        nargs="?",
        const="",
        default=None,
        metavar="COLUMNS",
        help="also write effects.csv and effects.md: paired accuracy differences with 95%% CIs "
        "and p-values between matched cells, along COLUMNS (comma-separated identity columns, "
        "e.g. labels,k; every column that varies when omitted)",
    )
    args = parser.parse_args(argv)
    try:
        if args.rescore:
            setup()
            logging.basicConfig(level=logging.INFO, format="%(message)s")
            rescore(args.dir, [r.strip() for r in args.rescore.split(",") if r.strip()])
        runs = summary(args.dir)
        text = tables(args.report, args.dir, runs=runs)
        if args.effects is not None:
            columns = [c.strip() for c in args.effects.split(",") if c.strip()] or None
            effects = write_effects(args.dir, runs, columns)
    except (FileNotFoundError, ICLError) as err:
        parser.exit(2, f"icl-collect: error: {err}\n")
    print(f"runs -> {args.dir / 'summary.csv'}, {args.dir / 'summary_seeds.csv'}")
    print(text)
    if args.effects is not None:
        print(f"\neffects -> {args.dir / 'effects.csv'}, {args.dir / 'effects.md'}\n")
        print(effects)
    report_incomplete(args.dir)


def report_incomplete(root: Path) -> None:
    """List the cells under root that the tables leave out (unfinished or unreadable)."""
    from icl.collect import incomplete_runs

    missing = incomplete_runs(root)
    if missing:
        print(f"\n{len(missing)} cell(s) not in these tables:")
        print("\n".join(f"  {line}" for line in missing))


def plot(argv: list[str] | None = None) -> None:
    """Entry point of ``icl-plot DIR [--report KIND]``."""
    from icl.studies.reports import REPORTS, figures

    parser = argparse.ArgumentParser(description="Draw a study's figures from the runs in DIR.")
    parser.add_argument("dir", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="PNG path of the curve report")
    parser.add_argument(
        "--metric",
        default=None,
        help="a metric of the runs (accuracy, macro_f1, ...); the method's headline by default",
    )
    parser.add_argument("--report", default="curve", choices=REPORTS, help="which study's figures")
    args = parser.parse_args(argv)
    try:
        paths = figures(args.report, args.dir, args.metric, out=args.out)
    except (FileNotFoundError, ICLError) as err:
        parser.exit(2, f"icl-plot: error: {err}\n")
    for path in paths:
        print(f"figure -> {path}")
    report_incomplete(args.dir)


def study(argv: list[str] | None = None) -> None:
    """Entry point of ``icl-study NAME [--quick] [OVERRIDE ...]``: sweeps, tables, figures."""
    from icl.studies import STUDIES, get_study, sweep_commands
    from icl.studies.reports import figures, summary, tables, write_effects
    from icl.theory import BUILTIN as THEORIES

    parser = argparse.ArgumentParser(
        description="Run a ready-made study (conf/experiment/NAME.yaml, or a theory study: "
        "conf/theory/NAME.yaml) and write its report."
    )
    parser.add_argument("name", choices=sorted({*STUDIES, *THEORIES}))
    parser.add_argument("--quick", action="store_true", help="the small form (NAME_quick.yaml)")
    parser.add_argument("--dir", type=Path, default=None, help="results folder (results/NAME)")
    parser.add_argument("--report-only", action="store_true", help="skip the sweeps")
    parser.add_argument(
        "overrides",
        nargs="*",
        help="icl-run overrides, e.g. model=gemma3-270m; for a theory study, its config's "
        "(e.g. trials=20000)",
    )
    args = parser.parse_intermixed_args(argv)
    root = args.dir or Path("results") / (f"{args.name}_quick" if args.quick else args.name)
    started = time.perf_counter()
    if args.name in THEORIES:
        try:
            theory_study(args.name, args.quick, list(args.overrides), root, args.report_only)
        except ICLError as err:
            parser.exit(2, f"icl-study: error: {err}\n")
        print(f"{args.name}: done in {time.perf_counter() - started:.0f} s -> {root}")
        return
    chosen = get_study(args.name)
    if not args.report_only:
        for command in sweep_commands(chosen, args.quick, list(args.overrides)):
            task = next((a.split("=", 1)[1] for a in command if a.startswith("task=")), None)
            sweep_dir = root / task if chosen.per_task and task else root
            command = [*command, f"hydra.sweep.dir={sweep_dir}"]
            print("icl-run " + " ".join(command), flush=True)
            subprocess.run([*ICL_RUN, *command], check=True)
    runs = summary(root)  # collected once for every report of the study
    for kind in chosen.reports:
        print(tables(kind, root, runs=runs))
        for path in figures(kind, root, runs=runs):
            print(f"figure -> {path}")
    try:  # the paired effects of every identity column the study varies
        print(write_effects(root, runs))
    except ICLError as err:  # the runs stay reported; only the effects are missing
        print(f"effects: {err}", file=sys.stderr)
    print(f"{args.name}: done in {time.perf_counter() - started:.0f} s -> {root}")


def theory_config(name: str, quick: bool, overrides: list[str]):
    """A theory study's typed config: conf/theory/NAME.yaml (NAME_quick.yaml) with overrides;
    a key the schema lacks fails here, before any computation."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    from icl.theory.config import register_configs as register_theory_configs

    register_theory_configs()
    config_name = f"{name}_quick" if quick else name
    try:
        with initialize_config_dir(config_dir=str(conf_dir() / "theory"), version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=overrides)
    except HydraException as err:
        cause = f" ({err.__cause__})" if err.__cause__ else ""
        raise ICLError(f"{name}: {err}{cause}".replace("\n", " ")) from err
    return OmegaConf.to_object(cfg)


def theory_study(name: str, quick: bool, overrides: list[str], root: Path, report_only: bool):
    """Run (or find finished) a theory study into root and print its report."""
    from icl.theory.runner import run_theory

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = theory_config(name, quick, overrides)
    text, paths, _ = run_theory(name, cfg, root, report_only=report_only)
    print(text)
    for path in paths:
        print(f"figure -> {path}")


# icl-run in a child process: each sweep is its own Hydra app invocation
ICL_RUN = [sys.executable, "-c", "import sys, icl.cli; sys.argv[0] = 'icl-run'; icl.cli.run()"]
