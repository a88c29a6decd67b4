"""Per-block coefficient schedules: the groups of an open_clip image tower, the weights a schedule forms (on the
evaluator and in the patched folder), the row key, the searchers (in process and Ray Tune's, which must
propose the same schedules), a search in process end to end, and bad input."""
from __future__ import annotations

import time

import numpy as np
import open_clip
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from conftest import TINY
from paint_ray.errors import PaintRayError
import paint_ray.models.registry  # noqa: F401  (registers the embedded configs)
from paint_ray.models.build import build_clip
from paint_ray.weights.schedule import (GLOBAL, Schedule, blocks_of, groups_of, parse_schedule, schedule_state,
                                        tensor_weights)


def _visual(name: str = TINY):
    torch.manual_seed(0)
    return build_clip(open_clip.get_model_config(name), name).visual


def _names(visual) -> list[str]:
    return [k for k, v in visual.state_dict().items() if v.is_floating_point()]


def test_every_tensor_of_the_tower_has_its_group_in_depth_order():
    names = _names(_visual("toy-m"))
    groups = dict(zip(names, groups_of(names)))
    assert blocks_of(names) == 4
    for n in ("conv1.weight", "class_embedding", "positional_embedding", "ln_pre.weight", "ln_pre.bias"):
        assert groups[n] == 0, n
    for n in ("ln_post.weight", "ln_post.bias", "proj"):      # proj precedes the blocks in the state dict
        assert groups[n] == 5, n
    for n, g in groups.items():
        if n.startswith("transformer.resblocks."):
            assert g == int(n.split(".")[2]) + 1, n
    assert set(groups.values()) == set(range(6))


def test_linear_schedule_is_lines_depth_line_and_a_flat_one_is_the_global_alpha():
    s = Schedule.linear(0.2, 0.8, 4)            # LiNeS: α + β·l/(L−1) with α = 0.2, β = 0.6
    assert s.blocks == pytest.approx((0.2, 0.4, 0.6, 0.8))
    assert s.groups == pytest.approx((0.2, 0.2, 0.4, 0.6, 0.8, 0.8))
    assert s.key == "0.2,0.2,0.4,0.6,0.8,0.8" and s.alpha == pytest.approx(0.5)
    flat = Schedule.linear(0.3, 0.3, 4)
    assert flat.uniform and flat.key == GLOBAL and flat.alpha == 0.3
    with pytest.raises(PaintRayError, match="outside"):
        Schedule((0.1, 1.5))


def test_schedule_weights_are_the_formula_and_a_flat_schedule_is_lerp_bit_for_bit():
    from paint_ray.weights.interpolate import lerp_state
    visual = _visual()
    theta0 = {k: v.clone() for k, v in visual.state_dict().items() if v.is_floating_point()}
    theta1 = {k: v + torch.randn_like(v) for k, v in theta0.items()}
    s = Schedule((0.25, 0.9))
    got = schedule_state(theta0, theta1, s)
    groups = dict(zip(theta0, groups_of(list(theta0))))
    for k in theta0:
        c = s.groups[groups[k]]
        assert torch.allclose(got[k], theta0[k] + c * (theta1[k] - theta0[k]), atol=1e-6), k
    assert torch.equal(got["conv1.weight"], torch.lerp(theta0["conv1.weight"], theta1["conv1.weight"], 0.25))
    assert torch.equal(got["proj"], torch.lerp(theta0["proj"], theta1["proj"], 0.9))
    flat = schedule_state(theta0, theta1, Schedule((0.4, 0.4)))
    lerp = lerp_state(theta0, theta1, 0.4)
    assert all(torch.equal(flat[k], lerp[k]) for k in theta0)
    with pytest.raises(PaintRayError, match="group coefficients"):
        tensor_weights(groups_of(list(theta0)), "0.1,0.2,0.3")


def test_a_given_schedule_of_the_wrong_length_names_both_lengths():
    with pytest.raises(PaintRayError, match=r"has 3 coefficients; toy-l's image tower has 6 blocks: give 6"):
        parse_schedule("0.1,0.2,0.3", 6, "toy-l")
    assert parse_schedule("0.1, 0.2", 2).blocks == (0.1, 0.2)


