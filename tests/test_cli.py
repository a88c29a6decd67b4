"""`paint-ray patch` as a user runs it: output, Parquet rows, resume, and one-line errors."""
import json

import pandas as pd
import pytest

from conftest import TINY, run_cli

FAST = ["--model", TINY, "--steps", "15", "--batch-size", "64", "--warmup-steps", "2", "--lr", "1e-3"]


def test_patch_prints_frontier_writes_parquet_and_resumes(tiny, tmp_path):
    out = tmp_path / "out"
    first = run_cli("patch", *FAST, "--alphas", "0:1:0.25", "--out", str(out))
    assert first.returncode == 0, first.stderr
    assert "<- chosen" in first.stdout and "digits val" in first.stdout
    rows = pd.read_parquet(out / "results")
    # 5 alphas x 3 tasks x 2 splits
    assert len(rows) == 30 and set(rows["eval_task"]) == {"digits", "shapes", "colors"}
    assert rows["accuracy"].between(0, 1).all() and (rows["n"] > 0).all()
    parts = sorted(p.name for p in (out / "results").glob("part-*.parquet"))

    again = run_cli("patch", *FAST, "--alphas", "0:1:0.25", "--out", str(out), "--json")
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in (out / "results").glob("part-*.parquet")) == parts  # nothing recomputed
    summary = json.loads(again.stdout)
    assert summary["alpha"] in {0.0, 0.25, 0.5, 0.75, 1.0}
    assert set(summary["tasks"]) == {"digits", "shapes", "colors"}
    patched = rows[(rows.alpha == summary["alpha"]) & (rows.split == "test") & (rows.eval_task == "digits")]
    assert summary["tasks"]["digits"]["patched"] == pytest.approx(patched["accuracy"].iloc[0])
    assert "max mean" in summary["rule"]

    wider = run_cli("patch", *FAST, "--alphas", "0:1:0.125", "--out", str(out), "--max-drop", "0", "--json")
    assert wider.returncode == 0, wider.stderr
    assert len(pd.read_parquet(out / "results")) == 9 * 6  # only the 4 new alphas were added
    chosen = json.loads(wider.stdout)
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
def test_bad_input_is_one_line_error(tmp_path, args, needles):
    result = run_cli("patch", "--model", TINY, *args, "--out", str(tmp_path / "o"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("paint-ray: error:"), result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_unwritable_output_path_fails_before_any_work(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = run_cli("patch", "--model", TINY, "--out", str(blocker / "out"))
    assert result.returncode == 2 and "not writable" in result.stderr and str(blocker) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_corrupt_checkpoint_from_cli(tiny, tmp_path):
    from paint_ray.models.checkpoints import WEIGHTS_NAME, save_model_dir
    folder = save_model_dir(tiny.model, tiny.model_cfg, tmp_path / "m")
    (folder / WEIGHTS_NAME).write_bytes((folder / WEIGHTS_NAME).read_bytes()[:1000])
    result = run_cli("patch", "--model", f"local-dir:{folder}", "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "corrupt or truncated" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
