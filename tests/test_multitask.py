"""Multi-task modes: joint routing, sequential starting points, and the three modes end to end."""
from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from conftest import TINY, load_script, one_line_error, run_main


def next_batch(tuner):
    """The next step's batch as the loop feeds it: (model input, routes, labels)."""
    batch = tuner._next()
    return tuner._input(batch), batch.routes, batch.labels


def test_joint_batches_score_each_example_with_its_own_head(tiny):
    from paint_ray.caches.eval import prepare_task
    from paint_ray.training.finetune import Finetuner, FinetuneConfig
    from paint_ray.models.heads import zero_shot_head
    from paint_ray.tasks import get_task
    tasks = {n: get_task(n) for n in ("colors", "counting")}
    heads = {n: zero_shot_head(tiny.model, tiny.tokenizer, t) for n, t in tasks.items()}
    trains = {n: prepare_task(t, "train", 32) for n, t in tasks.items()}
    tuner = Finetuner(copy.deepcopy(tiny.model.visual), heads, trains,
                      FinetuneConfig(batch_size=64, steps=1, augment_shift=0))
    x, routes, y = next_batch(tuner)
    assert sum(sl.stop - sl.start for _, sl in routes) == 64 and {n for n, _ in routes} == set(tasks)
    for name, sl in routes:      # labels of each slice are in its own task's label space
        assert int(y[sl].max()) < len(tasks[name].classnames)
    tuner.visual.eval()
    with torch.no_grad():
        got = float(tuner.loss(x, routes, y))
        f = tuner.visual(x)
        f = f / f.norm(dim=-1, keepdim=True)
        want = sum(F.cross_entropy(f[sl] @ heads[n].T, y[sl], reduction="sum") for n, sl in routes) / 64
    assert got == pytest.approx(float(want), rel=1e-5)

    # mix 'balanced': every batch holds the tasks in equal shares, whatever their sizes (digits has half as many)
    trains["digits"] = prepare_task(get_task("digits"), "train", 32)
    heads["digits"] = zero_shot_head(tiny.model, tiny.tokenizer, get_task("digits"))
    uneven = {n: trains[n] for n in ("digits", "counting")}
    balanced = Finetuner(copy.deepcopy(tiny.model.visual), heads, uneven,
                         FinetuneConfig(batch_size=63, steps=3, augment_shift=0, mix="balanced"))
    for _ in range(3):
        _, routes, _ = next_batch(balanced)
        assert sorted(sl.stop - sl.start for _, sl in routes) == [31, 32]
    by_size = Finetuner(copy.deepcopy(tiny.model.visual), heads, uneven,
                        FinetuneConfig(batch_size=512, steps=3, augment_shift=0))
    shares = dict((n, sl.stop - sl.start) for n, sl in next_batch(by_size)[1])
    assert shares["counting"] > 1.5 * shares["digits"]          # 2,000 vs 997 examples


def test_weights_with_a_start_interpolate_from_it(tiny):
    from paint_ray.evaluation.evaluator import Cell, Evaluator
    ev = Evaluator(tiny.model.visual)
    torch.manual_seed(0)
    start = {n: t + 0.01 * torch.randn_like(t) for n, t in zip(ev.names, ev.theta0)}
    end = {n: t + 0.05 * torch.randn_like(t) for n, t in zip(ev.names, ev.theta0)}
    ev.add_weights("step2", end, start=start)
    ev.set_model("step2", 0.0)
    assert all(torch.equal(live, start[n]) for n, live in zip(ev.names, ev.live))
    ev.set_model("step2", 1.0)
    assert all(torch.equal(live, end[n]) for n, live in zip(ev.names, ev.live))
    ev.set_model("step2", 0.25)
    assert all(torch.allclose(live, 0.75 * start[n] + 0.25 * end[n], atol=1e-6) for n, live in zip(ev.names, ev.live))
    assert ev._canonical(Cell("step2", 0.0, "t", "val")).weights == "step2"   # α = 0 is not θ0 here


