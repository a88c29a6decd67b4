"""What a run is asked to do, checked in one place before anything expensive starts.

- the α grid: parsed, range-checked, capped and anchored at 0 (zero-shot) and 1 (fine-tuned) here only;
- `StudyConfig`: models × patch tasks × hyperparameters × α × eval tasks, for either backend.

May import: errors, identity, paths, storage, devices, tasks, data, models, training, evaluation
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from .errors import PaintRayError, unknown
from .training.finetune import FinetuneConfig

MAX_ALPHAS = 1001          # 0:1:0.001; a finer grid is a typo, and each value is a full evaluation
SPLITS = ("val", "test")   # val chooses α, test reports it
RULES = ("mean", "max-drop")


def shown(value, limit: int = 80) -> str:
    """A bad value as echoed in an error: repr, cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def parse_alphas(text: str) -> list[float]:
    """'0:1:0.1' (start:stop:step, stop included) or '0,0.3,1' -> sorted unique α values in [0, 1]."""
    try:
        if ":" in text:
            start, stop, step = (float(v) for v in text.split(":"))
            if not step > 0 or not math.isfinite(step):
                raise PaintRayError(f"alpha grid step {step:g} must be a positive number in {shown(text)}")
            n = int(math.floor((stop - start) / step + 1e-6)) + 1 if stop >= start else 0
            if n > MAX_ALPHAS:
                raise PaintRayError(f"alpha grid {shown(text)} has {n:,} values; at most {MAX_ALPHAS:,} are "
                                    f"allowed (e.g. 0:1:0.001)")
            values = [start + i * step for i in range(n)]
        else:
            values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise PaintRayError(f"alpha grid {shown(text)} is not 'start:stop:step' or a comma list of numbers") from e
    return check_alphas(values, text)


def parse_alpha_spec(text: str) -> tuple[list[float], float | None]:
    """`--alphas`: a grid (parse_alphas) with no search, or 'auto' / 'auto:Δα' (default Δα 0.01): an adaptive
    search (results/search.py) and no grid."""
    parts = [p.strip() for p in str(text).split(",")]
    if any(p.startswith("auto") for p in parts):
        if len(parts) != 1:
            raise PaintRayError(f"--alphas {shown(text)} mixes 'auto' with a grid; give --alphas auto[:Δα] (an "
                                f"adaptive search) or a grid such as 0:1:0.1, not both")
        _, _, delta = parts[0].partition(":")
        if parts[0] not in ("auto",) and not parts[0].startswith("auto:"):
            raise PaintRayError(f"--alphas {shown(text)} is not 'auto' or 'auto:Δα' (e.g. auto:0.01)")
        try:
            value = float(delta) if delta else 0.01
        except ValueError:
            raise PaintRayError(f"--alphas {shown(text)}: Δα {delta!r} is not a number; e.g. auto:0.01") from None
        return [], check_delta(value)
    return parse_alphas(text), None


def check_delta(delta: float) -> float:
    """The resolution of an adaptive α search: a number in (0, 1)."""
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not (math.isfinite(delta) and 0 < delta < 1):
        raise PaintRayError(f"--alphas auto:{shown(delta)}: the resolution Δα must be a number in (0, 1), e.g. auto:0.01")
    return float(delta)


def check_alphas(values, source: str | None = None) -> list[float]:
    """Sorted unique α values, each in [0, 1]; a one-line error otherwise."""
    values = sorted({round(float(v), 6) for v in values})
    where = f" in {shown(source)}" if source is not None else ""
    if not values:
        raise PaintRayError(f"alpha grid{where} is empty; give e.g. 0:1:0.1 or 0,0.5,1")
    if len(values) > MAX_ALPHAS:
        raise PaintRayError(f"alpha grid has {len(values):,} values; at most {MAX_ALPHAS:,} are allowed")
    bad = [v for v in values if not 0.0 <= v <= 1.0]     # nan fails this too
    if bad:
        raise PaintRayError(f"alpha {bad[0]:g}{where} is outside the allowed range [0, 1]")
    return values


def anchored(alphas) -> list[float]:
    """The grid a frontier is built on: the given α values plus 0 (zero-shot) and 1 (fine-tuned)."""
    return sorted(set(check_alphas(alphas)) | {0.0, 1.0})


