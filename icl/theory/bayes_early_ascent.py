"""Study ``bayes_early_ascent``: the risk of Lin & Lee's Bayes-optimal predictor against the
number of demonstrations k, when the demonstrations' inputs point at the wrong task group.

With few demonstrations the inputs retrieve a group (task retrieval) and the prediction uses its
weights, which here are the wrong ones, so the risk first rises with k (early ascent); once the
labels outweigh the prior the predictor learns the task's own weights (task learning) and the
risk falls. With random labels the inputs still retrieve, but there is nothing to learn.

Each trial draws the query and a nested sequence of demonstrations (the first k of the largest
k); only their sufficient statistics are drawn, exactly, so k = 8192 costs what k = 8 does.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from icl.data import project_root
from icl.errors import ICLError
from icl.theory import Theory, register
from icl.theory.bayes_mixture import MixturePrior, lin_lee_prior, posterior
from icl.theory.config import BayesEarlyAscentConfig

LABEL_SETTINGS = ("gold", "random")
# the columns the real-model curve must have (shots.csv of the shots_curve study)
SHOTS_COLUMNS = ("task", "labels", "k", "mean")


def scatter_matrices(rng: np.random.Generator, df: int, d: int, size: int) -> np.ndarray:
    """``size`` draws of sum_{j<df} z_j z_j^T, z ~ N(0, I_d): Wishart(df, I) by Bartlett's
    decomposition when df >= d, else the sum itself (size, d, d)."""
    if df < d:
        z = rng.standard_normal((size, df, d))
        return z.transpose(0, 2, 1) @ z
    lower = np.zeros((size, d, d))
    rows, cols = np.tril_indices(d, -1)
    lower[:, rows, cols] = rng.standard_normal((size, len(rows)))
    for i in range(d):
        lower[:, i, i] = np.sqrt(rng.chisquare(df - i, size))
    return lower @ lower.transpose(0, 2, 1)


def psd_sqrt(matrices: np.ndarray) -> np.ndarray:
    """The symmetric square root of each positive semi-definite matrix (..., d, d)."""
    values, vectors = np.linalg.eigh(matrices)
    roots = np.sqrt(np.clip(values, 0.0, None))
    return (vectors * roots[..., None, :]) @ vectors.swapaxes(-1, -2)


def input_block(rng, n: int, mean: np.ndarray, sigma: float, size: int):
    """The sum (size, d) and the sum of x x^T (size, d, d) of n inputs x ~ N(mean, sigma^2 I),
    drawn exactly: the sum is normal, the scatter about the block's mean an independent
    Wishart(n - 1), and sum x x^T = scatter + sum sum^T / n."""
    d = len(mean)
    total = n * mean + sigma * np.sqrt(n) * rng.standard_normal((size, d))
    scatter = sigma**2 * scatter_matrices(rng, n - 1, d, size)
    return total, scatter + total[:, :, None] * total[:, None, :] / n


def label_block(rng, setting: str, sum_x, sum_xx, task_mu, task_w, sigma, noise):
    """The sum of x y over a block of inputs with these sums, given the inputs: gold labels are
    w.x plus noise; a random label is an independent draw of the task's labels (mean w.mu,
    variance sigma^2 |w|^2 + noise^2), so sum x y = mean sum_x + spread sqrt(sum_xx) z."""
    z = rng.standard_normal(sum_x.shape)
    if setting == "gold":
        exact = sum_xx @ task_w
        if noise == 0:
            return exact
        return exact + noise * np.einsum("tij,tj->ti", psd_sqrt(sum_xx), z)
    if setting == "random":
        spread = np.sqrt(sigma**2 * task_w @ task_w + noise**2)
        return task_w @ task_mu * sum_x + spread * np.einsum("tij,tj->ti", psd_sqrt(sum_xx), z)
    raise ICLError(f"unknown label setting {setting!r}; valid names: {', '.join(LABEL_SETTINGS)}")


def demonstration_statistics(rng, ks, task_mu, task_w, sigma, trials, labels, noise=0.0):
    """For each k in increasing order, the running sums of each trial's first k demonstrations:
    yields ``(k, sum_x, sum_xx, {setting: sum_xy})``; the label settings share the inputs."""
    d = len(task_mu)
    sum_x, sum_xx = np.zeros((trials, d)), np.zeros((trials, d, d))
    sum_xy = {setting: np.zeros((trials, d)) for setting in labels}
    seen = 0
    for k in sorted(ks):
        if k > seen:
            block_x, block_xx = input_block(rng, k - seen, task_mu, sigma, trials)
            sum_x, sum_xx = sum_x + block_x, sum_xx + block_xx
            for setting in labels:
                block = label_block(rng, setting, block_x, block_xx, task_mu, task_w, sigma, noise)
                sum_xy[setting] = sum_xy[setting] + block
            seen = k
        yield k, sum_x, sum_xx, dict(sum_xy)


def early_ascent_task(prior: MixturePrior, input_group: int, weight_group: int):
    """The test task's input mean and weights: two groups' centres (1-based)."""
    groups = len(prior.weights)
    for name, group in (("input_group", input_group), ("weight_group", weight_group)):
        if not 1 <= group <= groups:
            raise ICLError(f"{name}={group}: the prior in d={prior.d} has groups 1-{groups}")
    return prior.input_centres[input_group - 1], prior.weight_centres[weight_group - 1]


def risk_curves(cfg: BayesEarlyAscentConfig, d: int) -> pd.DataFrame:
    """Rows (d, labels, k): the risk E[(prediction - w.x_query)^2] with its standard error, and
    each group's mean posterior weight."""
    prior = lin_lee_prior(d, cfg.sigma, cfg.tau, cfg.sigma_mu, cfg.sigma_w)
    task_mu, task_w = early_ascent_task(prior, cfg.input_group, cfg.weight_group)
    rng = np.random.default_rng([cfg.seed, d])
    query = task_mu + cfg.sigma * rng.standard_normal((cfg.trials, d))
    target = query @ task_w
    stats = demonstration_statistics(
        rng, cfg.ks, task_mu, task_w, cfg.sigma, cfg.trials, cfg.labels, cfg.demo_label_noise
    )
    rows = []
    for k, sum_x, sum_xx, sum_xy in stats:
        for setting in cfg.labels:
            post = posterior(prior, k + 1, sum_x + query, sum_xx, sum_xy[setting])
            error = (post.predict(query) - target) ** 2
            row = {"d": d, "labels": setting, "k": k, "risk": error.mean()}
            row["risk_se"] = error.std(ddof=1) / np.sqrt(len(error))
            for m, weight in enumerate(post.group_weights.mean(axis=0), start=1):
                row[f"weight_{m}"] = weight
            rows.append(row)
    return pd.DataFrame(rows)