def _theta1(tiny, seed=0, scale=0.05):
    gen = torch.Generator().manual_seed(seed)
    return {k: v + scale * torch.randn(v.shape, generator=gen) * v.std().clamp_min(1e-3)
            for k, v in tiny.model.visual.state_dict().items() if v.is_floating_point()}


def test_evaluator_forms_the_schedule_in_place_and_counts_what_a_model_formed_by_hand_counts(tiny):
    from paint_ray.caches.eval import prepare_task
    from paint_ray.evaluation.evaluator import ZERO_SHOT, Cell, Evaluator
    from paint_ray.models.heads import zero_shot_head
    from paint_ray.tasks import get_task
    task = get_task("colors")
    head, data = zero_shot_head(tiny.model, tiny.tokenizer, task), prepare_task(task, "val", 32)
    theta1 = _theta1(tiny, scale=0.5)
    ev = Evaluator(tiny.model.visual)
    ev.add_weights("a", theta1)
    ev.add_head("colors", head)
    ev.add_split("colors", "val", data)
    s = Schedule((0.0, 1.0))
    theta0 = {n: t.clone() for n, t in zip(ev.names, ev.theta0)}
    by_hand = Evaluator(tiny.model.visual)
    by_hand.add_weights("s", schedule_state(theta0, theta1, s))
    by_hand.add_head("colors", head)
    by_hand.add_split("colors", "val", data)
    [row] = ev.evaluate([Cell("a", s.alpha, "colors", "val", s.key)])
    [ref] = by_hand.evaluate([Cell("s", 1.0, "colors", "val")])
    assert row["correct"] == ref["correct"] and row["schedule"] == s.key
    assert all(torch.equal(a, b) for a, b in zip(ev.live, by_hand.live))
    # a schedule whose mean is 0.5 is not α = 0.5, and a schedule is never the shared zero-shot cell
    rows = ev.evaluate([Cell("a", 0.5, "colors", "val"), Cell("a", 0.0, "colors", "val", "0,0,0.5,0.5")])
    assert len(ev.memo) == 3 and Cell(ZERO_SHOT, 0.0, "colors", "val") not in ev.memo
    assert rows[1]["schedule"] == "0,0,0.5,0.5"
    ev.set_model(ZERO_SHOT, 0.0)
    assert all(torch.equal(a, b) for a, b in zip(ev.live, ev.theta0))


def test_rows_from_before_the_schedule_column_are_global_and_schedule_rows_never_collide(tmp_path):
    from paint_ray.identity import SCHEMA_VERSION
    from paint_ray.results.store import KEY, SCHEMA, ResultStore, row_key
    store = ResultStore(tmp_path / "results")
    base = {"schema": SCHEMA_VERSION, "model_digest": "m", "weights": "w", "alpha": 0.5, "task_key": "t",
            "split": "val", "precision": "fp32", "device": "cpu", "eval_task": "colors", "accuracy": 0.5,
            "n": 10, "created": time.time()}
    old = pa.schema([f for f in SCHEMA if f.name != "schedule"])       # a part written before schedules
    pq.write_table(pa.Table.from_pylist([{f.name: base.get(f.name) for f in old}], schema=old),
                   store.dir / "part-00000000000000000001-old.parquet")
    store.append([{**base, "schedule": "0.2,0.2,0.8,0.8", "accuracy": 0.9}])
    frame = store.read()
    assert list(frame["schedule"]) == [""] and float(frame["accuracy"].iloc[0]) == 0.5
    both = store.read(schedules=True)
    assert sorted(both["schedule"]) == ["", "0.2,0.2,0.8,0.8"] and "schedule" in KEY
    assert len(store.keys()) == 2
    assert row_key({**base, "schedule": ""}) in store.keys()


def _drive(searcher, rounds=4, batch=3):
    proposals = []
    for _ in range(rounds):
        props = searcher.suggest(batch)
        proposals += props
        searcher.observe([-sum((v - 0.2 * i) ** 2 for i, v in enumerate(p.values())) for p in props])
    return proposals