def check_seeds(seeds) -> list[int]:
    """A non-empty list of distinct integer seeds >= 0; a one-line error otherwise."""
    seeds = list(seeds)
    if not seeds:
        raise PaintRayError("--seeds is empty; give e.g. 0 or 0,1")
    bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < 2 ** 64]
    if bad:
        raise PaintRayError(f"seed {shown(bad[0])} is not a fine-tuning seed; give an integer from 0 to 2**64 - 1")
    if len(set(seeds)) != len(seeds):
        raise PaintRayError(f"--seeds {','.join(map(str, seeds))} lists a seed twice")
    return seeds


def check_max_drop(max_drop: float | None) -> None:
    if max_drop is not None and not (math.isfinite(max_drop) and max_drop >= 0):
        raise PaintRayError(f"--max-drop {max_drop:g} must be a number >= 0 (points of supported accuracy)")


@dataclass(frozen=True)
class TrialResources:
    """What one fine-tuning trial reserves on the Ray backend."""
    cpus: float = 1.0
    gpus: float = 0.0

    def validate(self) -> None:
        for flag, v in (("--cpus-per-trial", self.cpus), ("--gpus-per-trial", self.gpus)):
            if not (math.isfinite(v) and v >= 0):
                raise PaintRayError(f"{flag} {v:g} must be a number >= 0")
        if self.cpus == 0 and self.gpus == 0:
            raise PaintRayError("--cpus-per-trial 0 with --gpus-per-trial 0 reserves nothing; give one of them > 0")

    def as_dict(self) -> dict:
        return {"cpu": self.cpus, "gpu": self.gpus}

    def as_bundle(self) -> dict:
        """The trial's shape as a resource bundle (what the autoscaler is asked to make room for)."""
        return {k: v for k, v in (("CPU", self.cpus), ("GPU", self.gpus)) if v}


HYPERPARAMETERS = tuple(f.name for f in fields(FinetuneConfig))


