"""Adaptive α (results/search.py and Pipeline.search): what each round proposes, that it resolves every target
to Δα on a known frontier, where test is needed, and a whole study searched in process (MLflow included),
resuming from a store that holds some of a point's cells only."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import TINY, raw_rows


def _patch(a: float) -> float:
    return 0.5 + 0.4 * a                    # the patch task gains steadily with α


def _supported(a: float) -> float:
    return 0.9 - 0.2 * a ** 2               # the supported tasks lose slowly, then faster


def _run_search(search, supported=_supported, limit: int = 40) -> tuple[pd.DataFrame, int]:
    """The search's rounds against the frontier above: (every evaluated point, the number of rounds)."""
    from paint_ray.results.search import COARSE
    evaluated: dict[float, tuple[float, float]] = {}
    rounds = 0
    while True:
        frame = pd.DataFrame([{"alpha": a, "patch_val": p, "supported_val": s} for a, (p, s) in evaluated.items()],
                             columns=["alpha", "patch_val", "supported_val"])
        new = search.propose(frame)
        if not new:
            return frame, rounds
        if rounds == 0:
            assert new == list(COARSE)          # the first round is the coarse grid, whatever the targets
        assert not set(new) & set(evaluated), "a round proposed a point already evaluated"
        evaluated.update({a: (_patch(a), supported(a)) for a in new})
        rounds += 1
        assert rounds < limit


def test_search_resolves_every_budget_boundary_and_the_mean_optimum_to_delta():
    from paint_ray.results.search import AlphaSearch
    from paint_ray.results.selection import select_alpha
    delta = 0.01
    frame, rounds = _run_search(AlphaSearch("mean", None, delta))
    # a drop of B points: 0.2 a^2 = B / 100, so the boundary is a = sqrt(B / 20)
    for budget in (1.0, 3.0):
        chosen = select_alpha(frame, "max-drop", budget).alpha
        assert np.sqrt(budget / 20) - delta <= chosen <= np.sqrt(budget / 20) + 1e-9
    # mean rule: (0.5 + 0.4a + 0.9 - 0.2a^2) / 2 is largest at a = 1 (0.4 - 0.4a > 0 below 1): the anchor
    assert select_alpha(frame, "mean").alpha == 1.0
    assert len(frame) <= 40 < 101 and rounds <= 10     # a fraction of the 0:1:0.01 grid's points


def test_mean_rule_optimum_inside_the_interval_is_found_by_golden_section():
    from paint_ray.results.search import AlphaSearch
    from paint_ray.results.selection import select_alpha
    delta = 0.01
    # (0.5 + 0.4a + 0.9 - 0.8a^2) / 2 is largest at a = 0.25
    frame, _ = _run_search(AlphaSearch("mean", None, delta, budgets=()), supported=lambda a: 0.9 - 0.8 * a ** 2)
    assert abs(select_alpha(frame, "mean").alpha - 0.25) <= delta


def test_test_points_are_the_coarse_grid_and_the_chosen_values():
    from paint_ray.results.search import COARSE, AlphaSearch
    frame, _ = _run_search(AlphaSearch("mean", None, 0.01))
    chosen = [0.223607, float("nan")]                  # nan: a budget no point was within
    wanted = AlphaSearch().test_alphas(frame, chosen)
    assert set(wanted) == set(COARSE) | {0.223607}


def test_a_point_missing_a_task_on_validation_is_no_candidate_and_no_mean_is_taken_over_a_subset():
    from paint_ray.results.selection import frontier_table
    rows = pd.DataFrame([
        {"alpha": a, "eval_task": t, "split": s, "accuracy": acc}
        for a, t, s, acc in [(0.0, "p", "val", 0.5), (0.0, "s1", "val", 0.9), (0.0, "s2", "val", 0.7),
                             (0.5, "p", "val", 0.8), (0.5, "s1", "val", 0.9),            # s2 missing at 0.5
                             (1.0, "p", "val", 0.9), (1.0, "s1", "val", 0.6), (1.0, "s2", "val", 0.6),
                             (1.0, "p", "test", 0.9), (1.0, "s1", "test", 0.6)]])         # s2 test missing
    t = frontier_table(rows, ["p"], ["s1", "s2"])
    assert t["alpha"].tolist() == [0.0, 1.0]
    assert t.set_index("alpha").loc[0.0, "supported_val"] == pytest.approx(0.8)
    assert np.isnan(t.set_index("alpha").loc[1.0, "supported_test"])    # not s1's 0.6 alone
    # a supported task never evaluated anywhere (its data changed since the store was written): no point
    assert frontier_table(rows, ["p"], ["s1", "s3"]).empty


def test_searched_study_logs_to_mlflow_shares_rows_with_a_grid_and_completes_partial_points(tiny, tmp_path,
                                                                                            study_config):
    """A study searched in process end to end. It starts from a store written by a grid study with fewer
    supported tasks, so its α = 0, 0.5 and 1 hold some of their cells only; the search must evaluate the missing
    ones, not take those points as evaluated. A grid run over points the search tested then evaluates nothing."""
    from mlflow import MlflowClient

    from paint_ray.backends.local import LocalBackend
    from paint_ray.pipeline import run_study
    from paint_ray.reporting.tracking import tracking_uri
    from paint_ray.results.search import COARSE
    run_study(study_config(tmp_path, alphas=[0.0, 0.5, 1.0]), LocalBackend("cpu"))
    cfg = study_config(tmp_path, supported=["shapes", "digits"], alphas=[], alpha_search=0.05, mlflow=True)
    result = run_study(cfg, LocalBackend("cpu"))
    rows = raw_rows(tmp_path)
    mine = rows[rows.weights == result.patched[0].weights.key]
    for task in ("colors", "shapes", "digits"):
        val = set(mine[(mine.eval_task == task) & (mine.split == "val")].alpha.round(6))
        assert set(COARSE) <= val, (task, sorted(val))
    assert not mine.duplicated(["alpha", "eval_task", "split", "task_key"]).any()   # nothing evaluated twice
    frontier = result.patched[0].frontier
    assert frontier["supported_val"].notna().all() and len(frontier) > len(COARSE)   # refined beyond the grid
    assert result.patched[0].selection.eligible
    # MLflow: the searched study has its run (its key names the search, not an empty grid)
    client = MlflowClient(tracking_uri(cfg.out, None))
    run = client.get_run(result.run_ids[f"{TINY}/colors"])
    assert run.info.status == "FINISHED"
    # rerun: nothing new; a grid over the coarse points: nothing new either (the search tested them all)
    before = len(raw_rows(tmp_path))
    run_study(cfg, LocalBackend("cpu"))
    run_study(study_config(tmp_path, supported=["shapes", "digits"], alphas=list(COARSE)), LocalBackend("cpu"))
    assert len(raw_rows(tmp_path)) == before


def test_a_searched_alpha_is_printed_to_its_resolution_not_rounded_onto_its_neighbour():
    # the search's golden section lands between grid points: 0.675 printed as 0.68 showed two rows "0.68"
    from paint_ray.reporting.text import alpha_text
    shown = [alpha_text(a) for a in (0.0, 0.1, 0.675, 0.68, 0.6756, 1.0)]
    assert shown == ["0.00", "0.10", "0.675", "0.68", "0.6756", "1.00"]
