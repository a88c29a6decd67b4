"""The case-study scripts end to end on the tiny model: each runs its study and its own report.

In process (--local): a report reads the study's result, whichever backend produced it (test_ray.py and
test_ray_identity.py run studies on Ray)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import TINY, load_script

pytestmark = pytest.mark.slow
QUICK = ["--models", TINY, "--steps", "3", "--warmup-steps", "1", "--alphas", "0,1", "--no-mlflow", "--quiet",
         "--local"]


def _run(study: str, out: Path, capsys, *extra: str) -> str:
    script = load_script(study)
    from paint_ray.cli.study import main_for
    assert main_for(study, script.PRESETS, script.__doc__, [*QUICK, *extra, "--out", str(out)], script.report) == 0
    return capsys.readouterr().out


def test_counting_reports_unseen_and_seen_counts(tiny, tmp_path, capsys):
    text = _run("counting", tmp_path, capsys)
    # two fine-tuning seeds by default, each reported
    assert f"{TINY} seed 0: unseen counts 4-6 " in text and f"{TINY} seed 1: unseen counts 4-6 " in text
    assert "seen counts 1-3" in text
    summary = pd.read_parquet(tmp_path / "counting_summary.parquet")
    assert list(summary.model) == [TINY, TINY] and sorted(summary.seed) == [0, 1]
    assert summary[["patch_zero_shot", "counting_seen_zero_shot", "supported_patched"]].notna().all().all()


def test_typographic_reports_attacked_and_clean_images(tiny, tmp_path, capsys):
    text = _run("typographic", tmp_path, capsys)
    assert f"{TINY}: attacked shapes " in text and "clean shapes" in text
    summary = pd.read_parquet(tmp_path / "typographic_summary.parquet")
    assert summary[["patch_zero_shot", "patch_patched", "shapes_zero_shot", "shapes_patched"]].notna().all().all()
    rows = pd.read_parquet(tmp_path / "results")
    assert {"shapes_attacked_mixed", "shapes", "colors", "digits"} <= set(rows.eval_task)


def test_transfer_matrix_has_every_patch_task_against_every_task(tiny, tmp_path, capsys):
    text = _run("transfer", tmp_path, capsys, "--patch", "digits_0to4,digits_5to9")
    assert "largest off-diagonal transfer (patched): patching" in text
    assert "largest off-diagonal transfer (fine-tuned): patching" in text
    matrix = pd.read_parquet(tmp_path / "transfer_matrix.parquet")
    assert set(matrix["patch"]) == {"digits_0to4", "digits_5to9"} and set(matrix["model"]) == {"patched", "fine_tuned"}
    assert {"digits_0to4", "digits_5to9", "typed_digits", "counting_seen", "shapes"} <= set(matrix.columns)
    own = matrix.set_index(["model", "patch"]).loc[("patched", "digits_0to4"), "digits_0to4"]
    assert pd.notna(own)
    assert (tmp_path / "transfer.png").stat().st_size > 0
