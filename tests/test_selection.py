import numpy as np
import pandas as pd
import pytest

from paint_ray.results.selection import (Selection, best_of, frontier_table, pareto_mask, rule_score, select_alpha,
                                        zero_shot_row)


def _rows(points):
    """points: alpha -> {(task, split): acc}"""
    return pd.DataFrame([{"alpha": a, "eval_task": t, "split": s, "accuracy": v}
                         for a, d in points.items() for (t, s), v in d.items()])


def _point(pv, sv, pt=None, st=None):
    pt = pv if pt is None else pt
    st = sv if st is None else st
    return {("p", "val"): pv, ("p", "test"): pt, ("s", "val"): sv, ("s", "test"): st}


def test_mean_rule_picks_validation_argmax_not_test():
    rows = _rows({0.0: _point(.2, .9), 0.5: _point(.7, .85, pt=.1), 1.0: _point(.95, .5, pt=.99, st=.99)})
    table = frontier_table(rows, ["p"], ["s"])
    sel = select_alpha(table)
    assert sel.alpha == 0.5  # val means: .55, .775, .725 — test would have preferred α=1
    assert sel.patch_val == pytest.approx(.7)


def test_ties_go_to_smaller_alpha():
    rows = _rows({0.0: _point(.5, .5), 0.3: _point(.6, .6), 0.6: _point(.7, .5), 1.0: _point(.2, .2)})
    assert select_alpha(frontier_table(rows, ["p"], ["s"])).alpha == 0.3


def test_max_drop_honours_the_limit():
    rows = _rows({0.0: _point(.2, .90), 0.4: _point(.5, .885), 0.6: _point(.7, .87), 0.8: _point(.9, .80)})
    table = frontier_table(rows, ["p"], ["s"])
    assert select_alpha(table, "max-drop", 3.0).alpha == 0.6      # drop 3.0 points allowed exactly
    assert select_alpha(table, "max-drop", 2.0).alpha == 0.4
    assert select_alpha(table, "max-drop", 0.0).alpha == 0.0
    assert select_alpha(table, "max-drop", 50).alpha == 0.8


def test_supported_mean_over_several_tasks_and_pareto():
    rows = _rows({a: {("p", "val"): a, ("p", "test"): a, ("s1", "val"): 1 - a, ("s1", "test"): 1 - a,
                      ("s2", "val"): 1.0, ("s2", "test"): 1.0} for a in (0.0, 0.5, 1.0)})
    table = frontier_table(rows, ["p"], ["s1", "s2"])
    assert np.allclose(table["supported_val"], [1.0, 0.75, 0.5])
    assert table["pareto"].all()
    assert list(pareto_mask([1, 2, 2, 0], [1, 2, 1, 3])) == [False, True, False, True]


# ---------------------------------------------------------------- none eligible, ranking, θ0 as the reference

def test_max_drop_with_no_alpha_within_budget_is_none_eligible_not_alpha_zero():
    # a sequential step's candidates all start from a model that already dropped 5 points from θ0: none is
    # within a 3-point budget. Before the fix select_alpha took the argmax over −inf and returned α = 0.
    rows = _rows({0.0: _point(.6, .85), 0.5: _point(.7, .84), 1.0: _point(.8, .80)})
    table = frontier_table(rows, ["p"], ["s"])
    theta0 = pd.Series({"alpha": 0.0, "patch_val": .2, "supported_val": .90})
    sel = select_alpha(table, "max-drop", 3.0, baseline=theta0)
    assert not sel.eligible and np.isnan(sel.alpha) and sel.score == -np.inf
    assert sel.describe().endswith("none eligible")
    assert select_alpha(table, "max-drop", 6.0, baseline=theta0).alpha == 0.5     # 5.0 and 6.0 point drops
    # the same candidates as a table whose α = 0 is the reference: α = 0 is always eligible
    assert select_alpha(table, "max-drop", 3.0).alpha == 0.5 and select_alpha(table, "max-drop", 3.0).eligible


def test_candidates_without_alpha_zero_measure_from_the_baseline_table():
    # per-task merges: only the α = 1 rows are candidates, θ0 is the α = 0 row of the full frontier
    rows = _rows({0.0: _point(.2, .90), 1.0: _point(.8, .85)})
    table = frontier_table(rows, ["p"], ["s"])
    at_one = table[table.alpha == 1.0]
    assert not select_alpha(at_one, "max-drop", 3.0, baseline=table).eligible         # 5 points > 3
    assert select_alpha(at_one, "max-drop", 5.0, baseline=table).alpha == 1.0


