import numpy as np
import pandas as pd
import pytest

from paint_ray.results.selection import frontier_table, pareto_mask, select_alpha


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
