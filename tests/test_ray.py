"""The Ray layer on a real local Ray: Tune trials, evaluator actors, resume, reuse from a new session."""
from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import TINY

ROOT = Path(__file__).resolve().parents[1]


def _config(out, **kw):
    from paint_ray.config import StudyConfig
    base = dict(name="t", models=[TINY], patch_tasks=["colors"], supported=["shapes"], alphas=[0.0, 0.5, 1.0],
                out=str(out), search_space={"lr": [3e-3], "steps": [12], "batch_size": [32], "warmup_steps": [2]},
                progress=False)
    base.update(kw)
    return StudyConfig(**base)


def _raw_rows(out: Path) -> pd.DataFrame:
    return pd.concat([pq.read_table(p).to_pandas() for p in sorted((out / "results").glob("part-*.parquet"))])


def test_study_runs_then_rerun_resumes_and_live_reuse_loads_nothing(ray_local, tmp_path):
    from paint_ray import live
    from paint_ray.results.store import KEY
    from paint_ray.pipeline import run_study
    import tempfile
    out = tmp_path / "study"
    staging = set(Path(tempfile.gettempdir()).glob("paint_ray_ckpt_*"))
    result = run_study(_config(out, search_space={"lr": [3e-3, 1e-3], "steps": [12], "batch_size": [32],
                                                  "warmup_steps": [2]}))
    assert len(result.trials) == 2                    # two Tune trials: the lr grid
    # each checkpoint's staging folder is gone once Tune has copied it into the run's storage
    assert set(Path(tempfile.gettempdir()).glob("paint_ray_ckpt_*")) <= staging
    rows = _raw_rows(out)
    assert len(rows) == 2 * 3 * 2 * 2                 # trials x alphas x tasks x splits
    table = result.table()
    assert len(table) == 1 and table["alpha"].iloc[0] in (0.0, 0.5, 1.0)
    assert 0.0 < table["cka"].iloc[0] <= 1.0 and table["weight_distance"].iloc[0] > 0
    assert result.patched[0].config["lr"] in (3e-3, 1e-3)

    parts = sorted((out / "results").glob("part-*.parquet"))
    again = run_study(_config(out, search_space={"lr": [3e-3, 1e-3], "steps": [12], "batch_size": [32],
                                                 "warmup_steps": [2]}))
    assert sorted((out / "results").glob("part-*.parquet")) == parts   # nothing re-evaluated
    assert again.table()["alpha"].iloc[0] == table["alpha"].iloc[0]

    from paint_ray.pipeline import study_id
    assert live.connect(study_id(_config(out))) == study_id(_config(out))
    before = live.evaluators()
    loads = {n: inv["loads"] for n, inv in before.items()}
    def held(inv) -> dict:     # models are held by weight digest; the spec is their label
        return next(m for m in inv["models"].values() if m["label"] == TINY)
    assert loads and all(held(inv) for inv in before.values())
    # the session's evaluators may also hold other tests' weights: name this study's θ1s and tasks
    mine = list(result.trials["weights"])
    new = live.sweep(TINY, alphas=[0.25, 0.75], weights=mine, tasks=["colors", "shapes"], progress=False)
    assert len(new) == 2 * 2 * 2 * 2                  # θ1s x alphas x tasks x splits
    assert {n: inv["loads"] for n, inv in live.evaluators().items()} == loads   # loaded nothing
    def tiny_id(inv) -> str:
        return next(d for d, m in inv["models"].items() if m["label"] == TINY)

    def typed(inv) -> list[dict]:      # typed_digits shards this evaluator holds for the tiny model
        return [s for s in inv["shards"] if s["task"] == "typed_digits" and s["model"] == tiny_id(inv)]
    more = live.sweep(TINY, alphas=[0.5], tasks=["typed_digits"], weights=mine, progress=False)
    assert set(more["eval_task"]) == {"typed_digits"}
    after = live.evaluators()
    # what was sent: the head to each evaluator lacking it, each split's rows once (placed, not copied to
    # every evaluator), and θ1s (by name) only where that data now is; nothing else
    heads = sum("typed_digits" not in held(inv)["heads"] for inv in before.values())
    shards = sum(len(typed(after[n])) - len(typed(before[n])) for n in after)
    weights = sum(len(held(after[n])["weights"]) - len(held(before[n])["weights"]) for n in after)
    assert sum(inv["loads"] for inv in after.values()) == sum(loads.values()) + heads + shards + weights
    for split, n in (("val", 500), ("test", 1000)):
        rows = sorted((s["start"], s["stop"]) for inv in after.values() for s in typed(inv) if s["split"] == split)
        assert rows[0][0] == 0 and rows[-1][1] == n and all(a[1] == b[0] for a, b in zip(rows, rows[1:]))
    assert all("typed_digits" in held(inv)["heads"] for inv in after.values())
    assert not new.duplicated(KEY).any()


def test_killed_driver_rerun_loses_and_duplicates_nothing(ray_local, tmp_path):
    out = tmp_path / "killed"
    env = {**os.environ, "RAY_ADDRESS": ray_local}
    cmd = [sys.executable, str(ROOT / "experiments" / "scaling.py"), "--models", TINY, "--patch", "colors",
           "--supported", "shapes,counting", "--steps", "12", "--warmup-steps", "2", "--lr", "3e-3", "--alphas", "0:1:0.02",
           "--seeds", "0", "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and len(list((out / "results").glob("part-*.parquet"))) < 5:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = len(_raw_rows(out))
    expected = 51 * 3 * 2                               # alphas x tasks x splits, one trial
    assert 0 < partial < expected, "the driver should have been killed mid-sweep"
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = _raw_rows(out)
    from paint_ray.results.store import KEY
    assert len(rows) == expected and not rows.duplicated(KEY).any()


def test_cluster_yaml_passes_rays_own_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    validate_config(prepare_config(copy.deepcopy(config)))
    workers = [t for name, t in config["available_node_types"].items() if name != config["head_node_type"]]
    assert any(t["resources"].get("GPU", 0) >= 1 and t["max_workers"] > t.get("min_workers", 0) for t in workers)
    assert any("mlflow server" in c and "127.0.0.1" in c for c in config["head_setup_commands"])
    assert any("pip install" in c and "paint_ray" in c for c in config["setup_commands"])


def _study_cli(*args, env=None):
    return subprocess.run([sys.executable, str(ROOT / "experiments" / "scaling.py"), *args], capture_output=True,
                          text=True, timeout=300, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("args,env,needle", [
    (["--preset", "huge"], {}, "unknown preset 'huge'"),
    (["--preset", "paper"], {}, "give --data-root DIR"),
    (["--preset", "paper", "--data-root", "/nonexistent/data"], {}, "/nonexistent/data"),
    (["--models", TINY, "--gpus-per-trial", "1"], {"RAY_ADDRESS": ""}, "use --gpus-per-trial 0"),
    (["--models", TINY], {"RAY_ADDRESS": "127.0.0.1:9"}, "cannot reach a Ray cluster at '127.0.0.1:9'"),
])
def test_study_bad_input_is_one_line(tmp_path, args, env, needle):
    result = _study_cli(*args, "--out", str(tmp_path / "o"), "--quiet", env=env)
    assert result.returncode == 2
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("paint-ray: error")]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in result.stderr, result.stderr[-1500:]