def test_every_rule_scores_what_it_maximises():
    rows = _rows({0.0: _point(.2, .90), 0.5: _point(.90, .875), 1.0: _point(.95, .70)})
    table = frontier_table(rows, ["p"], ["s"])
    mean = select_alpha(table)
    assert mean.alpha == 0.5 and mean.score == pytest.approx((.90 + .875) / 2)
    budget = select_alpha(table, "max-drop", 3.0)
    assert budget.alpha == 0.5 and budget.score == pytest.approx(.90)               # the patch accuracy
    assert rule_score(.9, .875, "mean") == pytest.approx(.8875) and rule_score(.9, .875, "max-drop") == .9


def test_best_of_ranks_by_the_rule_and_puts_none_eligible_last():
    a = Selection(0.5, "max-drop", 3.0, 0.90, 0.875, score=0.90)       # more patch accuracy within the budget
    b = Selection(0.5, "max-drop", 3.0, 0.88, 0.900, score=0.88)       # the better mean (.89 > .8875)
    none = Selection(float("nan"), "max-drop", 3.0, float("nan"), float("nan"), eligible=False, score=-np.inf)
    assert best_of([b, a]) == 1 and best_of([none, b]) == 1 and best_of([none, none]) == 0
    assert best_of([a, Selection(0.5, "max-drop", 3.0, 0.90, 0.9, score=0.90)]) == 0      # ties: the first


def test_zero_shot_row_takes_theta0_from_the_specialised_frontiers():
    f1 = frontier_table(_rows({0.0: {("a", "val"): .1, ("a", "test"): .2, ("s", "val"): .9, ("s", "test"): .8},
                               1.0: {("a", "val"): .9, ("a", "test"): .9, ("s", "val"): .5, ("s", "test"): .5}}),
                        ["a"], ["s"])
    f2 = frontier_table(_rows({0.0: {("b", "val"): .3, ("b", "test"): .4, ("s", "val"): .9, ("s", "test"): .8},
                               1.0: {("b", "val"): .9, ("b", "test"): .9, ("s", "val"): .5, ("s", "test"): .5}}),
                        ["b"], ["s"])
    row = zero_shot_row([f1, f2], ["a", "b"], ["s"])
    assert row["patch_test"] == pytest.approx(.3) and row["patch_val"] == pytest.approx(.2)
    assert row["supported_test"] == pytest.approx(.8) and row["alpha"] == 0.0


def _sequential_model(zero_shot=None):
    from paint_ray.evaluation.weight_set import WeightSet
    from paint_ray.models.registry import ModelRef
    from paint_ray.results.study import PatchedModel
    ws = WeightSet(ModelRef("m", "d" * 16, "p", "arch", 1), "finetuned/x.safetensors", "x" * 16, "a+b", "sequential",
                   ("a", "b", "s"))
    # a sequential step: α = 0 is the model patched on a (a at .8, b at .3, supported 3 points down from θ0)
    frontier = frontier_table(_rows({
        0.0: {("a", "val"): .8, ("a", "test"): .8, ("b", "val"): .3, ("b", "test"): .3, ("s", "val"): .87, ("s", "test"): .87},
        0.5: {("a", "val"): .8, ("a", "test"): .8, ("b", "val"): .6, ("b", "test"): .6, ("s", "val"): .86, ("s", "test"): .86},
        1.0: {("a", "val"): .7, ("a", "test"): .7, ("b", "val"): .9, ("b", "test"): .9, ("s", "val"): .80, ("s", "test"): .80}}),
        ["a", "b"], ["s"])
    sel = select_alpha(frontier, "max-drop", 5.0,
                       baseline=zero_shot if zero_shot is not None else frontier)
    return PatchedModel("m", "p", "a+b", ws, {}, frontier, sel, {}, "sequential", zero_shot=zero_shot)


def test_sequential_figures_are_measured_from_theta0():
    theta0 = pd.Series({"alpha": 0.0, "a_val": .2, "a_test": .2, "b_val": .3, "b_test": .3, "s_val": .90,
                        "s_test": .90, "patch_val": .25, "patch_test": .25, "supported_val": .90, "supported_test": .90})
    pm = _sequential_model(theta0)
    row = pm.summary(["s"])
    assert pm.selection.alpha == 0.5                      # 4 points from θ0 at 0.5 are in the 5-point budget
    assert row["patch_zero_shot"] == pytest.approx(.25) and row["supported_zero_shot"] == pytest.approx(.90)
    assert row["gain"] == pytest.approx(.70 - .25) and row["drop"] == pytest.approx(.04)
    # the budgets too: within 1 point of θ0 no α of this frontier is (the step-1 model already gave up 3),
    # so "none eligible", not the step-1 model's figures; within 3 points: α = 0, its gain from θ0
    assert np.isnan(row["gain_at_1"]) and np.isnan(row["alpha_at_1"])
    assert row["alpha_at_3"] == 0.0 and row["gain_at_3"] == pytest.approx(.55 - .25)
    assert row["drop_at_3"] == pytest.approx(.03)
    # measured from its own α = 0 (the step-1 model, as before the fix) every figure would be smaller
    own = _sequential_model().summary(["s"])
    assert own["patch_zero_shot"] == pytest.approx(.55) and own["gain_at_1"] == pytest.approx(.15)