@dataclass
class StudyConfig:
    """A study: every (model, patch task, hyperparameters) fine-tuned, swept over α on its eval tasks."""
    name: str
    models: list[str]
    patch_tasks: list[str]
    supported: list[str]
    alphas: list[float]
    out: str
    search_space: dict[str, list] = field(default_factory=lambda: {"lr": [3e-4], "steps": [200]})
    # task -> epochs a single-task job trains (converted to steps: recipe.resolve); tasks not listed train `steps`
    epochs: dict[str, float] = field(default_factory=dict)
    # evaluated on every patched model and reported, but not used to choose α (transfer, case studies)
    extra_tasks: list[str] = field(default_factory=list)
    data_root: str | None = None
    resources: TrialResources | None = None
    evaluators: int | None = None
    asha: bool = False
    rule: str = "mean"
    max_drop: float | None = None
    address: str | None = None
    tune_storage: str | None = None
    tracking_uri: str | None = None     # default: MLFLOW_TRACKING_URI, else sqlite in `out`
    register: bool = False              # also register each patched model in the MLflow model registry
    mlflow: bool = True
    progress: bool = True
    device: str | None = None           # local backend: cpu or cuda[:N] (default: cuda when visible)
    eval_memory: int | None = None      # bytes each evaluator may hold: weights and eval data (memory.py)
    keep_evaluators: float = 1800.0     # seconds an idle evaluator waits before it ends and frees its GPU
    alpha_search: float | None = None   # --alphas auto[:Δα]: search α to this resolution instead of a grid
    # fine-tuning seeds: each (model, patch task) is fine-tuned, swept and selected once per seed
    seeds: list[int] = field(default_factory=lambda: [0])
    _validated: str | None = field(default=None, init=False, repr=False, compare=False)

    def ensure_valid(self) -> None:
        """`validate()`, unless this very configuration was validated already (by the command line)."""
        if self._validated != self._state():
            self.validate()

    def _state(self) -> str:
        from .identity import digest
        return digest({f.name: getattr(self, f.name) for f in fields(self) if f.name != "_validated"})

    def validate(self, data: bool = True) -> None:
        """Every check that needs no model, no data and no Ray: run before anything expensive. With
        data=False (`--plan`), task names are checked without looking for their data."""
        from .models.registry import check_spec
        from .paths import ensure_writable
        from .tasks import get_task, task_names
        if not self.models:
            raise PaintRayError("no model given; e.g. --models toy-m")
        for spec in self.models:
            check_spec(spec)
        if not self.patch_tasks:
            raise PaintRayError("no patch task given; e.g. --patch digits")
        for t in [*self.patch_tasks, *self.supported, *self.extra_tasks]:
            if data:
                get_task(t, self.data_root)
            elif t not in task_names():
                raise unknown("task", t, task_names())
        both = set(self.patch_tasks) & set(self.supported)
        if both:
            raise PaintRayError(f"task {sorted(both)[0]!r} is both a patch task and supported; a task is either "
                                f"patched or supported, not both")
        for kind, names in (("patch", self.patch_tasks), ("supported", self.supported)):
            if len(set(names)) != len(names):
                raise PaintRayError(f"{kind} tasks {','.join(names)} list a task twice")
        if self.alpha_search is not None:
            check_delta(self.alpha_search)
        else:
            self.alphas = check_alphas(self.alphas)
        if self.rule not in RULES:
            raise unknown("selection rule", self.rule, RULES)
        if self.rule == "max-drop" and self.max_drop is None:
            raise PaintRayError("rule 'max-drop' needs --max-drop D (points of supported accuracy)")
        check_max_drop(self.max_drop)
        unknown_hp = set(self.search_space) - set(HYPERPARAMETERS)
        if unknown_hp:
            raise unknown("hyperparameter", sorted(unknown_hp)[0], HYPERPARAMETERS)
        for values in self.search_space.values():
            if not values:
                raise PaintRayError("a hyperparameter grid is empty; give at least one value")
        check_seeds(self.seeds)
        if "seed" in self.search_space:
            raise PaintRayError("give fine-tuning seeds with --seeds (each seed is selected and reported on its "
                                "own), not as a hyperparameter to choose the best of")
        for recipe in self.recipes():
            recipe.validate()
        for task, e in self.epochs.items():
            if isinstance(e, bool) or not isinstance(e, (int, float)) or not (math.isfinite(e) and e > 0):
                raise PaintRayError(f"epochs {shown(e)} for task {task!r} must be a number above 0")
        if self.resources is not None:
            self.resources.validate()
        if not (math.isfinite(self.keep_evaluators) and self.keep_evaluators > 0):
            raise PaintRayError(f"--keep-evaluators {self.keep_evaluators:g} s must be a positive duration, e.g. 30m")
        if self.evaluators is not None and self.evaluators < 1:
            raise PaintRayError(f"--evaluators {self.evaluators} must be >= 1 (or leave it out: one per GPU or CPU)")
        if self.device is not None:
            check_device(self.device)
        if self.eval_memory is not None:
            from .evaluation.memory import check_budget, image_size_of_spec
            sizes = [image_size_of_spec(m) for m in self.models]
            for size in {s for s in sizes if s}:      # unknown sizes are checked once the model is loaded
                check_budget(self.eval_memory, size)
        if data:
            ensure_writable(self.out)
            self._validated = self._state()

    def recipes(self) -> list[FinetuneConfig]:
        """Every point of the hyperparameter grid, once per seed, as a fine-tuning recipe."""
        import itertools
        from dataclasses import replace
        keys = list(self.search_space)
        grid = [FinetuneConfig(**dict(zip(keys, combo)))
                for combo in itertools.product(*(self.search_space[k] for k in keys))]
        if "seed" in self.search_space:
            return grid
        return [replace(r, seed=s) for s in self.seeds for r in grid]

    def all_tasks(self) -> list[str]:
        return list(dict.fromkeys([*self.patch_tasks, *self.supported, *self.extra_tasks]))

    def eval_tasks(self, patch: str) -> list[str]:
        """What a model patched on `patch` ('a' or 'a+b') is evaluated on: its tasks, supported and extra."""
        return list(dict.fromkeys([*patch.split("+"), *self.supported, *self.extra_tasks]))


def check_device(device: str) -> str:
    """'cpu', 'cuda' or 'cuda:N' that this machine has; a one-line error otherwise."""
    import torch
    kind, _, index = device.partition(":")
    if kind not in ("cpu", "cuda") or (index and not index.isdigit()) or (kind == "cpu" and index):
        raise PaintRayError(f"--device {shown(device)} is not a device; valid: cpu, cuda, cuda:N")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise PaintRayError(f"--device {device!r} requested but no CUDA GPU is visible; use --device cpu")
        if index and int(index) >= torch.cuda.device_count():
            raise PaintRayError(f"--device {device!r}: this machine has {torch.cuda.device_count()} GPU(s)")
    return device

