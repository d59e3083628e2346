"""Coverage of icl.stats.interval on crossed seeds x examples data, against a two-way
(pigeonhole, Owen 2007) bootstrap that draws seeds and examples independently and keeps the
drawn examples the same for every drawn seed.

The data: accuracy outcomes y[s, e] ~ Bernoulli(sigmoid(mu + a_s + b_e)) with a seed effect
a_s ~ N(0, sd_seeds) and an example difficulty b_e ~ N(0, sd_examples) that every seed shares,
as in every study (all seeds score the same test examples). The target is the population mean
over both. Prints, per setting, each interval's coverage of it and mean width.

    python -m benchmarks.crossed_coverage [--reps 80] [--resamples 400]
"""

from __future__ import annotations

import argparse

import numpy as np

from icl import stats

SETTINGS = [  # (seeds, examples, sd of seed effects, sd of example difficulty)
    (3, 100, 0.3, 2.0),
    (5, 200, 0.3, 2.0),
    (5, 200, 1.0, 2.0),
    (3, 100, 1.0, 0.5),
    (5, 200, 0.0, 2.0),
]


def pigeonhole_interval(scores: np.ndarray, rng: np.random.Generator, n_resamples: int):
    n_seeds, n_examples = scores.shape
    replicates = np.empty(n_resamples)
    for i in range(n_resamples):
        seeds, examples = (
            rng.integers(n_seeds, size=n_seeds),
            rng.integers(n_examples, size=n_examples),
        )
        replicates[i] = scores[np.ix_(seeds, examples)].mean()
    return stats.percentile_interval(replicates, stats.effective_df(scores))


def coverage(setting, reps: int, resamples: int, rng: np.random.Generator, mu: float = 1.0):
    n_seeds, n_examples, sd_seeds, sd_examples = setting
    population = mu + rng.normal(0, sd_seeds, 4000)[:, None] + rng.normal(0, sd_examples, 4000)
    truth = float((1 / (1 + np.exp(-population))).mean())
    found = {"hierarchical": [], "pigeonhole": []}
    for _ in range(reps):
        logits = mu + rng.normal(0, sd_seeds, (n_seeds, 1)) + rng.normal(0, sd_examples, n_examples)
        y = (rng.random(logits.shape) < 1 / (1 + np.exp(-logits))).astype(float)
        for name, (low, high) in (
            ("hierarchical", stats.interval(y, rng, n_resamples=resamples)),
            ("pigeonhole", pigeonhole_interval(y, rng, resamples)),
        ):
            found[name].append((low <= truth <= high, high - low))
    return {k: np.mean(v, axis=0) for k, v in found.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=80)
    parser.add_argument("--resamples", type=int, default=400)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    print("seeds examples sd_seeds sd_examples | coverage, width: hierarchical | pigeonhole")
    for setting in SETTINGS:
        found = coverage(setting, args.reps, args.resamples, rng)
        (hc, hw), (pc, pw) = found["hierarchical"], found["pigeonhole"]
        print(*setting, f"| {hc:.3f} {100 * hw:.1f} | {pc:.3f} {100 * pw:.1f}", flush=True)


if __name__ == "__main__":
    main()
