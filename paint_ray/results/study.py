"""What a study produced: each patched model with its frontier and selection, and the study as a whole."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from ..config import StudyConfig
from ..evaluation.weight_set import WeightSet
from ..models.registry import LoadedModel
from .robust import budget_metrics
from .selection import Selection


@dataclass
class PatchedModel:
    """One patched model after selection: its weight set, the chosen α and its frontier."""
    model: str
    pretrained: str
    patch: str
    weights: WeightSet
    config: dict
    frontier: pd.DataFrame
    selection: Selection
    drift: dict
    mode: str = "single"
    coefficient_table: pd.DataFrame | None = field(default=None, repr=False)   # per-task coefficients
    seed: int = 0                   # the fine-tuning seed of its trials
    # θ0's accuracies where the frontier's α = 0 is not θ0 (a sequential step starts from the model patched
    # so far): zero-shot figures, gains and drops are then measured from this row (selection.zero_shot_row)
    zero_shot: pd.Series | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        """model/patch[/mode][/seedN]: how tables and MLflow name it (seed 0 unnamed, as before seeds)."""
        return (f"{self.model}/{self.patch}" + ("" if self.mode == "single" else f"/{self.mode}")
                + (f"/seed{self.seed}" if self.seed else ""))

    @property
    def trial(self) -> str:
        return self.weights.trial

    def zero_shot_point(self) -> pd.Series:
        """θ0's row: `zero_shot`, else the frontier's α = 0 row."""
        return self.zero_shot if self.zero_shot is not None else self.frontier.set_index("alpha").loc[0.0]

    def chosen_point(self) -> pd.Series:
        """The frontier's row at the chosen α; all nan when no α was eligible (nothing was chosen)."""
        f = self.frontier.set_index("alpha")
        if not self.selection.eligible:
            return pd.Series(float("nan"), index=f.columns)
        return f.loc[self.selection.alpha]

    def summary(self, supported: Sequence[str], extra: Sequence[str] = ()) -> dict:
        f = self.frontier.set_index("alpha")
        zs, ft, pa = self.zero_shot_point(), f.loc[1.0], self.chosen_point()
        row = {"model": self.model, "patch": self.patch, "mode": self.mode, "seed": self.seed, "trial": self.trial,
               "alpha": self.selection.alpha, "eligible": self.selection.eligible,
               "patch_zero_shot": zs.patch_test, "patch_fine_tuned": ft.patch_test, "patch_patched": pa.patch_test,
               "supported_zero_shot": zs.supported_test, "supported_fine_tuned": ft.supported_test,
               "supported_patched": pa.supported_test,
               "gain": pa.patch_test - zs.patch_test, "drop": zs.supported_test - pa.supported_test,
               **budget_metrics(self.frontier, self.zero_shot), **self.drift}
        for t in supported:
            row[f"{t}_patched"] = pa[f"{t}_test"]
        for t in extra:
            if f"{t}_test" in f.columns:
                row.update({f"{t}_zero_shot": zs.get(f"{t}_test", float("nan")), f"{t}_fine_tuned": ft[f"{t}_test"],
                            f"{t}_patched": pa[f"{t}_test"]})
        return row


@dataclass
class StudyResult:
    config: StudyConfig
    patched: list[PatchedModel]
    trials: pd.DataFrame
    timings: dict
    models: dict[str, LoadedModel] = field(default_factory=dict, repr=False)
    run_ids: dict[str, str] = field(default_factory=dict)
    storage: str | None = None                        # where the weight files are (None: this node's cache)
    identity: dict[str, str] = field(default_factory=dict)     # eval precision and device type of the rows

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([p.summary(self.config.supported, self.config.extra_tasks) for p in self.patched])

    def selection_rule(self) -> str:
        return self.patched[0].selection.describe() if self.patched else self.config.rule