@pytest.mark.parametrize("name", ["tpe", "random"])
def test_ray_tunes_optuna_search_proposes_what_the_in_process_searcher_proposes(name):
    from paint_ray.distributed.searchers import tune_searcher
    from paint_ray.results.schedules import ScheduleSpace, local_searcher
    space = ScheduleSpace("free", 3)
    warm = [(space.uniform(a), -a) for a in (0.0, 0.5, 1.0)]
    here = _drive(local_searcher(name, space.names, 7, warm))
    tune = _drive(tune_searcher(name, space.names, 7, warm))
    assert here == tune and len({tuple(p.values()) for p in here}) == len(here)
    other = _drive(local_searcher(name, space.names, 8, warm))
    assert other != here


def test_budget_targets_rank_every_point_within_the_budget_above_every_point_outside():
    from paint_ray.results.schedules import Target, targets_for
    t = Target("max-drop", 1.0)
    base = 0.90
    inside = [t.score(p, s, base) for p, s in ((0.1, 0.895), (0.6, 0.8901))]
    outside = [t.score(p, s, base) for p, s in ((0.99, 0.88), (0.95, 0.80))]
    assert min(inside) > max(outside) and outside[0] > outside[1]     # nearer the budget scores higher
    assert [x.name for x in targets_for("mean", None)] == ["mean", "drop<=1", "drop<=3"]
    assert [x.name for x in targets_for("max-drop", 3.0)] == ["drop<=3", "drop<=1"]


RECIPE = {"lr": [3e-3], "steps": [6], "batch_size": [32], "warmup_steps": [1]}


def _cfg(out, **kw):
    from paint_ray.config import StudyConfig
    return StudyConfig(name="blocks", models=[TINY], patch_tasks=["colors"], supported=["shapes"],
                       alphas=[0.0, 0.5, 1.0], out=str(out), search_space=RECIPE, progress=False,
                       **{"mlflow": False, "schedule": "free", "schedule_trials": 4, "schedule_batch": 2, **kw})