def compute(cfg: BayesEarlyAscentConfig) -> tuple[dict[str, pd.DataFrame], dict]:
    """The risk table of every dimension and label setting, and the headline numbers."""
    started, cpu_started = time.perf_counter(), time.process_time()
    risk = pd.concat([risk_curves(cfg, d) for d in cfg.dims], ignore_index=True)
    peaks = peak_table(risk, cfg.input_group)
    headline = {"compute_s": time.perf_counter() - started}
    headline["compute_cpu_s"] = time.process_time() - cpu_started
    for row in peaks.itertuples():
        key = f"d{row.d}_{row.labels}"
        headline[f"{key}_risk_k0"] = row.risk_k0
        headline[f"{key}_peak_k"] = row.peak_k
        headline[f"{key}_peak_risk"] = row.peak_risk
        headline[f"{key}_risk_last"] = row.risk_last
    return {"risk": risk}, headline


def peak_table(risk: pd.DataFrame, input_group: int) -> pd.DataFrame:
    """Per (d, labels): the zero-shot risk, the early-ascent peak (the highest risk before the
    curve's lowest point), the risk at the largest k, and the first k where the group the
    inputs point at holds 99% of the posterior."""
    rows = []
    for (d, labels), curve in risk.groupby(["d", "labels"], sort=True):
        curve = curve.sort_values("k").reset_index(drop=True)
        before_low = curve.iloc[: int(curve["risk"].idxmin()) + 1]
        peak = before_low.loc[before_low["risk"].idxmax()]
        retrieved = curve[curve[f"weight_{input_group}"] >= 0.99]
        rows.append(
            {
                "d": d,
                "labels": labels,
                "risk_k0": curve["risk"].iloc[0],
                "peak_k": int(peak["k"]),
                "peak_risk": peak["risk"],
                "lowest_k": int(curve.loc[curve["risk"].idxmin(), "k"]),
                "lowest_risk": curve["risk"].min(),
                "k_last": int(curve["k"].iloc[-1]),
                "risk_last": curve["risk"].iloc[-1],
                "input_group_weight_k0": curve[f"weight_{input_group}"].iloc[0],
                "k_retrieved": int(retrieved["k"].iloc[0]) if len(retrieved) else None,
            }
        )
    return pd.DataFrame(rows)