@pytest.mark.slow
def test_three_modes_end_to_end_sequential_starts_from_patched_step1(ray_local, tmp_path, study_config):
    from paint_ray.models.checkpoints import load_tensors
    from paint_ray.multitask import MultitaskConfig, run_multitask
    from paint_ray.storage import fetch
    cfg = study_config(tmp_path, name="mt", patch_tasks=["colors", "counting"], alphas=[0.0, 0.25, 0.5, 0.75, 1.0],
                       rule="max-drop", max_drop=2.0)
    result, table = run_multitask(MultitaskConfig(cfg, combiner="ties"))
    assert list(table["mode"]) == ["specialised", "joint", "sequential", "parallel (ties)"]
    assert table[["colors", "counting", "average", "supported", "drop"]].notna().all().all()
    modes = {pm.mode: pm for pm in result.patched}
    assert set(modes) == {"single", "joint", "sequential", "parallel"}

    # one budget for all: every model, the specialised ones too, gave up at most 2 points of supported accuracy
    # on validation, measured from θ0 (for sequential, whose α = 0 is the model patched on colors, too)
    theta0_val = modes["single"].frontier.set_index("alpha").loc[0.0, "supported_val"]
    for pm in result.patched:
        if not pm.selection.eligible:          # "none eligible" is reported, never a model over the budget
            assert table.loc[table["mode"].str.startswith(pm.mode), "eligible"].eq(False).all()
            continue
        chosen = pm.frontier.set_index("alpha").loc[pm.selection.alpha, "supported_val"]
        assert 100 * (theta0_val - chosen) <= 2.0 + 1e-9, pm.label
    # the sequential row's zero-shot is θ0 (from the specialised frontiers' α = 0), not the step-1 model
    single = {pm.patch: pm.frontier.set_index("alpha").loc[0.0] for pm in result.patched if pm.mode == "single"}
    seq_row = modes["sequential"].summary(cfg.supported)
    assert seq_row["patch_zero_shot"] == pytest.approx((single["colors"]["colors_test"]
                                                        + single["counting"]["counting_test"]) / 2)
    assert seq_row["supported_zero_shot"] == pytest.approx(single["colors"]["supported_test"])
    # joint: equal task shares per batch and the specialised models' steps added up
    joint = result.trials[result.trials["mode"] == "joint"].iloc[0]
    assert joint.recipe["steps"] == 2 * cfg.recipes()[0].steps and joint.recipe["mix"] == "balanced"

    # sequential: step 2 was fine-tuned from θ0 → θ1(colors) at the α chosen for colors
    first = next(pm for pm in result.patched if pm.mode == "single" and pm.patch == "colors")
    theta0 = {k: v for k, v in result.models[TINY].model.visual.state_dict().items() if v.is_floating_point()}
    theta1 = load_tensors(fetch(first.weights.theta1, None))
    a = first.selection.alpha
    expected = {k: (1 - a) * theta0[k] + a * theta1[k] for k in theta1}
    seq = modes["sequential"]
    assert seq.weights.start is not None
    start = load_tensors(fetch(seq.weights.start, None))
    assert all(torch.allclose(start[k], expected[k], atol=1e-6) for k in expected)
    trial = result.trials[result.trials.weights == seq.weights.key].iloc[0]
    from pathlib import Path
    start_name = json.loads(Path(trial.path, "params.json").read_text())["job"]["start"]
    assert start_name == seq.weights.start                 # the trial was handed the start point by name
    saved = load_tensors(fetch(start_name, None))
    assert all(torch.allclose(saved[k], expected[k], atol=1e-6) for k in expected)


@pytest.mark.slow
def test_per_task_coefficients_search_and_given_coefficients_log_to_mlflow(tiny, tmp_path, study_config):
    """In process (the local backend): the coefficient search is the pipeline's, whichever backend runs it."""
    from paint_ray.backends.local import LocalBackend
    from paint_ray.multitask import MultitaskConfig, run_multitask
    cfg = study_config(tmp_path, name="mt-per-task", patch_tasks=["colors", "counting"], mlflow=True)
    result, table = run_multitask(MultitaskConfig(cfg, modes=["parallel"], combiner="task_arithmetic",
                                                  per_task=True), LocalBackend("cpu"))
    merged = next(pm for pm in result.patched if pm.mode == "parallel")
    assert len(merged.coefficient_table) == 4                 # (0.5, 1.0) for each of the two tasks
    assert set(merged.frontier["alpha"]) == {0.0, 1.0}        # zero-shot next to the chosen merge
    scored = merged.coefficient_table
    eligible = scored[scored.eligible]
    assert merged.trial == scored.loc[eligible.score.idxmax(), "trial"]   # the best score, the first on ties
    assert len(result.run_ids) == len(result.patched)         # every patched model reached MLflow
    from mlflow import MlflowClient

    from paint_ray.reporting.tracking import tracking_uri
    client = MlflowClient(tracking_uri(cfg.out, None))
    artifacts = {a.path for a in client.list_artifacts(result.run_ids[f"{TINY}/colors+counting/parallel"])}
    assert "coefficients.json" in artifacts
    assert table["mode"].tolist() == ["specialised", "parallel (task_arithmetic)"]

    given, given_table = run_multitask(MultitaskConfig(cfg, modes=["parallel"], combiner="task_arithmetic",
                                                       per_task=True, coefficients=[0.5, -1.0]), LocalBackend("cpu"))
    only = next(pm for pm in given.patched if pm.mode == "parallel")
    assert len(only.coefficient_table) == 1 and only.config["coefficients"] == "0.5,-1"   # negation allowed
    assert given_table["coefficients"].tolist()[1:] == ["0.5,-1"]