@pytest.mark.slow
def test_local_search_keys_its_rows_reuses_them_and_logs_the_schedule_it_chose(tiny, tmp_path):
    from paint_ray.backends.local import LocalBackend
    from paint_ray.pipeline import run_study
    from paint_ray.results.store import ResultStore
    out = tmp_path / "o"
    result = run_study(_cfg(out, mlflow=True), LocalBackend("cpu"))
    pm = result.patched[0]
    sr = pm.schedule
    assert sr is not None and sr.kind == "free" and sr.rounds == 2
    rows = ResultStore(out / "results").read(schedules=True)
    mine = rows[rows.weights == pm.weights.key]
    scheduled = mine[mine.schedule != ""]
    # 3 targets × 4 trials, minus repeats: every schedule row keyed by its group coefficients, 2 tasks each
    assert len(scheduled) > 0 and set(scheduled.eval_task) == {"colors", "shapes"}
    assert all(len(k.split(",")) == 2 + 2 for k in scheduled.schedule)
    from paint_ray.results.schedules import point_key
    grid = {point_key("", a, 2) for a in (0.0, 0.5, 1.0)}
    assert sr.cells["val"] == 2 * len(set(sr.table.point) - grid)       # the search's own cells only
    assert ResultStore(out / "results").read().schedule.eq("").all()    # α frontiers never see a schedule
    # the frontier over α is what a run without schedules computes
    plain = run_study(_cfg(tmp_path / "plain", schedule=None), LocalBackend("cpu"))
    pd.testing.assert_frame_equal(pm.frontier, plain.patched[0].frontier)
    row = result.table().iloc[0]
    for b in (1, 3):   # the pool holds every global α: a schedule is never worse on validation
        c, g = sr.choices[f"drop<={b}"], pm.frontier
        best_global = g[(g.supported_val.iloc[0] - g.supported_val) * 100 <= b + 1e-9].patch_val.max()
        assert c.eligible and c.patch_val >= best_global
    assert row["schedule_cells"] == sum(sr.cells.values()) > 0

    # a rerun into the same --out evaluates nothing and chooses the same
    again = run_study(_cfg(out, mlflow=False), LocalBackend("cpu"))
    assert again.timings.get("cells", 0) == 0
    assert {k: c.point for k, c in again.patched[0].schedule.choices.items()} == \
        {k: c.point for k, c in sr.choices.items()}

    # the MLflow run records the schedule; its model folder is plain open_clip, formed with the schedule
    import mlflow
    from paint_ray.models.checkpoints import load_tensors
    from paint_ray.reporting.tracking import load_patched, tracking_uri
    from paint_ray.weights.schedule import parse_groups
    client = mlflow.MlflowClient(tracking_uri(str(out)))
    run = client.get_run(result.run_ids[pm.label])
    chosen = sr.chosen
    assert run.data.params["schedule_family"] == "free" and run.data.params["schedule_searcher"] == "tpe"
    assert run.data.params["schedule_key"] == chosen.schedule
    assert "schedule_gain_at_1" in run.data.metrics and "schedule_cells" in run.data.metrics
    bundle = load_patched(run.info.run_id, tracking_uri(str(out)), dst=tmp_path / "dl")
    model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{bundle.folder}")
    theta0 = {k: v for k, v in tiny.model.visual.state_dict().items() if v.is_floating_point()}
    from paint_ray.storage import fetch
    theta1 = load_tensors(fetch(pm.weights.theta1, None))
    if chosen.schedule:
        want = schedule_state(theta0, theta1, Schedule(parse_groups(chosen.point)[1:-1]))
        assert bundle.schedule == pytest.approx(parse_groups(chosen.point)[1:-1]) and np.isnan(bundle.alpha)
    else:
        from paint_ray.weights.interpolate import lerp_state
        want = lerp_state(theta0, theta1, chosen.alpha)
    got = model.visual.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("paint-ray: error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("args,needle", [
    (["--schedule", "0.1,0.2,0.3"], "has 3 coefficients; toy-xs's image tower has 2 blocks: give 2"),
    (["--schedule", "free", "--searcher", "bogus"], "unknown searcher 'bogus'"),
    (["--schedule", "cubic"], "unknown schedule 'cubic'"),
    (["--searcher", "tpe"], "--searcher is a --schedule option"),
    (["--schedule", "linear", "--schedule-trials", "0"], "--schedule-trials 0 must be an integer"),
    (["--schedule", "0.1,1.5"], "schedule coefficient 1.5 is outside [0, 1]"),
])
def test_bad_schedule_options_are_one_line_before_any_work(args, needle, tmp_path, capsys):
    from paint_ray.cli import main
    start = time.time()
    assert main(["patch", "--model", TINY, *args, "--out", str(tmp_path / "o")]) == 2
    line = _one_line(capsys)
    assert needle in line, line
    assert not (tmp_path / "o" / "results").exists() and time.time() - start < 10


@pytest.mark.slow
@pytest.mark.ray
def test_on_ray_the_evaluators_score_tunes_proposals_and_choose_what_the_local_search_chooses(ray_local, tmp_path):
    from paint_ray.backends.local import LocalBackend
    from paint_ray.pipeline import run_study
    from paint_ray.results.store import ResultStore
    here = run_study(_cfg(tmp_path / "local", schedule="linear"), LocalBackend("cpu")).patched[0]
    there = run_study(_cfg(tmp_path / "ray", schedule="linear")).patched[0]      # Tune trial, evaluator actors
    assert there.weights.key == here.weights.key
    assert {k: c.point for k, c in there.schedule.choices.items()} == \
        {k: c.point for k, c in here.schedule.choices.items()}
    cols = ["alpha", "schedule", "eval_task", "split", "accuracy"]

    def rows(out):
        frame = ResultStore(out / "results").read(schedules=True)
        return frame[frame.schedule != ""][cols].sort_values(cols[:4]).reset_index(drop=True)
    pd.testing.assert_frame_equal(rows(tmp_path / "ray"), rows(tmp_path / "local"))
