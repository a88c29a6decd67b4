"""Accuracies other people published for PAINT's tasks and models, to print next to ours (never to tune to).

Every cell is copied as its source writes it, in the source's units (fractions or percent) and rounding; a
blank is "-" (no readable source gave it). Sources, the revisions read and their protocols are in `SOURCES`.
Gaps of a few points are expected even when everything is right: splits, prompt templates, class names,
preprocessing and fine-tuning recipes differ between sources (see each source's protocol).
"""
from __future__ import annotations

from dataclasses import dataclass

FLAG_POINTS = 2.0        # |ours − published| above this many points is flagged in reports
VERSION = "1"            # bumped when a figure is added or corrected: MLflow runs showing them are relogged

ZERO_SHOT, FINE_TUNED, JOINT, PATCHED = "zero-shot", "fine-tuned", "joint fine-tuned", "patched"
KINDS = (ZERO_SHOT, FINE_TUNED, JOINT, PATCHED)

# The column order of every table below (paint_ray task names).
COLUMNS = ("cars", "dtd", "eurosat", "gtsrb", "kitti_distance", "mnist", "resisc45", "sun397", "svhn", "imagenet",
           "cifar10", "cifar100", "stl10", "food101")


@dataclass(frozen=True)
class Source:
    key: str
    name: str
    url: str
    revision: str
    protocol: str
    units: str           # "fraction" or "percent"


SOURCES = {s.key: s for s in (
    Source("open_clip", "open_clip results", "https://github.com/mlfoundations/open_clip/blob/main/docs/"
           "openclip_results.csv", "HEAD 89fb801 (file changed in 3480360, 2023-12-03)",
           "zero-shot on 38 datasets following Gadre et al. 2023 (CLIP_benchmark/DataComp splits, prompts and "
           "class names, not PAINT's); the OpenAI weights", "fraction"),
    Source("fusionbench", "FusionBench clip_vit.md", "https://github.com/tanganke/fusion_bench/blob/main/docs/"
           "modelpool/clip_vit.md", "HEAD 54c9e8c (file changed in a1efbc4)",
           "HF transformers ports of the OpenAI CLIPs, templates averaged, tanganke/<task> test splits; their own "
           "fine-tuned checkpoints: Adam, lr 1e-5, 4,000 steps at batch 32, vision encoder only", "percent"),
    Source("task_vectors", "task_vectors issue #5", "https://github.com/mlfoundations/task_vectors/issues/5",
           "comment by gabrielilharco, 2023-04-28",
           "one model fine-tuned jointly on 8 tasks (no KITTI), 2k or 8k steps (paper App. D.2); split not stated",
           "fraction"),
    Source("paint_page", "PAINT project page", "https://github.com/model-patching/model-patching.github.io "
           "(data/real/overall.jsonl)", "HEAD 4c52e9e (2022-08-12)",
           "ViT-B/32 (openai) θ1 fully fine-tuned on MNIST, interpolated at α; split and fine-tuning "
           "hyperparameters not stated", "fraction"),
)}

