"""Faults injected into real runs: the study then completes with no cell lost and none duplicated.

Each test counts the rows before and after: `raw_rows` reads every Parquet part as written (no
de-duplication), so a cell evaluated twice would show up twice. Crashes are deterministic fault points
(paint_ray/faults.py), never a timer or a kill by process name.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from conftest import TINY, make_study_config, one_line_error, raw_rows, run_main, run_process

ROOT = Path(__file__).resolve().parents[1]


def _config(out, **kw):
    return make_study_config(out, **{"name": "faults", **kw})


def _local(cfg):
    from paint_ray.backends.local import LocalBackend
    from paint_ray.pipeline import run_study
    return run_study(cfg, LocalBackend("cpu"))


@pytest.mark.slow
def test_evaluator_killed_mid_sweep_is_replaced_and_finished_cells_are_not_recomputed(ray_local, tmp_path, capsys):
    import ray

    from paint_ray.distributed.backend import RayBackend
    from paint_ray.pipeline import run_study, study_id
    from paint_ray.results.store import KEY

    class KillOneEvaluator(RayBackend):
        """Kills evaluator 1 as soon as the first unit's rows come back (the sweep is then mid-way)."""
        killed = None

        def evaluate(self, work, on_rows, progress=True, attempt=0):
            def first_rows_then_kill(ws, rows):
                on_rows(ws, rows)
                if self.killed is None:
                    self.killed = self.evaluators()[1]
                    ray.kill(self.killed)
            return super().evaluate(work, first_rows_then_kill, progress, attempt)

    cfg = _config(tmp_path, alphas=[i / 10 for i in range(11)], evaluators=2, supported=["shapes", "counting"])
    backend = KillOneEvaluator(cfg, study_id(cfg))
    result = run_study(cfg, backend)
    assert backend.killed is not None
    rows = raw_rows(tmp_path)
    expected = 11 * 3 * 2                                   # alphas x eval tasks x splits
    assert len(rows) == expected and not rows.duplicated(KEY).any()   # nothing lost, nothing written twice
    assert "an evaluator of" in capsys.readouterr().out     # said in one line, no traceback
    assert result.table()["patch_patched"].notna().all()


# A study's driver that fine-tunes one job on Ray and prints what each trial reports (run as its own process).
TRIAL_DRIVER = """
import json, sys
from paint_ray.config import StudyConfig
from paint_ray.distributed.backend import RayBackend
from paint_ray.pipeline import Pipeline, study_id
cfg = StudyConfig(name="faults-trial", models=[sys.argv[1]], patch_tasks=["colors"], supported=["shapes"],
                  alphas=[0.0, 1.0], out=sys.argv[2], progress=False, mlflow=False,
                  search_space={"lr": [1e-3], "steps": [40], "batch_size": [32], "warmup_steps": [1]})
pipe = Pipeline(cfg, RayBackend(cfg, study_id(cfg))).prepare()
jobs = pipe.jobs(sys.argv[1], ["colors"])
for job in jobs:                      # a θ1 cached by an earlier session would skip the training under test
    job.path.unlink(missing_ok=True)
print(json.dumps([{"key": t.job.key, "resumed_from": t.resumed_from, "theta1": str(t.path), "cached": t.cached}
                  for t in pipe.finetune(jobs)]))
"""


