"""Identity is content: a rerun into the same --out reuses what was computed from the same inputs and
recomputes what was computed from changed ones (data under the same root, a checkpoint overwritten in
place, another eval precision). Each rerun must give exactly the rows and frontier of a fresh --out.

Runs the pipeline's local backend (what `paint-ray patch` runs): the backends share every key.
"""
from __future__ import annotations

import struct

import numpy as np
import pandas as pd
import pytest
import torch

import paper_fixtures as pf
from conftest import TINY, make_study_config

RECIPE = {"lr": [3e-3], "steps": [4], "batch_size": [16], "warmup_steps": [1]}


def _study(out, model=TINY, patch="colors", supported=("shapes",), data_root=None):
    from paint_ray.backends.local import LocalBackend
    from paint_ray.pipeline import run_study
    cfg = make_study_config(out, name="identity", models=[model], patch_tasks=[patch], supported=list(supported),
                            search_space=RECIPE, data_root=data_root)
    return run_study(cfg, LocalBackend("cpu", data_root))


def _frontier(result) -> pd.DataFrame:
    cols = [c for c in result.patched[0].frontier.columns if c.endswith(("_val", "_test")) or c == "alpha"]
    return result.patched[0].frontier[cols].reset_index(drop=True)


def _current_rows(out, result) -> pd.DataFrame:
    """The rows a result's frontier was built from, as (alpha, task, split) -> accuracy."""
    from paint_ray.results.store import ResultStore
    rows = ResultStore(out / "results").read()
    ws = result.patched[0].weights
    rows = rows[(rows.weights == ws.key) & (rows.model_digest == ws.model.digest)]
    return rows.set_index(["alpha", "eval_task", "split", "precision"])["accuracy"].sort_index()


def _assert_same_as_fresh(rerun, out, fresh, fresh_out):
    pd.testing.assert_frame_equal(_frontier(rerun), _frontier(fresh))
    assert rerun.patched[0].selection == fresh.patched[0].selection
    # the rows behind the frontier are the fresh run's rows, key for key (older rows stay, unread)
    mine, theirs = _current_rows(out, rerun), _current_rows(fresh_out, fresh)
    theirs = theirs[theirs.index.get_level_values("precision").isin(mine.index.get_level_values("precision"))]
    pd.testing.assert_series_equal(mine.loc[theirs.index], theirs)


def _rewrite_mnist(root) -> None:
    """The same files under the same names, with other pixels and other labels."""
    raw = root / "MNIST" / "raw"
    for prefix in ("train", "t10k"):
        images = raw / f"{prefix}-images-idx3-ubyte"
        data = np.frombuffer(images.read_bytes()[16:], np.uint8).reshape(-1, 28, 28)
        images.write_bytes(struct.pack(">IIII", 2051, len(data), 28, 28) + (255 - data[:, ::-1]).tobytes())
        labels = raw / f"{prefix}-labels-idx1-ubyte"
        ys = labels.read_bytes()
        labels.write_bytes(ys[:8] + bytes((y + 3) % 10 for y in ys[8:]))


@pytest.mark.slow
def test_data_changed_under_the_same_root_is_recomputed(tiny, tmp_path):
    root, out = tmp_path / "data", tmp_path / "out"
    pf.write_mnist(root)
    before = _study(out, patch="mnist", supported=("colors",), data_root=str(root))
    theta1_before = before.patched[0].weights.theta1
    _rewrite_mnist(root)
    rerun = _study(out, patch="mnist", supported=("colors",), data_root=str(root))
    fresh = _study(tmp_path / "fresh", patch="mnist", supported=("colors",), data_root=str(root))
    _assert_same_as_fresh(rerun, out, fresh, tmp_path / "fresh")
    assert rerun.patched[0].weights.theta1 != theta1_before          # fine-tuned again, on the new data
    assert not _frontier(rerun)["mnist_test"].equals(_frontier(before)["mnist_test"])
    # colors did not change: its θ0 rows were reused, not recomputed (same key, one row each)
    from paint_ray.results.store import KEY, ResultStore
    rows = ResultStore(out / "results").read()
    assert not rows.duplicated(KEY).any()
    zero_colors = rows[(rows.alpha == 0.0) & (rows.eval_task == "colors") & (rows.weights == rerun.patched[0].weights.key)]
    assert len(zero_colors) == 2                                       # val and test, once


@pytest.mark.slow
def test_checkpoint_overwritten_in_place_is_a_new_model(tiny, tmp_path):
    from paint_ray.models.checkpoints import save_tensors
    path = tmp_path / "w.safetensors"
    save_tensors(tiny.model.state_dict(), path)
    spec = f"{TINY}:{path}"
    out = tmp_path / "out"
    before = _study(out, model=spec)
    torch.manual_seed(1)
    save_tensors({k: v + 0.02 * torch.randn_like(v) if v.is_floating_point() else v
                  for k, v in tiny.model.state_dict().items()}, path)
    rerun = _study(out, model=spec)
    fresh = _study(tmp_path / "fresh", model=spec)
    _assert_same_as_fresh(rerun, out, fresh, tmp_path / "fresh")
    assert rerun.patched[0].weights.model.digest != before.patched[0].weights.model.digest
    assert not _frontier(rerun).equals(_frontier(before))


@pytest.mark.slow
def test_precision_switch_is_recomputed_not_reused(tiny, tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setenv("PAINT_RAY_EVAL_PRECISION", "fp32")
    fp32 = _study(out)
    monkeypatch.setenv("PAINT_RAY_EVAL_PRECISION", "bf16")
    rerun = _study(out)
    fresh = _study(tmp_path / "fresh")
    _assert_same_as_fresh(rerun, out, fresh, tmp_path / "fresh")
    from paint_ray.results.store import ResultStore
    rows = ResultStore(out / "results").read()
    assert set(rows.precision) == {"fp32", "bf16"}
    assert (rows.precision == "bf16").sum() == (rows.precision == "fp32").sum() == 3 * 2 * 2
    # the fine-tuned θ1 does not depend on the eval precision: it was reused
    assert rerun.patched[0].weights.theta1 == fp32.patched[0].weights.theta1


@pytest.mark.slow
def test_same_inputs_reuse_everything(tiny, tmp_path):
    out = tmp_path / "out"
    first = _study(out)
    parts = sorted((out / "results").glob("part-*.parquet"))
    again = _study(out)
    assert sorted((out / "results").glob("part-*.parquet")) == parts
    pd.testing.assert_frame_equal(_frontier(again), _frontier(first))


@pytest.mark.parametrize("value", ["0:1:1e-9", "0:1:0"])
def test_alpha_grids_too_fine_or_stepless_are_refused(value):
    from paint_ray.config import MAX_ALPHAS, parse_alphas
    from paint_ray.errors import PaintRayError
    with pytest.raises(PaintRayError) as e:
        parse_alphas(value)
    assert "\n" not in str(e.value) and (f"{MAX_ALPHAS:,}" in str(e.value) or "positive" in str(e.value))
