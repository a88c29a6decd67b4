"""Every user mistake on the command lines is one line naming the bad value and what is valid, exit 2, no
traceback, and it comes before anything expensive: no pretraining, no fine-tuning, no Ray start-up, no
results written. Run in-process through the same entry points a user's command reaches (`paint_ray.cli.main`,
the study scripts' `main_for`), plus one subprocess per command line to show the process itself is clean."""
from __future__ import annotations

import pytest

from conftest import TINY, load_script, one_line_error, run_cli, run_main

PATCH = [
    (["--batch-size", "0"], "--batch-size 0"),
    (["--batch-size", "-1"], "--batch-size -1"),
    (["--steps", "0"], "--steps 0"),
    (["--steps", "-5"], "--steps -5"),
    (["--lr", "-1"], "--lr -1"),
    (["--lr", "nan"], "--lr nan"),
    (["--warmup-steps", "-3"], "--warmup-steps -3"),
    (["--weight-decay", "-1"], "--weight-decay -1"),
    (["--label-smoothing", "1.5"], "--label-smoothing 1.5"),
    (["--device", "foo"], "--device 'foo'"),
    (["--max-drop", "nan"], "--max-drop nan"),
    (["--supported", ""], "--supported names no task"),
    (["--alphas", "0:1:1e-9"], "1,000,000,001 values"),
    (["--steps", "10", "--warmup-steps", "20"], "--steps 10 is at or below the warm-up"),
    (["--model", "x" * 500], "unknown model spec"),
]


def refused(main, argv, capsys) -> str:
    code, _, err = run_main(main, argv, capsys)
    return one_line_error(code, err)


@pytest.mark.parametrize("args,needle", PATCH, ids=[" ".join(a)[:40] for a, _ in PATCH])
def test_patch_options(args, needle, tmp_path, capsys):
    from paint_ray.cli import main
    line = refused(main, ["patch", "--model", TINY, *args, "--out", str(tmp_path / "o")], capsys)
    assert needle in line and len(line) < 400 and "x" * 100 not in line    # a bad value is echoed cut short
    assert not (tmp_path / "o").exists()                 # refused before anything was written


STUDY = [
    (["--evaluators", "-1"], "--evaluators -1"),
    (["--evaluators", "0"], "--evaluators 0"),
    (["--cpus-per-trial", "-1"], "--cpus-per-trial -1"),
    (["--gpus-per-trial", "-1"], "--gpus-per-trial -1"),
    (["--models", f"{TINY},toy-q"], "'toy-q'"),
    (["--preset", "paper", "--data-root", "/nonexistent", "--steps", "3"], "/nonexistent"),
    (["--steps", "3"], "--steps 3 is at or below the warm-up of 20 steps"),
    (["--alphas", "0:1:0"], "step 0 must be a positive number"),
]


@pytest.mark.parametrize("args,needle", STUDY, ids=[" ".join(a)[:40] for a, _ in STUDY])
def test_study_options(args, needle, tmp_path, capsys):
    import ray
    from paint_ray.cli.study import main_for
    script = load_script("scaling")
    was_up = ray.is_initialized()
    argv = ([] if "--models" in args else ["--models", TINY]) + [*args, "--out", str(tmp_path / "o"), "--quiet"]
    line = refused(lambda a: main_for("scaling", script.PRESETS, script.__doc__, a), argv, capsys)
    assert needle in line
    assert ray.is_initialized() == was_up and not (tmp_path / "o" / "tune").exists()   # before Ray or Tune


def test_load_is_read_only_and_one_line(tmp_path, capsys):
    from paint_ray.cli import main
    missing = tmp_path / "nowhere" / "mlflow.db"
    assert "no MLflow database at" in refused(main, ["load", "abc", "--tracking-uri", f"sqlite:///{missing}"], capsys)
    assert not missing.parent.exists()                           # nothing created to find that out
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database" * 100)
    assert "is not an MLflow database" in refused(main, ["load", "abc", "--tracking-uri", f"sqlite:///{garbage}"],
                                                  capsys)
    assert "unknown scheme 'ftp'" in refused(main, ["load", "abc", "--tracking-uri", "ftp://example/x"], capsys)


def test_a_bad_option_is_one_clean_line_from_a_real_process(tmp_path):
    """The suite's one real `python -m paint_ray` process: exit 2 and exactly one line on stderr, nothing
    on stdout (no warning or banner printed on the way, which an in-process capture would not see)."""
    patch = run_cli("patch", "--model", TINY, "--lr", "nan", "--out", str(tmp_path / "p"))
    assert patch.returncode == 2 and patch.stderr.count("\n") == 1 and "--lr nan" in patch.stderr
    assert patch.stdout == "" and patch.stderr.startswith("paint-ray: error: ")
    assert not (tmp_path / "p").exists()
