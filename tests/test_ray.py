"""The Ray layer on a real local Ray: Tune trials, evaluator actors, resume, reuse from a new session."""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import yaml

from conftest import RECIPE, TINY, load_script, one_line_error, raw_rows, run_main, run_process

ROOT = Path(__file__).resolve().parents[1]
LR_GRID = {**RECIPE, "lr": [3e-3, 1e-3]}


def test_study_runs_then_rerun_resumes_and_live_reuse_loads_nothing(ray_local, tmp_path, study_config, home):
    from paint_ray import live
    from paint_ray.results.store import KEY
    from paint_ray.pipeline import run_study
    import tempfile
    out = tmp_path / "study"
    staging = set(Path(tempfile.gettempdir()).glob("paint_ray_ckpt_*"))
    result = run_study(study_config(out, search_space=LR_GRID))
    assert len(result.trials) == 2                    # two Tune trials: the lr grid
    # each checkpoint's staging folder is gone once Tune has copied it into the run's storage
    assert set(Path(tempfile.gettempdir()).glob("paint_ray_ckpt_*")) <= staging
    rows = raw_rows(out)
    assert len(rows) == 2 * 3 * 2 * 2                 # trials x alphas x tasks x splits
    table = result.table()
    assert len(table) == 1 and table["alpha"].iloc[0] in (0.0, 0.5, 1.0)
    assert 0.0 < table["cka"].iloc[0] <= 1.0 and table["weight_distance"].iloc[0] > 0
    assert result.patched[0].config["lr"] in (3e-3, 1e-3)

    parts = sorted((out / "results").glob("part-*.parquet"))
    again = run_study(study_config(out, search_space=LR_GRID))
    assert sorted((out / "results").glob("part-*.parquet")) == parts   # nothing re-evaluated
    assert again.table()["alpha"].iloc[0] == table["alpha"].iloc[0]

    from paint_ray.pipeline import study_id
    study = study_id(study_config(out, search_space=LR_GRID))
    assert live.connect(study) == study
    before = live.evaluators()                        # name -> evaluation.inventory.Inventory
    tiny = result.models[TINY].digest                 # models are held by weight digest; the spec is a label
    loads = {n: inv.loads for n, inv in before.items()}
    assert loads and all(inv.holds_model(tiny) and inv.models[tiny].ref.spec == TINY for inv in before.values())
    # name this study's θ1s and tasks (the evaluators could hold more)
    mine = list(result.trials["weights"])
    assert all(any(inv.holds_weights(tiny, key) for inv in before.values()) for key in mine)
    new = live.sweep(TINY, alphas=[0.25, 0.75], weights=mine, tasks=["colors", "shapes"], progress=False)
    assert len(new) == 2 * 2 * 2 * 2                  # θ1s x alphas x tasks x splits
    assert {n: inv.loads for n, inv in live.evaluators().items()} == loads   # loaded nothing
    store = home / "live" / study / "results"        # the default store: the study's own, under PAINT_RAY_HOME
    parts = sorted(store.glob("part-*.parquet"))
    assert parts
    again = live.sweep(TINY, alphas=[0.25, 0.75], weights=mine, tasks=["colors", "shapes"], progress=False)
    assert sorted(store.glob("part-*.parquet")) == parts and len(again) == len(new)   # repeated: nothing evaluated

    def typed(inv) -> list:           # typed_digits shards this evaluator holds for the tiny model
        return [s for s in inv.shards if s.task == "typed_digits" and s.model == tiny]
    more = live.sweep(TINY, alphas=[0.5], tasks=["typed_digits"], weights=mine, progress=False)
    assert set(more["eval_task"]) == {"typed_digits"}
    after = live.evaluators()
    # what was sent: the head to each evaluator lacking it, each split's rows once (placed, not copied to
    # every evaluator), and θ1s (by name) only where that data now is; nothing else
    heads = sum("typed_digits" not in inv.heads(tiny) for inv in before.values())
    shards = sum(len(typed(after[n])) - len(typed(before[n])) for n in after)
    weights = sum(len(after[n].weights(tiny)) - len(before[n].weights(tiny)) for n in after)
    assert heads > 0 and shards > 0
    assert sum(inv.loads for inv in after.values()) == sum(loads.values()) + heads + shards + weights
    for split, n in (("val", 500), ("test", 1000)):
        rows = sorted((s.start, s.stop) for inv in after.values() for s in typed(inv) if s.split == split)
        assert rows[0][0] == 0 and rows[-1][1] == n and all(a[1] == b[0] for a, b in zip(rows, rows[1:]))
    assert all("typed_digits" in inv.heads(tiny) for inv in after.values())
    for inv in after.values():        # every θ1 held is held with the names it travels under
        assert all(w.theta1_name.startswith("finetuned/") for w in inv.weights(tiny).values())
    assert not new.duplicated(KEY).any()


