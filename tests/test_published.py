"""Published figures: the table as its sources write it, lookups, the >2-point flag, and the paper-preset report
(terminal table, scaling.parquet, the MLflow run and its frontier plot) with a random-weight ViT-B-32."""
from __future__ import annotations

import json
from collections import Counter

import open_clip
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

import paper_fixtures as pf
from conftest import hub_snapshot
from paint_ray.reporting import published
from paint_ray.reporting.published import FINE_TUNED, JOINT, PATCHED, ZERO_SHOT, Comparison
from paint_ray.reporting.published_report import summary_columns



def test_every_source_row_is_there_in_its_own_units():
    # as many numbers per source as it publishes for these models and tasks (the page's 12-point α grid)
    assert Counter(f.source.key for f in published.FIGURES) == {"open_clip": 56, "fusionbench": 120,
                                                                "task_vectors": 32, "paint_page": 24}
    zs = published.best("ViT-B-32:openai", "mnist", ZERO_SHOT)
    assert (zs.source.key, zs.text, zs.percent_text) == ("open_clip", "0.4839", "48.39")
    ft = published.best("ViT-L-14:openai", "eurosat", FINE_TUNED)
    assert (ft.source.key, ft.text, ft.percent, ft.row) == ("fusionbench", "99.11", 99.11,
                                                            "ViT-L/14 fine-tuned (20-task table, l.229)")
    merging = published.find("ViT-B-32:openai", "mnist", ZERO_SHOT)[2]
    assert (merging.text, merging.percent_text) == ("48.2", "48.2")
    joint = published.find("ViT-B-32:openai", "svhn", JOINT)
    assert [f.row for f in joint] == ["ViT-B-32 multitask, 2k steps", "ViT-B-32 multitask, 8k steps"]
    assert published.best("ViT-B-32:openai", "kitti_distance", FINE_TUNED) is None      # nobody published it
    assert published.best("ViT-L-14-336:openai", "imagenet", ZERO_SHOT).text == "0.7656"
    curve = published.best("ViT-B-32:openai", "mnist", PATCHED, alpha=0.25, patch="mnist")
    assert (curve.text, curve.percent_text, curve.source.key) == ("0.953", "95.3", "paint_page")
    assert published.best("ViT-B-32:openai", "mnist", PATCHED, alpha=0.35, patch="mnist") is None
    assert all(f.source.url.startswith("https://") and f.source.protocol for f in published.FIGURES)


def test_only_the_models_a_source_covers_are_compared():
    assert published.model_key("ViT-B-32-quickgelu:openai") == "ViT-B-32:openai"
    for spec in ("toy-m", "ViT-B-32:laion2b_s34b_b79k", "ViT-B-32:/weights.safetensors", "hf-hub:org/repo"):
        assert published.model_key(spec) is None and published.find(spec, "mnist", ZERO_SHOT) == []


def test_more_than_two_points_apart_is_flagged():
    fig = published.best("ViT-B-32:openai", "cifar10", ZERO_SHOT)                   # 0.8983
    assert not Comparison("cifar10", ZERO_SHOT, 0.0, 0.8783, fig).flagged           # 2.00 points: not above
    assert Comparison("cifar10", ZERO_SHOT, 0.0, 0.8782, fig).flagged
    assert Comparison("cifar10", ZERO_SHOT, 0.0, 0.93, fig).diff_points == pytest.approx(3.17)


def test_an_embedded_report_gets_no_published_columns():
    from paint_ray.results.study import PatchedModel
    from paint_ray.results.selection import Selection
    frontier = pd.DataFrame({"alpha": [0.0, 1.0], "digits_test": [0.5, 0.9], "shapes_test": [0.9, 0.8]})
    pm = PatchedModel("toy-m", "embedded", "digits", None, {}, frontier, Selection(1.0, "mean", None, 0.9, 0.8), {})
    assert summary_columns(pm, ["shapes"]) == {}


def _scaling_presets():
    from conftest import load_script
    return load_script("scaling").PRESETS


