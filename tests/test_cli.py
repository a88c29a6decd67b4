"""`paint-ray patch` as a user runs it: output, Parquet rows, resume, and one-line errors.

In process, through `paint_ray.cli.main` (what the console script calls); test_bad_input.py runs the one
real `python -m paint_ray` process."""
import json

import pandas as pd
import pytest

from conftest import TINY, one_line_error, run_main

FAST = ["--model", TINY, "--steps", "15", "--batch-size", "64", "--warmup-steps", "2", "--lr", "1e-3", "--quiet"]


def patch(argv, capsys) -> tuple[int, str, str]:
    from paint_ray.cli import main
    return run_main(main, ["patch", *argv], capsys)


def refused(argv, capsys) -> str:
    """The one error line of a `paint-ray patch` that must be refused."""
    code, _, err = patch(argv, capsys)
    return one_line_error(code, err)


@pytest.mark.slow
def test_patch_prints_frontier_writes_parquet_and_resumes(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    code, printed, err = patch([*FAST, "--alphas", "0:1:0.25", "--out", str(out)], capsys)
    assert code == 0, err
    assert "<- chosen" in printed and "digits val" in printed
    rows = pd.read_parquet(out / "results")
    # 5 alphas x 3 tasks x 2 splits
    assert len(rows) == 30 and set(rows["eval_task"]) == {"digits", "shapes", "colors"}
    assert rows["accuracy"].between(0, 1).all() and (rows["n"] > 0).all()
    parts = sorted(p.name for p in (out / "results").glob("part-*.parquet"))

    code, printed, err = patch([*FAST, "--alphas", "0:1:0.25", "--out", str(out), "--json"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in (out / "results").glob("part-*.parquet")) == parts  # nothing recomputed
    summary = json.loads(printed)                     # --json prints one JSON object and nothing else
    assert summary["alpha"] in {0.0, 0.25, 0.5, 0.75, 1.0}
    assert set(summary["tasks"]) == {"digits", "shapes", "colors"}
    patched = rows[(rows.alpha == summary["alpha"]) & (rows.split == "test") & (rows.eval_task == "digits")]
    assert summary["tasks"]["digits"]["patched"] == pytest.approx(patched["accuracy"].iloc[0])
    assert "max mean" in summary["rule"]

    code, printed, err = patch([*FAST, "--alphas", "0:1:0.125", "--out", str(out), "--max-drop", "0", "--json"],
                               capsys)
    assert code == 0, err
    assert len(pd.read_parquet(out / "results")) == 9 * 6  # only the 4 new alphas were added
    chosen = json.loads(printed)
    assert chosen["tasks"]["shapes"]["zero_shot"] is not None and "drop <= 0" in chosen["rule"]


BAD = [
    (["--model", "toy-q"], ["'toy-q'", "toy-m"]),
    (["--model", "NoSuchArch:openai"], ["NoSuchArch", "ViT-B-32"]),
    (["--patch", "digitz"], ["'digitz'", "did you mean 'digits'"]),
    (["--supported", "shapes,colours"], ["'colours'", "colors"]),
    (["--alphas", "0:1.5:0.5"], ["1.5", "[0, 1]"]),
    (["--alphas=-0.1,0.5"], ["-0.1", "[0, 1]"]),
    (["--alphas"], ["expected one argument"]),
    (["--alphas", "1:0:0.1"], ["empty"]),
    (["--alphas", "abc"], ["'abc'"]),
    (["--supported", "digits,shapes"], ["'digits'", "supported"]),
]


@pytest.mark.parametrize("args,needles", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_line_error(tmp_path, args, needles, capsys):
    line = refused(["--model", TINY, *args, "--out", str(tmp_path / "o")], capsys)
    for needle in needles:
        assert needle in line
    assert not (tmp_path / "o" / "results").exists()


def test_unwritable_output_path_fails_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    line = refused(["--model", TINY, "--out", str(blocker / "out")], capsys)
    assert "not writable" in line and str(blocker) in line


def test_corrupt_checkpoint_from_cli(tiny, tmp_path, capsys):
    from paint_ray.models.checkpoints import WEIGHTS_NAME, save_model_dir
    folder = save_model_dir(tiny.model, tiny.model_cfg, tmp_path / "m")
    (folder / WEIGHTS_NAME).write_bytes((folder / WEIGHTS_NAME).read_bytes()[:1000])
    line = refused(["--model", f"local-dir:{folder}", "--out", str(tmp_path / "o")], capsys)
    assert "corrupt or truncated" in line
