"""Faults injected into real runs: the study then completes with no cell lost and none duplicated.

Each test counts the rows before and after: `_raw` reads every Parquet part as written (no de-duplication),
so a cell evaluated twice would show up twice.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from conftest import TINY, run_cli

RECIPE = {"lr": [3e-3], "steps": [6], "batch_size": [32], "warmup_steps": [1]}


def _raw(out: Path) -> pd.DataFrame:
    parts = sorted((Path(out) / "results").glob("part-*.parquet"))
    return pd.concat([pq.read_table(p).to_pandas() for p in parts]) if parts else pd.DataFrame()


def _config(out, **kw):
    from paint_ray.config import StudyConfig
    base = dict(name="faults", models=[TINY], patch_tasks=["colors"], supported=["shapes"], alphas=[0.0, 0.5, 1.0],
                out=str(out), search_space=RECIPE, progress=False, mlflow=False)
    base.update(kw)
    return StudyConfig(**base)


def _local(cfg):
    from paint_ray.backends.local import LocalBackend
    from paint_ray.pipeline import run_study
    return run_study(cfg, LocalBackend("cpu"))


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

    cfg = _config(tmp_path, alphas=[i / 20 for i in range(21)], evaluators=2, supported=["shapes", "counting"])
    backend = KillOneEvaluator(cfg, study_id(cfg))
    result = run_study(cfg, backend)
    assert backend.killed is not None
    rows = _raw(tmp_path)
    expected = 21 * 3 * 2                                   # alphas x eval tasks x splits
    assert len(rows) == expected and not rows.duplicated(KEY).any()   # nothing lost, nothing written twice
    assert "an evaluator of" in capsys.readouterr().out     # said in one line, no traceback
    assert result.table()["patch_patched"].notna().all()


def test_trial_killed_mid_training_resumes_from_its_last_checkpoint(ray_local, tmp_path):
    import psutil

    from paint_ray.distributed.backend import RayBackend
    from paint_ray.pipeline import Pipeline, study_id
    cfg = _config(tmp_path, search_space={"lr": [1e-3], "steps": [400], "batch_size": [64], "warmup_steps": [1]})
    pipe = Pipeline(cfg, RayBackend(cfg, study_id(cfg))).prepare()
    jobs = pipe.jobs(TINY, ["colors"])
    done: dict = {}
    worker = threading.Thread(target=lambda: done.update(trials=pipe.finetune(jobs)))
    worker.start()
    tune_dir = tmp_path / "tune"
    deadline, killed = time.time() + 300, None
    while time.time() < deadline and killed is None:   # the first checkpoint is the signal to strike
        if list(tune_dir.glob("*/*/checkpoint_000000")):
            for p in psutil.process_iter(["cmdline"]):
                if any("ImplicitFunc" in part for part in (p.info["cmdline"] or [])):
                    p.kill()
                    killed = p.pid
        time.sleep(0.05)
    worker.join(timeout=600)
    assert killed, "the trial's process was never found to kill"
    [trial] = done["trials"]
    from paint_ray.models.checkpoints import load_tensors
    assert load_tensors(trial.path)                         # θ1 exists: the retried trial finished
    frame = pd.concat(pd.read_json(p, lines=True) for p in tune_dir.glob("*/*/result.json"))
    resumed = int(frame["resumed_from"].max())
    assert resumed in (100, 200, 300), frame[["step", "resumed_from"]]   # a checkpoint step, not step 0
    assert int(frame["step"].max()) == 400


def test_zero_byte_and_truncated_parquet_parts_are_set_aside_and_recomputed(tiny, tmp_path, capsys):
    from paint_ray.results.store import KEY, ResultStore
    first = _local(_config(tmp_path))
    parts = sorted((tmp_path / "results").glob("part-*.parquet"))
    before = len(_raw(tmp_path))
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
    first = _local(_config(tmp_path / "a"))
    theta1 = first.patched[0].weights.theta1
    head = cache.head_path(first.models[TINY], get_task("colors"))
    theta1.write_bytes(theta1.read_bytes()[:500])
    head.write_bytes(b"\x00garbage")
    again = _local(_config(tmp_path / "b"))
    out = capsys.readouterr().out
    assert out.count("is corrupt; set aside") == 2
    assert theta1.with_name(theta1.name + ".corrupt").is_file() and head.with_name(head.name + ".corrupt").is_file()
    pd.testing.assert_frame_equal(again.patched[0].frontier, first.patched[0].frontier)


def test_a_second_run_into_the_same_out_refuses_in_one_line(tiny, tmp_path):
    from paint_ray.pipeline import exclusive
    with exclusive(tmp_path):
        r = run_cli("patch", "--model", TINY, "--steps", "3", "--warmup-steps", "1", "--out", str(tmp_path))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "another paint_ray run is writing to" in r.stderr
    assert not (tmp_path / "results").exists()
    after = run_cli("patch", "--model", TINY, "--steps", "3", "--warmup-steps", "1", "--alphas", "0,1",
                    "--out", str(tmp_path))
    assert after.returncode == 0, after.stderr                   # the lock went with its holder


def test_weights_that_do_not_fit_name_the_tensor(tiny):
    from paint_ray.errors import PaintRayError
    from paint_ray.training.finetune import visual_state
    from paint_ray.weights.interpolate import load_floating_state
    state = visual_state(tiny.model.visual)
    with pytest.raises(PaintRayError, match="lack tensor 'proj'"):
        load_floating_state(tiny.model.visual, {k: v for k, v in state.items() if k != "proj"})
    with pytest.raises(PaintRayError, match="unexpected tensor 'extra'"):
        load_floating_state(tiny.model.visual, {**state, "extra": torch.zeros(1)})
