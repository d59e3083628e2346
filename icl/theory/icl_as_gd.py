"""Study ``icl_as_gd``: does a linear self-attention layer trained on random regression tasks
implement one step of gradient descent (von Oswald et al. 2023)?

Four measurements, each a table:
- ``construction``: the constructed layer against plain GD, in float64 (the largest difference
  over every token of random tasks, from a nonzero W0; and K stacked layers against K steps);
- ``training``: over training steps, on fixed evaluation tasks, the trained layer's loss beside
  the best single GD step's (learning rate by line search), the mean |y_TF - y_GD| and the mean
  cosine between their sensitivities d y / d x_query;
- ``depth``: K-layer models (one layer's weights applied K times) against K GD steps;
- ``input_scale``: the trained layer and GD on inputs scaled outside the training range.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd
import torch
from scipy.optimize import minimize_scalar

from icl.errors import ICLError
from icl.theory import Theory, register
from icl.theory.config import IclAsGdConfig
from icl.theory.linear_attention import (
    LinearSelfAttention,
    attend,
    gd_construction,
    gd_predictions,
    gd_step,
    query_after,
    read_prediction,
)
from icl.theory.regression_tasks import (
    RegressionTasks,
    context_tokens,
    query_token,
    sample_tasks,
    tokens,
)

log = logging.getLogger(__name__)

# one random stream per purpose, so e.g. adding a depth leaves the one-layer run as it was
STREAMS = {"construction": 0, "eval": 1, "line_search": 2, "init": 3, "train": 4}


def generator(seed: int, stream: str, *more: int) -> torch.Generator:
    """A torch generator of its own for one purpose (and layer count) of one seed."""
    state = np.random.SeedSequence([seed, STREAMS[stream], *more]).generate_state(1, np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


def half_mse(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The paper's loss: half the squared error, summed over outputs, averaged over tasks."""
    return 0.5 * ((predictions - targets) ** 2).sum(-1).mean()


def construction_errors(gen: torch.Generator, cases: int = 5) -> pd.DataFrame:
    """The constructed layer against plain GD in float64 on random shapes, W0 and eta: one
    step from W0 on every token, and three stacked layers from zero against three steps."""
    rows = []
    for _ in range(cases):
        d, d_out = (int(v) for v in torch.randint(1, 9, (2,), generator=gen))
        n_context = int(torch.randint(2, 33, (1,), generator=gen))
        eta = float(0.1 + 2 * torch.rand(1, generator=gen, dtype=torch.float64))
        tasks = sample_tasks(gen, 64, d, n_context, d_out, 2.0, 1.0, torch.float64)
        w0 = torch.randn(d_out, d, generator=gen, dtype=torch.float64)
        weights = gd_construction(d, d_out, n_context, eta, w0, torch.float64)
        out = attend(tokens(tasks, w0=w0), weights, n_context)
        step = gd_step(tasks.x, tasks.y, w0.expand(len(tasks.x), -1, -1), eta) - w0
        expected = tokens(tasks, w0=w0).clone()
        expected[:, :-1, d:] -= tasks.x @ step.transpose(1, 2)
        expected[:, -1, d:] = -torch.einsum("bod,bd->bo", w0 + step, tasks.x_query)
        stacked = tokens(tasks)
        zero_start = gd_construction(d, d_out, n_context, eta, None, torch.float64)
        for _ in range(3):
            stacked = attend(stacked, zero_start, n_context)
        three = gd_predictions(tasks, eta, steps=3)
        shape = {"d": d, "d_out": d_out, "n_context": n_context, "eta": eta}
        rows.append({**shape, "one_step_error": float((out - expected).abs().max())})
        rows[-1]["three_steps_error"] = float((read_prediction(stacked, d) - three).abs().max())
    return pd.DataFrame(rows)