@pytest.mark.parametrize("args,needle", [
    (["--mode", "jointly"], "unknown mode 'jointly'"),
    (["--combiner", "tie"], "unknown combiner 'tie'"),
    (["--combiner", "tsvm"], "unknown combiner 'tsvm' (did you mean 'tsv'?); valid: average, dare_linear, "
                             "dare_ties, iso_c, iso_cts, task_arithmetic, ties, tsv"),
    (["--combiner", "iso_cts", "--common-fraction", "1.5"], "--common-fraction 1.5 must be in [0, 1]"),
    (["--patch", "digits"], "need at least 2 patch tasks"),
    (["--per-task", "--coefficients", "0.5"], "--coefficients has 1 values for 2 patch tasks"),
    (["--coefficients", "0.5,0.5"], "--coefficients needs --per-task"),
    (["--per-task", "--patch", "digits,counting,colors,shapes", "--alphas", "0:1:0.1"],
     "would search 10000 coefficient combinations"),
])
def test_multitask_bad_input_is_one_line(tmp_path, args, needle, capsys):
    import ray
    was_up = ray.is_initialized()
    code, _, err = run_main(load_script("multitask").main, [*args, "--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert needle in one_line_error(code, err)
    assert ray.is_initialized() == was_up and not (tmp_path / "o").exists()     # refused before anything started


@pytest.mark.slow
@pytest.mark.parametrize("combiner,extra", [("tsv", {}), ("iso_cts", {"common_fraction": 0.5}),
                                            ("dare_ties", {"seed": 0})])
def test_parallel_mode_merges_the_specialised_task_vectors_with_the_combiner(tmp_path, combiner, extra, study_config):
    # in process (no Ray): the merged weight set the parallel mode swept is θ0 + merge(θᵢ − θ0) of the
    # specialised models it chose, by the named combiner and its options
    from paint_ray.backends.local import LocalBackend
    from paint_ray.models.checkpoints import load_tensors
    from paint_ray.multitask import MultitaskConfig, run_multitask
    from paint_ray.storage import fetch
    from paint_ray.weights.merging import merge_task_vectors
    cfg = study_config(tmp_path, name="mt-combiner", patch_tasks=["colors", "counting"])
    result, table = run_multitask(MultitaskConfig(cfg, modes=["parallel"], combiner=combiner,
                                                  common_fraction=extra.get("common_fraction", 0.8)),
                                  LocalBackend("cpu"))
    assert table["mode"].tolist() == ["specialised", f"parallel ({combiner})"]
    merged = next(pm for pm in result.patched if pm.mode == "parallel")
    assert merged.config["combiner"] == combiner and all(merged.config[k] == v for k, v in extra.items())
    theta0 = {k: v for k, v in result.models[TINY].model.visual.state_dict().items() if v.is_floating_point()}
    specialised = [next(pm for pm in result.patched if pm.patch == t) for t in ("colors", "counting")]
    thetas = [load_tensors(fetch(pm.weights.theta1, None)) for pm in specialised]
    names = sorted(thetas[0])
    taus = [[th[n] - theta0[n] for n in names] for th in thetas]
    want = merge_task_vectors(taus, combiner, None, 0.2, **extra)
    got = load_tensors(fetch(merged.weights.theta1, None))
    for n, v in zip(names, want):
        torch.testing.assert_close(got[n], theta0[n] + v)
