"""Sweep throughput: paint_ray's resident evaluator vs the reference code's per-α path, same cells.

Reference-style path (what PAINT.md lists for the reference code), for every α: build the interpolated
state dict on the CPU, load it into the model, write the whole pickled model, rebuild each dataset and
decode every image again from files through a DataLoader, fp32 forward. paint_ray's path: decode each
split once into uint8 tensors (counted in its time), form θα in place, forward the cached tensors with
paint_ray's evaluation precision (bf16 autocast on CUDA and on CPUs with native bf16, see
paint_ray/precision.py). The accuracies of both paths are compared and the largest difference printed.
The last line is `ratio: X`.

    python benchmarks/sweep.py                       # toy-m on this CPU, digits/shapes/colors val splits
    python benchmarks/sweep.py --model ViT-B-32 --device cuda --n 2000    # random weights, 224 px
"""
from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import open_clip  # noqa: E402

import paint_ray.models.registry  # noqa: E402,F401  (registers the toy configs)
from paint_ray.data import PreparedSplit, image_size_of, resize_center_crop  # noqa: E402
from paint_ray.evaluation.evaluator import Cell, Evaluator  # noqa: E402
from paint_ray.models.heads import batch_logits  # noqa: E402
from paint_ray.models.normalize import mean_std  # noqa: E402
from paint_ray.devices import eval_precision  # noqa: E402
from paint_ray.tasks import get_task  # noqa: E402


def write_image_folders(tasks: list[str], n: int, root: Path) -> dict[str, Path]:
    """Each task's val split as PNG files in an ImageFolder tree (what the reference reads every α)."""
    folders = {}
    for name in tasks:
        split = get_task(name).split("val")
        for i in range(min(n, len(split))):
            image, label = split[i]
            d = root / name / f"{label:03d}"
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(d / f"{i:05d}.png")
        folders[name] = root / name
    return folders


def reference_sweep(model, theta0_sd, theta1_sd, heads, folders, alphas, size, batch, workers,
                    checkpoint_dir: Path) -> dict:
    from torchvision import datasets, transforms
    mean, std = mean_std(model.visual)
    tf = transforms.Compose([transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC),
                             transforms.CenterCrop(size), transforms.ToTensor(), transforms.Normalize(mean, std)])
    out = {}
    for a in alphas:
        sd = {k: (1 - a) * theta0_sd[k] + a * theta1_sd[k] if k.startswith("visual.") and v.is_floating_point()
              else v for k, v in theta0_sd.items()}                   # a whole state dict per α, on the CPU
        model.load_state_dict(sd)
        model.eval()
        torch.save(model, checkpoint_dir / f"patched_alpha={a:.3f}.pt")   # the reference pickles each θα
        for name, folder in folders.items():
            ds = datasets.ImageFolder(str(folder), transform=tf)
            # ImageFolder labels folders 000, 001, ... by sorted name: the same as the task's labels
            loader = torch.utils.data.DataLoader(ds, batch_size=batch, num_workers=workers)
            correct = total = 0
            with torch.no_grad():
                for x, y in loader:
                    pred = batch_logits(model.visual, heads[name], x).argmax(-1)
                    correct += int((pred == y).sum())
                    total += len(y)
            out[(a, name)] = correct / total
    return out


def decode_splits(folders: dict[str, Path], size: int) -> dict[str, PreparedSplit]:
    """Each split decoded once (PIL, the same bicubic resize + crop): paint_ray's one-time cost."""
    splits = {}
    for name, folder in folders.items():
        files = sorted(folder.glob("*/*.png"))
        images = np.stack([resize_center_crop(Image.open(f), size) for f in files])
        labels = np.array([int(f.parent.name) for f in files])
        splits[name] = PreparedSplit(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()), torch.from_numpy(labels))
    return splits


def make_evaluator(model, theta1_sd, heads, splits, device, resident: bool) -> Evaluator:
    ev = Evaluator(model.visual, device)
    ev.add_weights("ft", {k.removeprefix("visual."): v for k, v in theta1_sd.items() if k.startswith("visual.")})
    for name, data in splits.items():
        ev.add_head(name, heads[name])
        ev.add_split(name, "val", data, resident=resident)
    return ev


def evaluator_sweep(ev: Evaluator, tasks: list[str], alphas: list[float]) -> tuple[dict, float]:
    """Every (α, task) cell: θα formed in place once per α, then each task's forwards. Returns (accuracies, s)."""
    start = time.perf_counter()
    rows = ev.evaluate(Cell("ft", a, name, "val") for a in alphas for name in tasks)
    if ev.device.type == "cuda":
        torch.cuda.synchronize()
    return {(r["alpha"], r["task"]): r["accuracy"] for r in rows}, time.perf_counter() - start


