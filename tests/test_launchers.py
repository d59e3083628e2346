"""Sweeps through Hydra's parallel launchers: joblib on one machine, submitit as on SLURM."""

from __future__ import annotations

import json

import pytest
from test_cli import TINY, finish, start_script

LAUNCHERS = {
    "joblib": ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2"),
    # submitit's local executor runs each cell as a job, exactly as submitit_slurm submits them
    "submitit_local": ("hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"),
}


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_a_sweep_runs_every_cell_through_the_launcher(launcher, tmp_path):
    sweep = tmp_path / "sweep"
    result = finish(
        start_script(
            "icl-run",
            "-m",
            *LAUNCHERS[launcher],
            *TINY,
            "demos.k=0,1",
            "demos.labels=gold,permuted",
            f"hydra.sweep.dir={sweep}",
            cwd=tmp_path,
        )
    )
    assert result.returncode == 0, result.stderr[-3000:]
    cells = sorted(path.parent for path in sweep.rglob("metrics.json"))
    assert len(cells) == 4, [str(c) for c in cells]
    cell_ids = {
        (m["k"], m["labels"]) for m in (json.loads((c / "metrics.json").read_text()) for c in cells)
    }
    assert cell_ids == {(0, "gold"), (0, "permuted"), (1, "gold"), (1, "permuted")}
