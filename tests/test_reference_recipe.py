"""The paper preset's reference recipe: the on-device RandomResizedCrop, the full-view train cache, shuffled
epochs, per-task epochs, the precision option, and embedded θ1 keys left as they were."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, RandomResizedCrop
from torchvision.transforms import functional as F1
from torchvision.transforms.v2 import functional as F2

import paper_fixtures as pf
from paint_ray.training.augment import RATIO, SCALE, crop_params, random_resized_crops, resized_crop
from paint_ray.training.job import FinetuneJob
from paint_ray.models.registry import ModelRef
from paint_ray.errors import PaintRayError
from paint_ray.training.finetune import FinetuneConfig, Finetuner
from paint_ray.caches.heads import cached_head
from paint_ray.training.recipe import PAPER_EPOCHS, PAPER_SEARCH_SPACE, resolve, steps_for_epochs
from paint_ray.tasks import get_task
from paint_ray.caches.train import entry_dir, full_view, full_view_side, train_split



def photo(h: int = 300, w: int = 400, seed: int = 0) -> np.ndarray:
    """A photo-like uint8 image: smooth structure plus noise (sharp edges exercise bicubic overshoot)."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([127 + 100 * np.sin(xx / 13.0) * np.cos(yy / 7.0), xx * 255 / w, yy * 255 / h], -1)
    return (img + np.random.default_rng(seed).normal(0, 20, img.shape)).clip(0, 255).astype(np.uint8)


# ---------------------------------------------------------------- the crop box: torchvision's draws, call for call
@pytest.mark.parametrize("h, w", [(256, 341), (224, 224), (28, 28), (375, 1242), (1242, 375), (13, 10)])
def test_crop_params_are_torchvisions_draw_for_draw(h, w):
    img = torch.zeros(3, h, w, dtype=torch.uint8)
    for seed in range(40):
        torch.manual_seed(seed)
        expected = RandomResizedCrop.get_params(img, list(SCALE), list(RATIO))
        torch.manual_seed(seed)
        assert crop_params(h, w, torch.default_generator) == expected