@pytest.mark.slow
def test_killed_driver_rerun_loses_and_duplicates_nothing(ray_local, tmp_path):
    """The study's driver (a real process, joining the session's cluster) exits right after writing its
    second results part (PAINT_RAY_FAULT=driver-exit-after-parts:2, as a kill would leave it: no cleanup);
    the same command then finishes the study with every cell present once."""
    from paint_ray.results.store import KEY
    out = tmp_path / "killed"
    env = {"RAY_ADDRESS": ray_local, "PAINT_RAY_FAULT": "driver-exit-after-parts:2",
           "PAINT_RAY_FAULT_DIR": str(tmp_path / "faults")}
    cmd = [sys.executable, str(ROOT / "experiments" / "scaling.py"), "--models", TINY, "--patch", "colors",
           "--supported", "shapes,counting", "--steps", "6", "--warmup-steps", "1", "--batch-size", "32",
           "--lr", "3e-3", "--alphas", "0:1:0.25", "--seeds", "0", "--evaluators", "1", "--no-mlflow",
           "--out", str(out), "--quiet"]
    killed = run_process(cmd, env)
    assert killed.returncode == 3, killed.stderr[-2000:]          # the fault point's exit, not a failure
    partial = raw_rows(out)
    expected = 5 * 3 * 2                                          # alphas x tasks x splits, one trial
    assert len(list((out / "results").glob("part-*.parquet"))) == 2 and 0 < len(partial) < expected
    assert not (out / "scaling.parquet").exists()                 # it never got to its report
    done = run_process(cmd, env)                                  # armed still, but it fires once
    assert done.returncode == 0, done.stderr[-2000:]
    rows = raw_rows(out)
    assert len(rows) == expected and not rows.duplicated(KEY).any()
    assert len(partial.merge(rows, on=KEY + ["created"])) == len(partial)    # its rows kept as written
    assert (out / "scaling.parquet").is_file()


def test_cluster_yaml_passes_rays_own_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    validate_config(prepare_config(copy.deepcopy(config)))
    workers = [t for name, t in config["available_node_types"].items() if name != config["head_node_type"]]
    assert any(t["resources"].get("GPU", 0) >= 1 and t["max_workers"] > t.get("min_workers", 0) for t in workers)
    assert any("mlflow server" in c and "127.0.0.1" in c for c in config["head_setup_commands"])
    assert any("pip install" in c and "paint_ray" in c for c in config["setup_commands"])


def _scaling(argv, capsys) -> str:
    """experiments/scaling.py ARGV in this process; its one error line."""
    from paint_ray.cli.study import main_for
    script = load_script("scaling")
    code, _, err = run_main(lambda a: main_for("scaling", script.PRESETS, script.__doc__, a), argv, capsys)
    return one_line_error(code, err)


@pytest.mark.parametrize("args,needle", [
    (["--preset", "huge"], "unknown preset 'huge'"),
    (["--preset", "paper"], "give --data-root DIR"),
    (["--preset", "paper", "--data-root", "/nonexistent/data"], "/nonexistent/data"),
])
def test_study_bad_input_is_one_line(tmp_path, args, needle, capsys):
    assert needle in _scaling([*args, "--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert not (tmp_path / "o").exists()


def test_gpus_the_cluster_lacks_are_one_line_before_any_model_loads(ray_local, tmp_path, capsys):
    line = _scaling(["--models", TINY, "--gpus-per-trial", "1", "--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert "use --gpus-per-trial 0" in line and not (tmp_path / "o" / "tune").exists()


def test_unreachable_cluster_is_one_line_from_a_real_study_process(tmp_path):
    """The suite's one real experiments/*.py process refused on bad input: exit 2, one line, no traceback,
    in a process that has no Ray of its own yet (in this one the session's Ray may be up)."""
    result = run_process([sys.executable, str(ROOT / "experiments" / "scaling.py"), "--models", TINY,
                          "--out", str(tmp_path / "o"), "--quiet"], {"RAY_ADDRESS": "127.0.0.1:9"}, 300)
    assert result.returncode == 2 and result.stdout == "", result.stderr[-1500:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach a Ray cluster at '127.0.0.1:9'" in lines[0], result.stderr[-1500:]
    assert not (tmp_path / "o" / "tune").exists()


def test_a_data_root_missing_on_a_node_is_one_line_before_fine_tuning(ray_local, tmp_path, monkeypatch, capsys):
    """The driver finds --data-root ~/… (its HOME holds the data); the node's workers, started under the
    node's own HOME, do not: as on a node that never pulled the data. One line naming the node and the
    folder it lacks, before anything is fine-tuned."""
    import paper_fixtures as pf
    driver_home = tmp_path / "driver_home"
    name = f"paint-ray-test-data-{tmp_path.name}"              # absent from the node's HOME
    pf.write_mnist(driver_home / name)
    monkeypatch.setenv("HOME", str(driver_home))
    line = _scaling(["--models", TINY, "--patch", "mnist", "--supported", "shapes", "--data-root", f"~/{name}",
                     "--steps", "2", "--warmup-steps", "1", "--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert ": node " in line and name in line and "give every node the same data" in line, line
    assert not list((tmp_path / "o").rglob("*.safetensors"))