def test_a_none_eligible_model_reports_no_patched_figures():
    theta0 = pd.Series({"alpha": 0.0, "a_test": .2, "b_test": .3, "s_test": .99, "s_val": .99, "patch_val": .25,
                        "patch_test": .25, "supported_val": .99, "supported_test": .99})
    pm = _sequential_model(theta0)                       # 12+ points below θ0 everywhere: none in 5
    assert not pm.selection.eligible
    row = pm.summary(["s"])
    assert row["eligible"] is False and np.isnan(row["alpha"])
    assert np.isnan(row["patch_patched"]) and np.isnan(row["gain"]) and np.isnan(row["drop"])


def _pipeline_with_two_sets(tiny, tmp_path, rule, max_drop):
    """A real pipeline (in process) over two weight sets of toy-xs whose validation rows are written by hand:
    A has more patch accuracy within a 3-point drop, B the better mean of patch and supported."""
    import torch

    from paint_ray.backends.local import LocalBackend
    from paint_ray.config import StudyConfig
    from paint_ray.evaluation.weight_set import WeightSet
    from paint_ray.pipeline import Pipeline
    from paint_ray.training.finetune import visual_state
    cfg = StudyConfig(name="rank", models=["toy-xs"], patch_tasks=["colors"], supported=["shapes"],
                      alphas=[0.0, 0.5, 1.0], out=str(tmp_path), rule=rule, max_drop=max_drop, mlflow=False,
                      progress=False)
    backend = LocalBackend("cpu")
    backend.add_model(tiny)
    pipe = Pipeline.attached(cfg, backend, ["colors", "shapes"])
    theta0 = visual_state(tiny.model.visual)
    g = torch.Generator().manual_seed(0)
    # (α -> (patch, supported)) on val and test alike; θ0 at α = 0 for both
    points = {"A": {0.0: (.2, .90), 0.5: (.90, .875), 1.0: (.95, .70)},
              "B": {0.0: (.2, .90), 0.5: (.88, .900), 1.0: (.96, .80)}}
    sets = {}
    for name, pts in points.items():
        key = f"rank-{name}-{tmp_path.name}"
        theta1 = {k: v + 0.01 * torch.randn(v.shape, generator=g) for k, v in theta0.items()}
        ws = WeightSet(tiny.ref, pipe.save_weights(theta1, "finetuned", key), key, "colors", "single",
                       ("colors", "shapes"))
        sets[name] = ws
        pipe.store.append(pipe.row(ws, {"alpha": a, "task": task, "split": split, "accuracy": acc, "n": 1000,
                                        "seconds": 0.0})
                          for a, (p, s) in pts.items() for split in ("val", "test")
                          for task, acc in (("colors", p), ("shapes", s)))
    return pipe, sets


def test_the_pipeline_ranks_weight_sets_by_the_rule_that_chose_their_alpha(tiny, tmp_path):
    # Both sets choose α = 0.5 under a 3-point budget (α = 1 drops more). The max-drop rule maximises the
    # patch accuracy, so A (0.90) must win over B (0.88), although B has the better mean (0.89 vs 0.8875).
    # Before the fix Pipeline.select ranked by the mean whatever the rule and kept B.
    pipe, sets = _pipeline_with_two_sets(tiny, tmp_path, "max-drop", 3.0)
    pm = pipe.select([sets["B"], sets["A"]], ["colors"], [0.0, 0.5, 1.0])
    assert pm.weights.key == sets["A"].key and pm.selection.alpha == 0.5
    assert pm.selection.score == pytest.approx(.90)
    # under the mean rule the mean decides: A's best mean is α = 0.5 (.8875), B's α = 1 (.88) or 0.5 (.89)
    pipe.cfg.rule, pipe.cfg.max_drop = "mean", None
    pm = pipe.select([sets["A"], sets["B"]], ["colors"], [0.0, 0.5, 1.0])
    assert pm.weights.key == sets["B"].key and pm.selection.score == pytest.approx(.89)


def test_the_pipeline_reports_none_eligible_when_no_set_is_within_the_budget(tiny, tmp_path):
    # choosing at α = 1 only (per-task merges): both sets drop 10 or more points there, so nothing is
    # chosen. Before the fix the first set's α = 1 was returned as if selected.
    pipe, sets = _pipeline_with_two_sets(tiny, tmp_path, "max-drop", 3.0)
    pm = pipe.select([sets["A"], sets["B"]], ["colors"], [0.0, 1.0], choose_at=1.0)
    assert not pm.selection.eligible and np.isnan(pm.selection.alpha)
    assert pm.coefficient_table["eligible"].tolist() == [False, False]
    assert np.isnan(pm.summary(["shapes"])["patch_patched"])