def test_crop_params_follow_the_scale_and_ratio_bounds():
    gen = torch.Generator().manual_seed(0)
    h, w = 256, 341
    boxes = [crop_params(h, w, gen) for _ in range(3000)]
    areas = np.array([bh * bw / (h * w) for _, _, bh, bw in boxes])
    ratios = np.array([bw / bh for _, _, bh, bw in boxes])
    assert all(0 <= t and 0 <= left and t + bh <= h and left + bw <= w for t, left, bh, bw in boxes)
    # integer rounding of w and h moves area and ratio by at most about one pixel of each side
    assert areas.min() >= 0.9 - 2 / min(h, w) and areas.max() <= 1.0
    assert ratios.min() >= 0.75 * (1 - 2 / min(h, w)) and ratios.max() <= 4 / 3 * (1 + 2 / min(h, w))
    assert areas.min() < 0.91 and areas.max() > 0.99 and len({(t, left) for t, left, _, _ in boxes}) > 100
    # an image too wide for any try falls back to the centre crop clamped to ratio 4/3 (the reference on KITTI)
    assert crop_params(375, 1242, gen) == (0, (1242 - 500) // 2, 375, 500)


# ---------------------------------------------------------------- the resampling: torchvision's resized_crop
def test_device_crop_equals_torchvisions_resized_crop():
    """Same image, same box: torchvision's resized_crop on a float tensor (what it runs on GPUs) up to float
    rounding (our exact filter-tap matrices sum in another order: at most one grey level, in well under 0.1%
    of the pixels); within max 8 / mean 0.5 grey levels of its uint8 CPU path and of PIL (the reference's
    path), which use PIL's fixed-point bicubic. The batched path is the per-image one exactly."""
    img = photo()
    t = torch.from_numpy(img).permute(2, 0, 1).contiguous()
    gen = torch.Generator().manual_seed(1)
    boxes = [(10, 20, 280, 350), (0, 0, 300, 400), (5, 7, 150, 170)] + [crop_params(300, 400, gen) for _ in range(5)]
    for box in boxes:
        ours = resized_crop(t, box, 224)
        on_float = F2.resized_crop(t.float(), *box, size=[224, 224], interpolation=InterpolationMode.BICUBIC,
                                   antialias=True).round().clamp(0, 255)
        off = (ours - on_float).abs()
        assert off.max() <= 1 and (off > 0).float().mean() < 1e-3, (box, float(off.max()), int((off > 0).sum()))
        for other in (F2.resized_crop(t, *box, size=[224, 224], interpolation=InterpolationMode.BICUBIC,
                                      antialias=True).float(),
                      torch.from_numpy(np.array(F1.resized_crop(Image.fromarray(img), *box, [224, 224],
                                                                InterpolationMode.BICUBIC))).permute(2, 0, 1).float()):
            diff = (ours - other).abs()
            assert diff.max() <= 8 and diff.mean() < 0.5, (box, float(diff.max()), float(diff.mean()))
    # the batched path draws the same boxes from the same generator state and resamples the same way
    images = [t, t[:, :200, :150].contiguous()]
    batch = random_resized_crops(images, 64, torch.Generator().manual_seed(5))
    gen = torch.Generator().manual_seed(5)
    for k, image in enumerate(images):
        box = crop_params(image.shape[1], image.shape[2], gen)
        assert torch.equal(batch[k], resized_crop(image, box, 64))


# ---------------------------------------------------------------- the full-view train cache
def test_train_cache_keeps_the_whole_image_at_a_bounded_size(tmp_path, monkeypatch):
    monkeypatch.setenv("PAINT_RAY_HOME", str(tmp_path / "home"))
    pf.write_dtd(tmp_path)                     # 16 x 12 images
    task = get_task("dtd", str(tmp_path))
    assert full_view_side(224) == 256 and full_view_side(8) == 10
    fv = full_view(task, "train", 8, progress=False)
    train = task.split("train")
    assert len(fv) == len(train) and fv.labels.tolist() == [int(train[i][1]) for i in range(len(train))]
    original = train[3][0]                                           # 16 wide, 12 high
    expected = np.asarray(original.resize((13, 10), Image.BICUBIC))  # shorter side 12 -> 10, aspect kept
    assert torch.equal(fv.image(3), torch.from_numpy(expected).permute(2, 0, 1))
    entry = entry_dir(task, "train", 10)
    assert (entry / "meta.json").is_file()
    stamp = (entry / "pixels.u8").stat().st_mtime_ns
    again = full_view(get_task("dtd", str(tmp_path)), "train", 8, progress=False)   # read back, not rebuilt
    assert torch.equal(again.pixels, fv.pixels) and (entry / "pixels.u8").stat().st_mtime_ns == stamp
    mnist_root = tmp_path / "m"
    pf.write_mnist(mnist_root)
    small = full_view(get_task("mnist", str(mnist_root)), "train", 224, progress=False)
    assert small.index[:, 1:].unique().tolist() == [28]             # below the bound: stored unresampled


# ---------------------------------------------------------------- shuffled epochs, resumable
def _tuner(tiny, **recipe):
    task = get_task("colors")
    head = cached_head(tiny, task)
    steps = recipe.pop("steps", 4)
    cfg = FinetuneConfig(lr=3e-3, steps=steps, batch_size=recipe.pop("batch_size", 32), warmup_steps=min(2, steps - 1),
                         **recipe)
    return Finetuner(copy.deepcopy(tiny.model.visual), head, train_split(task, cfg, 32), cfg)


def test_shuffled_epochs_visit_every_example_once_per_epoch(tiny):
    tuner = _tuner(tiny, augment="rrc", order="epochs", batch_size=300)
    n = len(tuner.train[""])
    per_epoch = math.ceil(n / 300)
    seen = []
    for step in range(2 * per_epoch):
        [(_, idx)] = tuner._shuffled(step)
        seen.append(idx)
    first, second = torch.cat(seen[:per_epoch]), torch.cat(seen[per_epoch:])
    assert sorted(first.tolist()) == list(range(n)) == sorted(second.tolist())
    assert not torch.equal(first, second)                   # a new shuffle each epoch
    assert len(seen[per_epoch - 1]) == n - 300 * (per_epoch - 1)   # the last batch is partial


@pytest.mark.slow
def test_reference_recipe_resumes_from_a_checkpoint_identically(tiny):
    a = _tuner(tiny, augment="rrc", order="epochs").run()
    b = _tuner(tiny, augment="rrc", order="epochs").run(until=2)
    state = copy.deepcopy(b.state_dict())
    c = _tuner(tiny, augment="rrc", order="epochs")
    c.load_state_dict(state)
    c.run()
    for (k, va), vc in zip(a.visual.state_dict().items(), c.visual.state_dict().values()):
        assert torch.allclose(va, vc, atol=1e-6), k
    fp32 = _tuner(tiny, augment="rrc", order="epochs", steps=1).run()
    bf16 = _tuner(tiny, augment="rrc", order="epochs", steps=1, precision="bf16").run()   # the option runs
    assert not all(torch.equal(x, y) for x, y in zip(fp32.visual.state_dict().values(),
                                                     bf16.visual.state_dict().values()))


# ---------------------------------------------------------------- identity: the recipe enters the θ1 key
def test_embedded_recipe_content_is_unchanged_and_new_settings_change_the_key():
    ref = ModelRef("toy-m", "abc123", "embedded", "toy-m", 10)
    # the recipe as it was digested before augment/order/precision/epochs existed (FINETUNE_VERSION 2 then
    # invalidated every older θ1 once: CUDA fine-tuning used to run in bf16 autocast, now fp32)
    assert FinetuneConfig().as_dict() == {"lr": 3e-4, "steps": 200, "batch_size": 64, "weight_decay": 0.1,
                                          "warmup_steps": 20, "label_smoothing": 0.0, "grad_clip": 1.0,
                                          "augment_shift": 3, "seed": 0}
    keys = {FinetuneJob(ref, ("digits",), ("k1",), FinetuneConfig(**change)).key
            for change in ({}, {"precision": "bf16"}, {"precision": "tf32"}, {"augment": "rrc"}, {"order": "epochs"},
                           {"epochs": 3.0})}
    assert len(keys) == 6
    rrc = FinetuneConfig(augment="rrc", augment_shift=7)
    assert rrc.as_dict()["augment_shift"] == 0
    assert rrc.as_dict() == FinetuneConfig(augment="rrc", augment_shift=0).as_dict()


@pytest.mark.parametrize("field, value, says", [
    ("precision", "fp16", "--finetune-precision 'fp16' is not valid; give one of: fp32, tf32, bf16"),
    ("augment", "crop", "--augment 'crop' is not valid; give one of: shift, rrc"),
    ("order", 3, "--order 3 is not valid; give one of: replacement, epochs"),
    ("epochs", -1.0, "epochs -1.0 is out of range"),
])
def test_bad_recipe_settings_are_one_line(field, value, says):
    with pytest.raises(PaintRayError) as e:
        FinetuneConfig(**{field: value}).validate()
    assert str(e.value).startswith(says) and "\n" not in str(e.value)


# ---------------------------------------------------------------- per-task epochs
def test_per_task_epochs_convert_to_steps_and_steps_override(tmp_path):
    assert PAPER_EPOCHS == {"cars": 35, "dtd": 76, "eurosat": 12, "gtsrb": 11, "mnist": 5, "resisc45": 15,
                            "sun397": 14, "svhn": 4, "imagenet": 4}
    # full-size MNIST: 55,000 training images after the 5,000 held out -> 430 batches of 128 per epoch
    assert steps_for_epochs(5, 55_000, 128) == 5 * 430 == 2150
    paper = FinetuneConfig(**{k: v[0] for k, v in PAPER_SEARCH_SPACE.items()})
    # TF32 matmuls (on Ampere and newer GPUs; plain fp32 on CPUs) by default, --finetune-precision fp32 for strict
    assert (paper.augment, paper.order, paper.precision, paper.lr, paper.warmup_steps) == ("rrc", "epochs", "tf32",
                                                                                          1e-5, 500)
    assert resolve(paper, "mnist", 55_000, PAPER_EPOCHS).steps == 2150
    assert resolve(paper, "kitti_distance", 5_000, PAPER_EPOCHS) == paper          # none listed: 2,000 steps
    with pytest.raises(PaintRayError, match="mnist: 5 epochs of 45 training images at batch 128 are 5 steps"):
        resolve(paper, "mnist", 45, PAPER_EPOCHS)
    from conftest import load_script
    scaling = load_script("scaling")
    from paint_ray.cli.study import build_parser, config_from_args
    args = ["--preset", "paper", "--out", str(tmp_path)]
    cfg = config_from_args("scaling", scaling.PRESETS, build_parser("scaling", scaling.PRESETS, None).parse_args(args))
    assert cfg.epochs == PAPER_EPOCHS and cfg.recipes()[0].precision == "tf32"
    strict = config_from_args("scaling", scaling.PRESETS, build_parser("scaling", scaling.PRESETS, None).parse_args(
        [*args, "--finetune-precision", "fp32"]))
    assert strict.recipes()[0].precision == "fp32"
    cfg = config_from_args("scaling", scaling.PRESETS, build_parser("scaling", scaling.PRESETS, None).parse_args(
        [*args, "--steps", "7", "--finetune-precision", "bf16", "--augment", "shift", "--order", "replacement"]))
    assert cfg.epochs == {} and cfg.recipes()[0].steps == 7 and cfg.recipes()[0].precision == "bf16"
    assert (cfg.recipes()[0].augment, cfg.recipes()[0].order) == ("shift", "replacement")


def test_a_bad_precision_on_the_study_command_line_is_one_line(tmp_path, capsys):
    from paint_ray.cli.study import main_for
    presets = {"embedded": {"models": ["toy-xs"], "patch_tasks": ["digits"], "supported": ["shapes"],
                            "search_space": {"lr": [3e-4], "steps": [200]}}}
    assert main_for("scaling", presets, argv=["--out", str(tmp_path), "--local", "--finetune-precision", "fp16"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "paint-ray: error: --finetune-precision 'fp16' is not valid; give one of: fp32, tf32, bf16"