def shots_table_path(cfg: BayesEarlyAscentConfig) -> Path:
    """The real-model shots table drawn beside the theory: ``shots_csv``, else a shots_curve
    run's under results/, else the committed one; an error says how to make one."""
    if cfg.shots_csv:
        candidates = [Path(cfg.shots_csv)]
    else:
        candidates = [
            Path("results") / "shots_curve" / "shots.csv",
            project_root() / "experiments" / "shots_curve" / "shots.csv",
        ]
    for path in candidates:
        if path.is_file():
            return path
    raise ICLError(
        f"no shots table for the real-model curve (looked for {', '.join(map(str, candidates))});"
        f" run icl-study shots_curve, or point shots_csv=PATH at a shots.csv"
    )


def read_shots(path: Path) -> pd.DataFrame:
    """The shots table, by column name (a rerun of shots_curve may add columns)."""
    shots = pd.read_csv(path)
    missing = [c for c in SHOTS_COLUMNS if c not in shots]
    if missing:
        raise ICLError(
            f"{path} lacks the column(s) {', '.join(missing)} of a shots table "
            f"(has {', '.join(shots.columns)}); it should be shots_curve's shots.csv"
        )
    return shots


def check(cfg: BayesEarlyAscentConfig) -> None:
    """Bad settings, and a missing real-model curve, before the computation."""
    bad = [f"labels has {s!r} (valid: {', '.join(LABEL_SETTINGS)})" for s in cfg.labels
           if s not in LABEL_SETTINGS]  # fmt: skip
    bad += [f"dims has {d}" for d in cfg.dims if d < 1]
    bad += [f"ks has {k}" for k in cfg.ks if k < 0]
    if cfg.trials < 2:
        bad.append(f"trials={cfg.trials} (at least 2, for a standard error)")
    for name in ("sigma", "tau", "sigma_mu", "sigma_w"):
        if getattr(cfg, name) <= 0:
            bad.append(f"{name}={getattr(cfg, name)} (must be positive)")
    if not cfg.dims or not cfg.ks or not cfg.labels:
        bad.append("dims, ks and labels must each name at least one value")
    if bad:
        raise ICLError(f"bayes_early_ascent: {'; '.join(bad)}")
    for d in cfg.dims:
        prior = lin_lee_prior(d, cfg.sigma, cfg.tau, cfg.sigma_mu, cfg.sigma_w)
        early_ascent_task(prior, cfg.input_group, cfg.weight_group)
    read_shots(shots_table_path(cfg))


def risk_wide(risk: pd.DataFrame, input_group: int) -> pd.DataFrame:
    """Risk per k (rows) for each d and label setting, and the posterior weight of the group
    the inputs point at (gold labels)."""
    wide = risk.pivot_table(index="k", columns=["d", "labels"], values="risk")
    wide.columns = [f"risk d={d} {labels}" for d, labels in wide.columns]
    gold = risk[risk["labels"] == "gold"]
    weight = gold.pivot_table(index="k", columns="d", values=f"weight_{input_group}")
    weight.columns = [f"weight of group {input_group} d={d}" for d in weight.columns]
    return wide.join(weight).reset_index()


def report(root, frames: dict[str, pd.DataFrame], cfg: BayesEarlyAscentConfig):
    """risk.md, peaks.md (and .csv), the risk figure and the figure beside shots_curve."""
    from icl.results import write_text_atomic
    from icl.studies.tables import markdown
    from icl.theory.figures import plot_bayes_risk, plot_theory_beside_shots

    risk = frames["risk"]
    peaks = peak_table(risk, cfg.input_group)
    write_text_atomic(root / "peaks.csv", peaks.to_csv(index=False))
    texts = []
    for stem, frame in (("risk", risk_wide(risk, cfg.input_group)), ("peaks", peaks)):
        text = markdown(frame, index=False, digits=3)
        write_text_atomic(root / f"{stem}.md", text + "\n")
        texts.append(f"{stem}:\n{text}")
    shots_path = shots_table_path(cfg)
    shots = read_shots(shots_path)
    figures = [plot_bayes_risk(risk, cfg.input_group, root / "risk_vs_k.png")]
    source = f"shots_curve ({shots_path.parent.name}/{shots_path.name})"
    figures.append(plot_theory_beside_shots(risk, shots, source, root / "theory_vs_shots.png"))
    return "\n\n".join(texts), figures


register(Theory("bayes_early_ascent", compute=compute, report=report, check=check))
