"""Frontier summaries across seeds (robust.py): budget points chosen on val and read on test, the frontier's
area, trends that must hold in every seed, and --seeds from the command line to the table and the plot."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import TINY


def _frontier(patch_val, supp_val, patch_test=None, supp_test=None, alphas=None) -> pd.DataFrame:
    alphas = alphas or [round(i / (len(patch_val) - 1), 6) for i in range(len(patch_val))]
    return pd.DataFrame({"alpha": alphas, "patch_val": patch_val, "supported_val": supp_val,
                         "patch_test": patch_test or patch_val, "supported_test": supp_test or supp_val})


def test_budget_points_are_chosen_on_val_and_read_on_test():
    from paint_ray.results.robust import budget_metrics
    # val: α 0.5 drops 0.5 points, α 0.75 drops 2 points, α 1 drops 10; test differs from val on purpose
    f = _frontier([0.2, 0.4, 0.6, 0.7, 0.9], [0.9, 0.9, 0.895, 0.88, 0.80],
                  patch_test=[0.25, 0.45, 0.62, 0.74, 0.91], supp_test=[0.92, 0.91, 0.90, 0.89, 0.81])
    m = budget_metrics(f)
    assert m["alpha_at_1"] == 0.5 and m["alpha_at_3"] == 0.75
    assert m["gain_at_1"] == pytest.approx(0.62 - 0.25) and m["drop_at_1"] == pytest.approx(0.92 - 0.90)
    assert m["gain_at_3"] == pytest.approx(0.74 - 0.25) and m["drop_at_3"] == pytest.approx(0.92 - 0.89)


def test_frontier_area_is_the_mean_best_gain_over_budgets():
    from paint_ray.results.robust import frontier_area
    # a straight frontier: every point of drop buys 5 points of gain, up to 40 points at a drop of 8
    f = _frontier([0.5, 0.7, 0.9], [0.9, 0.86, 0.82])
    best = np.minimum(5 * np.linspace(0, 10, 100001), 40)          # gain(d) in points
    assert 100 * frontier_area(f) == pytest.approx(best.mean(), abs=0.05)
    # nothing gains: the area is 0, not negative
    assert frontier_area(_frontier([0.5, 0.4, 0.3], [0.9, 0.8, 0.7])) == 0.0
    # a frontier that dominates another has the larger area
    assert frontier_area(_frontier([0.5, 0.8, 0.9], [0.9, 0.89, 0.85])) > frontier_area(f)


def _table(values: dict) -> pd.DataFrame:
    """values[(model, seed)] = gain_at_1; the other metrics follow it."""
    rows = []
    for (model, seed), g in values.items():
        rows.append({"model": model, "patch": "digits", "mode": "single", "seed": seed, "gain_at_1": g,
                     "gain_at_3": g + 0.1, "area": g / 2, "gain": g, "drop": 0.2 - g / 10})
    return pd.DataFrame(rows)


def test_trends_count_the_seeds_they_hold_in():
    from paint_ray.results.robust import across_seeds, format_summary, trends
    models = ["toy-s", "toy-m", "toy-l"]
    table = _table({("toy-s", 0): 0.1, ("toy-m", 0): 0.2, ("toy-l", 0): 0.3,
                    ("toy-s", 1): 0.1, ("toy-m", 1): 0.35, ("toy-l", 1): 0.3})
    tr = trends(table, models).set_index("metric")
    assert tr.loc["gain_at_1", "monotone"] == 1 and tr.loc["gain_at_1", "ends"] == 2
    assert tr.loc["drop", "ends"] == 2            # the drop falls as the gain rises here
    s = across_seeds(table).set_index("model")
    assert s.loc["toy-m", "gain_at_1"] == pytest.approx(0.275)
    assert (s.loc["toy-m", "gain_at_1_min"], s.loc["toy-m", "gain_at_1_max"]) == (0.2, 0.35)
    text = format_summary(table, models)
    assert "27.5 [20.0, 35.0]" in text
    assert "rises from smallest to largest in every seed, not at every step (1 of 2)" in text
    flat = _table({("toy-s", 0): 0.0, ("toy-m", 0): 0.001, ("toy-l", 0): 0.002,
                   ("toy-s", 1): 0.0, ("toy-m", 1): 0.001, ("toy-l", 1): 0.003})
    assert trends(flat, models).set_index("metric").loc["gain_at_1", "ends"] == 0    # 0.0 -> 0.3 points: a tie
    flipped = _table({("toy-s", 0): 0.3, ("toy-m", 0): 0.2, ("toy-l", 0): 0.1,
                      ("toy-s", 1): 0.1, ("toy-m", 1): 0.2, ("toy-l", 1): 0.3})
    assert "no trend holds in every seed" in format_summary(flipped, models)


@pytest.mark.parametrize("seeds, message", [([], "--seeds is empty"), ([0, 0], "lists a seed twice"),
                                            ([-1], "seed -1 is not a fine-tuning seed; give an integer from 0")])
def test_bad_seeds_are_one_line_errors(seeds, message, tmp_path, study_config):
    from paint_ray.errors import PaintRayError
    cfg = study_config(tmp_path / "o", name="s", alphas=[0.5], seeds=seeds)
    with pytest.raises(PaintRayError, match=message):
        cfg.validate()


@pytest.mark.slow
def test_seeds_are_patched_and_reported_one_by_one(tiny, tmp_path, capsys):
    """--seeds 0,1 through the study command line (--local): two rows per model and patch task, each its own
    trial, the summary across seeds printed and saved, the plot written."""
    from paint_ray.cli.study import main_for
    presets = {"embedded": dict(models=[TINY], patch_tasks=["colors"], supported=["shapes"],
                                search_space={"lr": [3e-3], "steps": [6], "batch_size": [16], "warmup_steps": [1]})}
    out = tmp_path / "out"
    assert main_for("seeds", presets, argv=["--out", str(out), "--local", "--quiet", "--no-mlflow",
                                            "--alphas", "0,0.5,1", "--seeds", "0,1"]) == 0
    table = pd.read_parquet(out / "seeds.parquet")
    assert sorted(table["seed"]) == [0, 1]
    assert table["trial"].nunique() == 2                       # each seed fine-tuned on its own
    for col in ("gain_at_1", "gain_at_3", "area", "alpha_at_1"):
        assert table[col].notna().all()
    summary = pd.read_parquet(out / "seeds_across_seeds.parquet")
    assert summary["seeds"].tolist() == [2]
    assert summary["gain_at_3_min"].iloc[0] <= summary["gain_at_3"].iloc[0] <= summary["gain_at_3_max"].iloc[0]
    assert (out / "seeds.png").stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "over 2 fine-tuning seeds" in printed and " seed " in printed


def test_bad_seeds_flag_and_multitask_with_two_seeds_refused(tmp_path, capsys):
    from paint_ray.cli.study import main_for
    presets = {"embedded": dict(models=[TINY], patch_tasks=["colors"], supported=["shapes"],
                                search_space={"lr": [3e-3], "steps": [6]})}
    with pytest.raises(SystemExit):
        main_for("seeds", presets, argv=["--out", str(tmp_path / "o"), "--seeds", "zero"])
    assert "--seeds/--seed: 'zero' is not a comma list of integer seeds, e.g. 0,1" in capsys.readouterr().err
    from conftest import load_script
    mt = load_script("multitask")
    assert mt.main(["--models", TINY, "--seeds", "0,1", "--out", str(tmp_path / "m"), "--local"]) != 0
    assert "one fine-tuning seed at a time" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