# Two lines per row: model | kind | source | the source's row label, then one cell per COLUMNS entry.
_TABLE = """
ViT-B-32:openai | zero-shot | open_clip | ViT-B-32 (openai)
    0.5963 0.4436 0.5044 0.3258 0.2743 0.4839 0.5362 0.6248 0.3159 0.6332 0.8983 0.6423 0.9713 0.8400
ViT-B-16:openai | zero-shot | open_clip | ViT-B-16 (openai)
    0.6477 0.4495 0.5594 0.4339 0.2644 0.5135 0.5822 0.6435 0.5190 0.6834 0.9077 0.6695 0.9825 0.8872
ViT-L-14:openai | zero-shot | open_clip | ViT-L-14 (openai)
    0.7788 0.5537 0.6263 0.5055 0.2180 0.7634 0.6337 0.6756 0.5840 0.7554 0.9559 0.7582 0.9936 0.9305
ViT-L-14-336:openai | zero-shot | open_clip | ViT-L-14-336 (openai)
    0.7932 0.5559 0.6144 0.5239 0.2616 0.7916 0.6379 0.6865 0.5560 0.7656 0.9493 0.7436 0.9943 0.9386
ViT-B-32:openai | zero-shot | fusionbench | ViT-B/32 zero-shot (20-task table, l.214)
    59.58 44.20 45.00 32.53 - 48.26 60.27 63.18 31.63 - 89.83 63.72 97.12 82.36
ViT-B-32:openai | fine-tuned | fusionbench | ViT-B/32 fine-tuned (20-task table, l.215)
    78.52 79.68 99.07 98.91 - 99.58 95.14 74.86 97.27 - 97.60 88.38 97.55 88.41
ViT-B-16:openai | zero-shot | fusionbench | ViT-B/16 zero-shot (20-task table, l.221)
    64.68 45.00 54.11 43.45 - 51.73 66.38 65.54 51.99 - 90.77 66.33 98.25 87.01
ViT-B-16:openai | fine-tuned | fusionbench | ViT-B/16 fine-tuned (20-task table, l.222)
    85.90 82.34 99.00 98.99 - 99.70 96.56 78.92 97.61 - 98.28 88.78 98.15 91.87
ViT-L-14:openai | zero-shot | fusionbench | ViT-L/14 zero-shot (20-task table, l.228)
    77.86 55.53 61.19 50.52 - 76.31 71.33 68.22 58.43 - 95.59 75.05 99.36 91.18
ViT-L-14:openai | fine-tuned | fusionbench | ViT-L/14 fine-tuned (20-task table, l.229)
    92.77 85.48 99.11 99.24 - 99.76 97.38 82.76 97.92 - 99.13 93.00 99.23 94.77
ViT-B-32:openai | zero-shot | fusionbench | ViT-B/32 zero-shot (merging table, l.841)
    59.8 43.9 46.0 32.5 - 48.2 60.7 63.2 31.6 - - - - -
ViT-B-32:openai | fine-tuned | fusionbench | ViT-B/32 fine-tuned (STL) (merging table, l.842)
    78.3 79.7 99.0 98.9 - 99.6 95.2 75.0 97.3 - - - - -
ViT-B-16:openai | zero-shot | fusionbench | ViT-B/16 zero-shot (merging table, l.869)
    64.6 44.9 54.1 43.4 - 51.7 66.3 65.5 51.9 - - - - -
ViT-B-16:openai | fine-tuned | fusionbench | ViT-B/16 fine-tuned (STL) (merging table, l.870)
    85.9 82.3 99.0 99.0 - 99.7 96.6 78.9 97.6 - - - - -
ViT-L-14:openai | zero-shot | fusionbench | ViT-L/14 zero-shot (merging table, l.888)
    77.8 55.5 58.9 50.6 - 76.4 71.0 68.3 58.4 - - - - -
ViT-L-14:openai | fine-tuned | fusionbench | ViT-L/14 fine-tuned (STL) (merging table, l.889)
    92.9 85.5 99.2 99.2 - 99.8 97.4 82.8 97.9 - - - - -
ViT-B-32:openai | joint fine-tuned | task_vectors | ViT-B-32 multitask, 2k steps
    0.6580 0.7809 0.9722 0.9732 - 0.9902 0.9089 0.6970 0.9314 - - - - -
ViT-B-32:openai | joint fine-tuned | task_vectors | ViT-B-32 multitask, 8k steps
    0.7444 0.7787 0.9822 0.9891 - 0.9945 0.9390 0.7285 0.9580 - - - - -
ViT-L-14:openai | joint fine-tuned | task_vectors | ViT-L-14 multitask, 2k steps
    0.8741 0.8415 0.9807 0.9875 - 0.9935 0.9465 0.7837 0.9600 - - - - -
ViT-L-14:openai | joint fine-tuned | task_vectors | ViT-L-14 multitask, 8k steps
    0.9064 0.8436 0.9919 0.9907 - 0.9963 0.9632 0.8084 0.9757 - - - - -
"""