def line_search(tasks: RegressionTasks, steps: int, eta_max: float, grid: int):
    """GD's learning rate for ``steps`` steps: the grid point of least loss, refined by Brent's
    method between its neighbours. Returns (eta, loss on these tasks)."""

    def loss(eta: float) -> float:
        return float(half_mse(gd_predictions(tasks, eta, steps), tasks.y_query))

    etas = np.linspace(0.0, eta_max, grid)
    best = int(np.argmin([loss(eta) for eta in etas]))
    if best == grid - 1:
        raise ICLError(
            f"GD's best learning rate for {steps} step(s) is at line_search.eta_max={eta_max} or "
            f"beyond: raise line_search.eta_max"
        )
    low, high = etas[max(best - 1, 0)], etas[best + 1]
    found = minimize_scalar(loss, bounds=(low, high), method="bounded", options={"xatol": 1e-6})
    return float(found.x), float(found.fun)


def predictor(weights, layers: int, d: int):
    """A model's prediction (B, o) from the context and query tokens: ``layers``
    applications of one layer's weights (a callable, so a trained model's current ones)."""

    def predict(context: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        return -query_after(weights(), context, query, layers, d)

    return predict


def predictions_and_sensitivities(predict, tasks: RegressionTasks):
    """A model's predictions (B, o) and their gradients with respect to the query input
    (B, o * d); each task's prediction depends on its own tokens only, so one backward pass
    per output gives every task's gradient."""
    x_query = tasks.x_query.detach().clone().requires_grad_(True)
    context = context_tokens(tasks)
    predictions = predict(context, query_token(x_query, tasks.y.shape[-1]))
    grads = [
        torch.autograd.grad(predictions[:, j].sum(), x_query, retain_graph=True)[0]
        for j in range(predictions.shape[1])
    ]
    return predictions.detach(), torch.cat(grads, dim=1)


def compare(predict, reference, tasks: RegressionTasks) -> dict:
    """The paper's three comparisons of a model with GD on the same tasks: the losses, the
    mean |y_TF - y_GD| and the mean cosine of their sensitivities. ``reference`` is GD's
    predictor, or its ``predictions_and_sensitivities`` on these tasks (computed once)."""
    ours, our_grads = predictions_and_sensitivities(predict, tasks)
    if callable(reference):
        reference = predictions_and_sensitivities(reference, tasks)
    theirs, their_grads = reference
    cosine = torch.nn.functional.cosine_similarity(our_grads, their_grads, dim=1, eps=1e-8)
    return {
        "loss": float(half_mse(ours, tasks.y_query)),
        "gd_loss": float(half_mse(theirs, tasks.y_query)),
        "pred_diff": float((ours - theirs).norm(dim=1).mean()),
        "cosine": float(cosine.mean()),
    }


def gd_model(cfg: IclAsGdConfig, eta: float, steps: int, dtype=torch.float32):
    """K GD steps from zero as a token model: the constructed layer applied K times."""
    weights = gd_construction(cfg.d, cfg.d_out, cfg.n_context, eta, dtype=dtype)
    return predictor(lambda: weights, steps, cfg.d)


def train(cfg: IclAsGdConfig, layers: int, steps: int, eval_tasks, gd_predict):
    """Train a ``layers``-layer model with Adam on fresh tasks each step; every eval_every steps
    compare it with GD on the evaluation tasks. Returns (the model's predictor, rows)."""
    t = cfg.train
    init = generator(cfg.seed, "init", layers)
    model = LinearSelfAttention(cfg.d + cfg.d_out, layers, t.init_scale, init)
    optimiser = torch.optim.Adam(model.parameters(), lr=t.lr, betas=tuple(t.betas), eps=t.eps)
    predict = predictor(model.weights, layers, cfg.d)
    data = generator(cfg.seed, "train", layers)
    reference = predictions_and_sensitivities(gd_predict, eval_tasks)
    rows, losses = [], []
    for step in range(steps + 1):
        if step % t.eval_every == 0 or step == steps:
            train_loss = float(np.mean(losses)) if losses else float("nan")
            rows.append({"layers": layers, "step": step, **compare(predict, reference, eval_tasks)})
            rows[-1]["train_loss"] = train_loss
            losses = []
        if step == steps:
            break
        batch = sample_tasks(
            data, t.batch, cfg.d, cfg.n_context, cfg.d_out, cfg.input_range, cfg.weight_scale
        )
        query = query_token(batch.x_query, cfg.d_out)
        loss = half_mse(predict(context_tokens(batch), query), batch.y_query)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    return predict, rows


def input_scale_rows(cfg: IclAsGdConfig, predict, gd_predict, eval_tasks) -> pd.DataFrame:
    """The trained layer and GD (the learning rate tuned at scale 1) on the evaluation tasks
    with every input scaled; ``zero_loss`` is the loss of predicting 0, for scale."""
    rows = []
    for scale in cfg.input_scales:
        tasks = eval_tasks.scaled(scale)
        zero = float(half_mse(torch.zeros_like(tasks.y_query), tasks.y_query))
        rows.append({"scale": scale, **compare(predict, gd_predict, tasks), "zero_loss": zero})
    return pd.DataFrame(rows)


def compute(cfg: IclAsGdConfig) -> tuple[dict[str, pd.DataFrame], dict]:
    """Every table of the study and its headline numbers."""
    started, cpu_started = time.perf_counter(), time.process_time()
    construction = construction_errors(generator(cfg.seed, "construction"))
    shape = (cfg.d, cfg.n_context, cfg.d_out, cfg.input_range, cfg.weight_scale)
    eval_tasks = sample_tasks(generator(cfg.seed, "eval"), cfg.eval_tasks, *shape)
    search = cfg.line_search
    tune_tasks = sample_tasks(
        generator(cfg.seed, "line_search"), search.tasks, *shape, dtype=torch.float64
    )
    depths = [1, *(k for k in cfg.depths if k != 1)]
    training, depth_rows, wall = [], [], {}
    for layers in depths:
        layer_started = time.perf_counter()
        eta, tune_loss = line_search(tune_tasks, layers, search.eta_max, search.grid)
        gd_predict = gd_model(cfg, eta, layers)
        steps = cfg.train.steps if layers == 1 else cfg.depth_steps
        predict, rows = train(cfg, layers, steps, eval_tasks, gd_predict)
        training += [{**row, "gd_eta": eta} for row in rows]
        depth_rows.append({"layers": layers, "steps": steps, "gd_eta": eta, **rows[-1]})
        depth_rows[-1]["gd_tune_loss"] = tune_loss
        if layers == 1:
            scales = input_scale_rows(cfg, predict, gd_predict, eval_tasks)
        wall[f"wall_s_layers{layers}"] = time.perf_counter() - layer_started
        log.info("%d layer(s): %s", layers, depth_rows[-1])
    depth = pd.DataFrame(depth_rows).drop(columns=["step", "train_loss"])
    final = depth_rows[0]
    headline = {
        "construction_error": float(construction["one_step_error"].max()),
        "construction_three_steps_error": float(construction["three_steps_error"].max()),
        "gd_eta": final["gd_eta"],
        "gd_loss": final["gd_loss"],
        "trained_loss": final["loss"],
        "trained_over_gd": final["loss"] / final["gd_loss"],
        "pred_diff": final["pred_diff"],
        "cosine": final["cosine"],
        **wall,
        "compute_s": time.perf_counter() - started,
        # the process's CPU time: on a shared machine, less at the mercy of the other load
        "compute_cpu_s": time.process_time() - cpu_started,
    }
    frames = {
        "construction": construction,
        "training": pd.DataFrame(training),
        "depth": depth,
        "input_scale": scales,
    }
    return frames, headline


def expected_gd_step(cfg: IclAsGdConfig) -> tuple[float, float]:
    """The exact expected loss of one GD step from zero, minimised over eta: (eta*, loss*).

    With S = X^T X / N the step predicts w^T S x_query * eta, so the loss is
    1/2 s_w^2 v E tr (I - eta S)^2, v = E x^2 = r^2 / 12, and E tr S^2 follows from the moments
    of U(-r/2, r/2) (E x^4 = r^4 / 80): d (v^2 + (m4 - v^2) / N) + d (d - 1) v^2 / N."""
    d, n = cfg.d, cfg.n_context
    v, m4 = cfg.input_range**2 / 12, cfg.input_range**4 / 80
    trace_s2 = d * (v**2 + (m4 - v**2) / n) + d * (d - 1) * v**2 / n
    eta = d * v / trace_s2
    loss = 0.5 * cfg.weight_scale**2 * v * cfg.d_out * (d - eta * d * v)
    return eta, loss


def check(cfg: IclAsGdConfig) -> None:
    """Sizes that make a study, before any training."""
    sizes = {"d": cfg.d, "d_out": cfg.d_out, "n_context": cfg.n_context}
    sizes |= {"eval_tasks": cfg.eval_tasks, "train.batch": cfg.train.batch}
    sizes |= {"train.eval_every": cfg.train.eval_every, "line_search.tasks": cfg.line_search.tasks}
    sizes |= {"line_search.grid": cfg.line_search.grid - 2}
    bad = [f"{name}={value}" for name, value in sizes.items() if value < 1]
    bad += [f"depths has {k}" for k in cfg.depths if k < 1]
    if cfg.train.steps < 0 or cfg.depth_steps < 0:
        bad.append("train.steps and depth_steps must be >= 0")
    if bad:
        raise ICLError(f"icl_as_gd: {', '.join(bad)}: sizes must be positive (grid at least 3)")


# the values the paper shows (von Oswald et al. 2023, Fig. 2: curves, not a table) and the
# issue's probe of the same setup
PAPER = {
    "construction_error": "0 (an identity)",
    "gd_eta": "tuned",
    "gd_loss": "the trained layer's",
    "trained_loss": "GD's",
    "pred_diff": "-> 0",
    "cosine": "-> 1",
}
PROBE = {"gd_eta": "about 6", "gd_loss": "0.206", "trained_loss": "0.207", "cosine": "0.999"}


def comparison_table(frames: dict[str, pd.DataFrame], cfg: IclAsGdConfig) -> pd.DataFrame:
    """The headline numbers beside the paper's, the probe's and the exact expectation."""
    construction, depth = frames["construction"], frames["depth"]
    one = depth[depth["layers"] == 1].iloc[0]
    eta_star, loss_star = expected_gd_step(cfg)
    rows = [
        ("construction_error", "one GD step on every token, max error (float64)",
         construction["one_step_error"].max(), None),
        ("construction_three", "3 stacked layers vs 3 GD steps, max error (float64)",
         construction["three_steps_error"].max(), None),
        ("gd_eta", "GD learning rate (line search)", one["gd_eta"], eta_star),
        ("gd_loss", "loss of the best GD step", one["gd_loss"], loss_star),
        ("trained_loss", f"loss of the trained layer ({int(one['steps'])} steps)", one["loss"],
         None),
        ("trained_over_gd", "trained loss / GD loss", one["loss"] / one["gd_loss"], None),
        ("pred_diff", "mean abs(y_TF - y_GD)", one["pred_diff"], None),
        ("cosine", "mean cosine of dy/dx_query", one["cosine"], None),
    ]  # fmt: skip
    return pd.DataFrame(
        [
            {
                "quantity": text,
                "ours": ours,
                "exact expectation": exact,
                "paper (Fig. 2)": PAPER.get(key, ""),
                "probe (issue 13)": PROBE.get(key, ""),
            }
            for key, text, ours, exact in rows
        ]  # fmt: skip
    )


def report(root, frames: dict[str, pd.DataFrame], cfg: IclAsGdConfig):
    """comparison.md (and .csv), depth.md, input_scale.md, and the two figures."""
    from icl.results import write_text_atomic
    from icl.studies.tables import markdown
    from icl.theory.figures import plot_extensions, plot_training

    comparison = comparison_table(frames, cfg)
    write_text_atomic(root / "comparison.csv", comparison.to_csv(index=False))
    texts = []
    for stem, frame in (("comparison", comparison), ("depth", frames["depth"]),
                        ("input_scale", frames["input_scale"])):  # fmt: skip
        text = markdown(frame, index=False, digits=4)
        write_text_atomic(root / f"{stem}.md", text + "\n")
        texts.append(f"{stem}:\n{text}")
    figures = [plot_training(frames["training"], root / "training.png")]
    figures.append(plot_extensions(frames["depth"], frames["input_scale"], root / "extensions.png"))
    return "\n\n".join(texts), figures


register(Theory("icl_as_gd", compute=compute, report=report, check=check))
