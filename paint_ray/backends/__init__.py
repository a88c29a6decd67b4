"""The pipeline's two backends share this small interface: fine-tune jobs, evaluate cells, measure drift.

- `backends.local.LocalBackend`: everything in this process (what `paint-ray patch` runs).
- `distributed.backend.RayBackend`: Tune trials and named evaluator actors (the studies, `live`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..finetune import FinetuneConfig
from ..identity import digest
from ..paths import home

# bumped when the training loop changes what a recipe produces (2: CUDA fine-tuning is fp32 unless the recipe
# asks for bf16; it used to be bf16 autocast under the same recipe)
FINETUNE_VERSION = "2"


def set_key(model_digest: str, theta1_key: str, start_key: str | None) -> str:
    """The content key of a weight set: the model, its θ1 and where its α = 0 starts."""
    return digest([model_digest, theta1_key, start_key])


def theta1_path(job_key: str) -> Path:
    return home() / "finetuned" / f"{job_key}.safetensors"


@dataclass(frozen=True)
class ModelRef:
    """A loaded model as the pipeline names it: its spec for reading, its weight digest for identity."""
    spec: str
    digest: str
    pretrained: str
    arch: str
    visual_params: int


@dataclass(frozen=True)
class FinetuneJob:
    """One fine-tuning of a model's image encoder on one task (or several, jointly) with one recipe."""
    model: ModelRef
    tasks: tuple[str, ...]
    task_keys: tuple[str, ...]          # identity.task_key of each task: its data and prompts
    recipe: FinetuneConfig
    data_root: str | None = None
    start: str | None = None            # safetensors of the image encoder to start from (sequential)
    start_key: str | None = None
    mode: str = "single"

    def as_config(self) -> dict:
        """Plain data for a Tune trial's config (what `finetune_trial` reads back)."""
        return {"model": self.model.spec, "model_digest": self.model.digest, "tasks": list(self.tasks),
                "recipe": self.recipe.as_dict(), "data_root": self.data_root, "start": self.start,
                "start_key": self.start_key, "mode": self.mode, "key": self.key}

    @property
    def key(self) -> str:
        return digest([FINETUNE_VERSION, self.model.digest, self.task_keys, self.recipe.as_dict(), self.start_key])

    @property
    def path(self) -> Path:
        """Where θ1 lives once trained: content-addressed, so any study with the same inputs reuses it."""
        return theta1_path(self.key)

    @property
    def label(self) -> str:
        return f"{'+'.join(self.tasks)}-{self.key[:8]}"


@dataclass
class TrialResult:
    job: FinetuneJob
    val_acc: float
    history: list[dict] = field(default_factory=list)
    tune_path: str = ""
    node_id: str = ""
    cached: bool = False

    @property
    def path(self) -> Path:
        return self.job.path


@dataclass(frozen=True)
class WeightSet:
    """Weights to sweep over α: θα = (1 − α)·start + α·θ1, start being θ0 unless given."""
    model: ModelRef
    theta1: Path
    theta1_key: str
    patch_tasks: str                     # 'a' or 'a+b'
    mode: str                            # single, joint, sequential, parallel
    eval_tasks: tuple[str, ...]
    start: Path | None = None
    start_key: str | None = None
    recipe: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def key(self) -> str:
        return set_key(self.model.digest, self.theta1_key, self.start_key)

    @property
    def trial(self) -> str:
        """A readable label (the key decides identity)."""
        return f"{self.patch_tasks}-{self.key[:8]}"


# (α, task, split) cells to evaluate per weight set
Work = dict[WeightSet, list[tuple[float, str, str]]]
OnRows = Callable[[WeightSet, list[dict]], None]


class Backend(Protocol):
    """What the pipeline needs from where it runs. Rows carry weights/alpha/task/split/accuracy/n/seconds."""

    def start(self) -> None: ...
    def add_model(self, loaded) -> None: ...
    def eval_identity(self) -> dict[str, str]: ...          # {"precision": "bf16", "device": "cpu"}
    def finetune(self, jobs: list[FinetuneJob], progress: bool = True) -> list[TrialResult]: ...
    def evaluate(self, work: Work, on_rows: OnRows, progress: bool = True) -> None: ...
    def drift(self, ws: WeightSet, probe_tasks: list[str]) -> dict: ...
    def close(self) -> None: ...