@pytest.mark.slow
@pytest.mark.ray
def test_trial_killed_mid_training_resumes_from_its_last_checkpoint(tmp_path):
    """The trial's process exits right after its first checkpoint (PAINT_RAY_FAULT=trial-exit-after-checkpoint,
    set before the study's own Ray cluster starts its workers); Tune retries it from that checkpoint."""
    from paint_ray.models.checkpoints import load_tensors
    faults = tmp_path / "faults"
    env = {"RAY_ADDRESS": "local", "PAINT_RAY_FAULT": "trial-exit-after-checkpoint", "PAINT_RAY_FAULT_DIR": str(faults)}
    run = run_process([sys.executable, "-c", TRIAL_DRIVER, TINY, str(tmp_path / "out")], env, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    [trial] = json.loads(run.stdout.strip().splitlines()[-1])
    assert [m.name for m in faults.iterdir()] == [f"trial-exit-after-checkpoint-{trial['key']}"]   # it fired
    assert not trial["cached"] and load_tensors(trial["theta1"])  # θ1 exists: the retried trial finished
    tune_dir = tmp_path / "out" / "tune"
    frame = pd.concat(pd.read_json(p, lines=True) for p in tune_dir.glob("*/*/result.json"))
    assert int(frame["resumed_from"].max()) == trial["resumed_from"] == 10   # the first checkpoint (40 // 4)
    assert int(frame["step"].max()) == 40
    assert sorted(frame.loc[frame["resumed_from"] == 10, "step"]) == [20, 30, 40]   # nothing trained twice after


def test_zero_byte_and_truncated_parquet_parts_are_set_aside_and_recomputed(tiny, tmp_path, capsys):
    from paint_ray.results.store import KEY, ResultStore
    first = _local(_config(tmp_path))
    parts = sorted((tmp_path / "results").glob("part-*.parquet"))
    before = len(raw_rows(tmp_path))
    parts[0].write_bytes(b"")                               # power cut before any byte landed
    lost = len(pq.read_table(parts[1]).to_pandas())
    parts[1].write_bytes(parts[1].read_bytes()[:100])      # ... or half way through
    again = _local(_config(tmp_path))
    out = capsys.readouterr().out
    assert out.count("set aside") == 2 and "Traceback" not in out
    rows = ResultStore(tmp_path / "results").read()
    assert len(rows) == before and not rows.duplicated(KEY).any()
    assert len(list((tmp_path / "results").glob("*.unreadable"))) == 2 and lost > 0
    pd.testing.assert_frame_equal(again.patched[0].frontier, first.patched[0].frontier)


def test_corrupt_cached_head_and_theta1_are_recomputed(tiny, tmp_path, capsys):
    from paint_ray.caches import heads as cache
    from paint_ray.tasks import get_task
    from paint_ray.storage import fetch
    # A recipe of this test's own: its θ1 is trained here, in this process, never read from a Ray trial of
    # another test. CPU fine-tuning is deterministic for a given number of torch threads but not across
    # thread counts (a 1-thread Tune trial's θ1 differs from this 2-thread process's by ~1e-3), and in bf16
    # evaluation such a difference can move an example; the recompute must be the same computation.
    recipe = {"lr": [3e-3], "steps": [5], "batch_size": [32], "warmup_steps": [1]}
    first = _local(_config(tmp_path / "a", search_space=recipe))
    theta1 = fetch(first.patched[0].weights.theta1, None)      # its file in this node's cache
    head = cache.head_path(first.models[TINY], get_task("colors"))
    theta1.write_bytes(theta1.read_bytes()[:500])
    head.write_bytes(b"\x00garbage")
    again = _local(_config(tmp_path / "b", search_space=recipe))
    out = capsys.readouterr().out
    assert out.count("is corrupt; set aside") == 2
    assert theta1.with_name(theta1.name + ".corrupt").is_file() and head.with_name(head.name + ".corrupt").is_file()
    pd.testing.assert_frame_equal(again.patched[0].frontier, first.patched[0].frontier)


def test_a_second_run_into_the_same_out_refuses_in_one_line(tiny, tmp_path, capsys):
    from paint_ray.cli import main
    from paint_ray.pipeline import exclusive
    fast = ["patch", "--model", TINY, "--steps", "3", "--warmup-steps", "1", "--batch-size", "16", "--quiet"]
    with exclusive(tmp_path):                                    # another run holds --out (its own file lock)
        code, _, err = run_main(main, [*fast, "--out", str(tmp_path)], capsys)
    assert "another paint_ray run is writing to" in one_line_error(code, err)
    assert not (tmp_path / "results").exists()
    code, _, err = run_main(main, [*fast, "--alphas", "0,1", "--out", str(tmp_path)], capsys)
    assert code == 0, err                                        # the lock went with its holder
    assert (tmp_path / "results").is_dir()


def test_weights_that_do_not_fit_name_the_tensor(tiny):
    from paint_ray.errors import PaintRayError
    from paint_ray.training.finetune import visual_state
    from paint_ray.weights.interpolate import load_floating_state
    state = visual_state(tiny.model.visual)
    with pytest.raises(PaintRayError, match="lack tensor 'proj'"):
        load_floating_state(tiny.model.visual, {k: v for k, v in state.items() if k != "proj"})
    with pytest.raises(PaintRayError, match="unexpected tensor 'extra'"):
        load_floating_state(tiny.model.visual, {**state, "extra": torch.zeros(1)})


def test_a_read_parses_only_the_parts_written_since_the_last_read(tmp_path):
    """A search round re-read every part of the results folder; parts are immutable, so a store parses each
    once, sees parts another process added, and drops a part that is gone."""
    from paint_ray.results.store import ResultStore

    def row(alpha: float) -> dict:
        return {"model_digest": "m", "weights": "w", "alpha": alpha, "schedule": "", "task_key": "t",
                "split": "val", "precision": "fp32", "device": "cpu", "accuracy": 0.5, "n": 10}
    store = ResultStore(tmp_path)
    store.append([row(0.0)])
    store.append([row(0.5)])
    assert len(store.read()) == 2 and store.parsed == 2
    store.append([row(1.0)])
    assert sorted(store.read().alpha) == [0.0, 0.5, 1.0] and store.parsed == 3       # only the new part
    ResultStore(tmp_path).append([row(0.25)])                     # another process's part
    assert sorted(store.read().alpha) == [0.0, 0.25, 0.5, 1.0] and store.parsed == 4
    store.parts()[0].unlink()
    assert sorted(store.read().alpha) == [0.25, 0.5, 1.0] and store.parsed == 4