@pytest.mark.slow
def test_paper_preset_report_shows_published_figures_and_flags_them(tmp_path, offline_hub, capsys):
    """The paper preset end to end on miniature MNIST/SVHN with a random-weight ViT-B-32 served as
    ViT-B-32:openai: the numbers are meaningless (chance level), the columns are real."""
    from mlflow import MlflowClient

    from paint_ray.cli.study import main_for
    repo = open_clip.get_pretrained_cfg("ViT-B-32", "openai")["hf_hub"].rstrip("/")
    torch.manual_seed(0)
    state = {k: v.half() for k, v in open_clip.create_model("ViT-B-32").state_dict().items()}
    save_file(state, str(hub_snapshot(offline_hub, repo) / "open_clip_model.safetensors"))
    data = tmp_path / "data"
    pf.write_mnist(data, n_train=20, n_test=5)      # 5 test images: any accuracy of ours is ≥ 8 points from
    pf.write_svhn(data, n_train=10, n_test=5)       # the published 48.39% / 31.59%, so the flag must fire
    out = tmp_path / "out"
    code = main_for("scaling", _scaling_presets(), argv=[
        "--preset", "paper", "--models", "ViT-B-32:openai", "--patch", "mnist", "--supported", "svhn",
        "--data-root", str(data), "--out", str(out), "--local", "--quiet", "--alphas", "0,1",
        "--steps", "1", "--batch-size", "4", "--warmup-steps", "0"])
    printed = capsys.readouterr().out
    assert code == 0, printed

    # the terminal table: published columns, the source, the flag
    assert "zs pub" in printed and "48.39% ⚑" in printed and "31.59% ⚑" in printed
    assert "open_clip results: ViT-B-32 (openai), zero-shot" in printed and "more than 2 points apart" in printed
    # scaling.parquet: value (a fraction like ours), source and kind, flag
    row = pd.read_parquet(out / "scaling.parquet").iloc[0]
    assert row["patch_zero_shot_published"] == pytest.approx(0.4839)
    assert row["patch_fine_tuned_published"] == pytest.approx(0.9958)              # FusionBench 99.58
    assert "FusionBench" in row["patch_fine_tuned_published_source"]
    assert row["supported_zero_shot_published"] == pytest.approx(0.3159)
    assert row["patch_zero_shot_published_flag"] == (abs(100 * row["patch_zero_shot"] - 48.39) > 2)
    assert row["patch_zero_shot_published_flag"]                                   # chance level vs 48.39%
    # the MLflow run: tags, the table of every comparison, the plot drawn on the test split
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("scaling").experiment_id],
                               filter_string="tags.`paint_ray.study` = 'scaling'")
    tags = run.data.tags
    assert tags["paint_ray.published.patch_zero_shot"].startswith("48.39% zero-shot, open_clip results")
    assert "patch_zero_shot" in tags["paint_ray.published_flags"]
    assert "Published (test accuracy" in tags["mlflow.note.content"]
    folder = tmp_path / "artifacts"
    folder.mkdir()
    for name in ("published.json", "frontier.png"):
        client.download_artifacts(run.info.run_id, name, str(folder))
    table = json.loads((folder / "published.json").read_text())
    frame = pd.DataFrame(table["data"], columns=table["columns"])
    assert {"open_clip results", "FusionBench clip_vit.md", "PAINT project page"} <= set(frame["source"])
    page = frame[frame["source"] == "PAINT project page"]
    assert sorted(page["alpha"]) == [0.0, 1.0] and set(page["published_text"]) == {"0.4838", "0.996"}
    assert frame["flag"].any() and (folder / "frontier.png").stat().st_size > 10_000


def test_the_published_paint_curve_is_drawn_for_the_same_experiment(tmp_path):
    from paint_ray.results.study import PatchedModel
    from paint_ray.reporting.plots import frontier_plot
    from paint_ray.reporting.published_report import comparisons, plot_marks
    from paint_ray.results.selection import Selection, frontier_table
    rows = pd.DataFrame([{"alpha": a, "eval_task": t, "split": s, "accuracy": acc}
                         for a, mnist, cifar in ((0.0, 0.50, 0.90), (0.5, 0.97, 0.84), (1.0, 0.99, 0.40))
                         for t, acc in (("mnist", mnist), ("cifar10", cifar)) for s in ("val", "test")])
    frontier = frontier_table(rows, ["mnist"], ["cifar10"])
    pm = PatchedModel("ViT-B-32:openai", "openai", "mnist", None, {}, frontier,
                      Selection(0.5, "mean", None, 0.97, 0.84), {})
    comps = comparisons(pm, ["cifar10"])
    at_half = {(c.task, c.figure.text) for c in comps if c.kind == PATCHED and c.alpha == 0.5}
    assert at_half == {("mnist", "0.9936"), ("cifar10", "0.836")}              # the page's α = 0.5 point
    marks = plot_marks(pm, ["cifar10"], comps)
    assert [m["kind"] for m in marks] == ["vline", "vline", "hline", "curve"] and len(marks[-1]["points"]) == 12
    assert marks[-1]["points"][0] == pytest.approx((48.38, 89.84))
    png = frontier_plot(frontier, 0.5, "test", tmp_path / "f.png", split="test", published=marks)
    assert png.stat().st_size > 10_000


def test_cifar100_prompts_as_the_reference_code_writes_them(tmp_path):
    # The reference prompts CIFAR-100 with torchvision's class names (the meta file's fine_label_names),
    # which write 9 of CLIP's two-word names with an underscore; the published numbers were measured so.
    from paint_ray.tasks import get_task
    from paint_ray.tasks.paper import names
    underscored = {"aquarium_fish", "lawn_mower", "maple_tree", "oak_tree", "palm_tree", "pickup_truck",
                   "pine_tree", "sweet_pepper", "willow_tree"}
    assert {n for n in names.CIFAR100 if "_" in n} == underscored and not any(" " in n for n in names.CIFAR100)
    assert [n.replace("_", " ") for n in names.CIFAR100] == list(names.CIFAR100_CLIP)      # same order, 100
    root = tmp_path / "data"
    (root / "cifar-100-python").mkdir(parents=True)
    for f in ("train", "test", "meta"):
        (root / "cifar-100-python" / f).write_bytes(b"")          # the layout check only; nothing is decoded
    task = get_task("cifar100", root)
    assert task.classnames[1] == "aquarium_fish" and len(task.classnames) == 100
    assert task.prompts("aquarium_fish")[0] == "a photo of a aquarium_fish."