def forward_only_seconds(ev: Evaluator, tasks: list[str], n_alphas: int) -> float:
    """The sweep's forwards and nothing else (no lerp, no θα): a floor for any evaluator."""
    start = time.perf_counter()
    for _ in range(n_alphas):
        for name in tasks:
            ev._correct(name, "val")
    if ev.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="toy-m", help="an open_clip architecture (random weights)")
    ap.add_argument("--tasks", default="digits,shapes,colors")
    ap.add_argument("--n", type=int, default=500, help="images per task")
    ap.add_argument("--alphas", type=int, default=11, help="number of α values in [0, 1]")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers of the reference path")
    ap.add_argument("--batch", type=int, default=512)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = open_clip.create_model(args.model, pretrained=None).eval()
    size = image_size_of(model.visual)
    tasks = args.tasks.split(",")
    theta0_sd = {k: v.clone() for k, v in model.state_dict().items()}
    theta1_sd = {k: v + 0.02 * torch.randn_like(v) if k.startswith("visual.") and v.is_floating_point() else v
                 for k, v in theta0_sd.items()}
    dim = model.text_projection.shape[1] if model.text_projection is not None else 512
    heads = {t: torch.nn.functional.normalize(torch.randn(len(get_task(t).classnames), dim), dim=-1) * 30
             for t in tasks}
    alphas = [round(i / (args.alphas - 1), 6) for i in range(args.alphas)]
    with tempfile.TemporaryDirectory() as tmp:
        folders = write_image_folders(tasks, args.n, Path(tmp))
        n_images = sum(len(list(f.glob("*/*.png"))) for f in folders.values())
        cells = len(alphas) * len(tasks)
        t = time.perf_counter()
        splits = decode_splits(folders, size)
        t_decode = time.perf_counter() - t
        live = copy.deepcopy(model).to(args.device)
        # warm both paths alike: every batch shape runs once first (kernels are built on first use, in bf16
        # on CPUs with native bf16), then each path is timed warm, the evaluator streaming its splits
        streamed = make_evaluator(live, theta1_sd, heads, splits, args.device, resident=False)
        resident = make_evaluator(live, theta1_sd, heads, splits, args.device, resident=True)
        forward_only_seconds(streamed, tasks, 1)
        forward_only_seconds(resident, tasks, 1)
        ours, t_sweep = evaluator_sweep(streamed, tasks, alphas)
        t_forward = forward_only_seconds(resident, tasks, len(alphas))     # the ceiling: resident, forwards only
        t_ours = t_decode + t_sweep
        t = time.perf_counter()
        ref = reference_sweep(copy.deepcopy(model), theta0_sd, theta1_sd, heads, folders, alphas, size,
                              args.batch, args.workers, Path(tmp))
        t_ref = time.perf_counter() - t
    diff = max(abs(ours[k] - ref[k]) for k in ref)
    print(f"model {args.model} ({size} px), {cells} cells = {len(alphas)} alphas x {len(tasks)} tasks, "
          f"{n_images} images per alpha, device {args.device} (paint_ray eval in {eval_precision(args.device)}), torch threads {torch.get_num_threads()}")
    print(f"reference path: {t_ref:8.2f} s  {cells / t_ref:7.2f} cells/s  {n_images * len(alphas) / t_ref:9.0f} img/s")
    print(f"evaluator path: {t_ours:8.2f} s  {cells / t_ours:7.2f} cells/s  {n_images * len(alphas) / t_ours:9.0f} img/s"
          f"  (one-time decode {t_decode:.2f} s included; splits streamed, not resident)")
    precision = eval_precision(args.device)
    print(f"max accuracy difference between the paths: {diff:.4f}"
          f"{'  (paint_ray in bf16, reference in fp32)' if precision == 'bf16' else ''}")
    print(f"warm, same batches: evaluator sweep {t_sweep:.2f} s (θα formed {len(alphas)} times) vs the forward "
          f"passes alone on resident data {t_forward:.2f} s: {t_forward / t_sweep:.2f} of the ceiling")
    print(f"(with this forward on this device no evaluator can beat the reference by more than "
          f"{t_ref / (t_forward + t_decode):.1f}x)")
    print(f"ratio: {t_ref / t_ours:.1f}")


if __name__ == "__main__":
    main()