# The project page's one published PAINT curve: ViT-B/32 patched on MNIST. α | MNIST | CIFAR-10
_PAINT_CURVE = """
0.00 0.4838 0.8984
0.10 0.7553 0.9018
0.20 0.9207 0.8992
0.25 0.953  0.8935
0.30 0.9716 0.8854
0.40 0.9881 0.8669
0.50 0.9936 0.836
0.60 0.9955 0.7888
0.70 0.9963 0.7191
0.80 0.996  0.6325
0.90 0.996  0.5284
1.00 0.996  0.4136
"""


@dataclass(frozen=True)
class Figure:
    """One published accuracy: `text` exactly as the source writes it, in the source's units."""
    model: str           # "ViT-B-32:openai"
    task: str            # paint_ray task name
    kind: str            # one of KINDS
    text: str
    source: Source
    row: str             # the source's row label
    alpha: float | None = None      # patched: the interpolation coefficient
    patch: str | None = None        # patched: the task θ1 was fine-tuned on

    @property
    def percent(self) -> float:
        return float(self.text) * (100 if self.source.units == "fraction" else 1)

    @property
    def percent_text(self) -> str:
        """In percent with the source's own precision (0.4839 -> 48.39, 48.2 -> 48.2)."""
        decimals = len(self.text.partition(".")[2])
        if self.source.units == "fraction":
            decimals = max(0, decimals - 2)
        return f"{self.percent:.{decimals}f}"

    @property
    def label(self) -> str:
        what = self.kind if self.alpha is None else f"{self.kind} at α={self.alpha:g} (θ1 on {self.patch})"
        return f"{self.source.name}: {self.row}, {what}"


def _figures() -> list[Figure]:
    out = []
    lines = _TABLE.strip().splitlines()
    for line, cells in zip(lines[::2], lines[1::2]):
        model, kind, source, row = (part.strip() for part in line.split("|"))
        values = cells.split()
        assert len(values) == len(COLUMNS) and kind in KINDS, line
        out += [Figure(model, task, kind, v, SOURCES[source], row) for task, v in zip(COLUMNS, values) if v != "-"]
    for line in _PAINT_CURVE.strip().splitlines():
        alpha, mnist, cifar10 = line.split()
        for task, v in (("mnist", mnist), ("cifar10", cifar10)):
            out.append(Figure("ViT-B-32:openai", task, PATCHED, v, SOURCES["paint_page"],
                              "ViT-B/32, θ1 fine-tuned on MNIST (overall_data)", float(alpha), "mnist"))
    return out


FIGURES: tuple[Figure, ...] = tuple(_figures())
MODELS = tuple(dict.fromkeys(f.model for f in FIGURES))


def model_key(spec: str) -> str | None:
    """The published model a paint_ray model spec is ('ViT-B-32-quickgelu:openai' -> 'ViT-B-32:openai'),
    or None when no source covers it (embedded models, local checkpoints, other pretrained tags)."""
    arch, _, tag = spec.partition(":")
    key = f"{arch.removesuffix('-quickgelu')}:{tag}"
    return key if key in MODELS else None


def find(spec: str, task: str, kind: str, alpha: float | None = None, patch: str | None = None) -> list[Figure]:
    """Every published figure for (model spec, task, kind), best match first: for zero-shot open_clip (the
    same weights, every task), then FusionBench; for 'patched', the figure at this α for this patch task."""
    model = model_key(spec)
    if model is None:
        return []
    return [f for f in FIGURES if f.model == model and f.task == task and f.kind == kind
            and (kind != PATCHED or (f.patch == patch and alpha is not None and abs(f.alpha - alpha) < 1e-6))]


def best(spec: str, task: str, kind: str, alpha: float | None = None, patch: str | None = None) -> Figure | None:
    found = find(spec, task, kind, alpha, patch)
    return found[0] if found else None


def covers(spec: str) -> bool:
    return model_key(spec) is not None


@dataclass(frozen=True)
class Comparison:
    """Our accuracy (a fraction) beside one published figure."""
    task: str
    kind: str
    alpha: float
    ours: float
    figure: Figure

    @property
    def diff_points(self) -> float:
        return 100 * self.ours - self.figure.percent

    @property
    def flagged(self) -> bool:
        return abs(self.diff_points) > FLAG_POINTS
