"""Multi-task patching (RQ3): joint, sequential and parallel modes next to one specialised model per task.

Each mode is a producer of fine-tuning jobs and weight sets for the pipeline's one sweep and selection:
- joint: one job fine-tunes on the union of the patch tasks, each example scored by its own task's frozen
  head, then α is swept once. With batches drawn with replacement (the embedded recipe) every batch holds
  the tasks in equal shares and the job runs the specialised models' steps added up, so each task gets the
  examples its specialised model got; otherwise tasks are sampled in proportion to their training sizes.
- sequential: patch task 1 (its specialised model, α chosen on validation), fine-tune task 2 starting
  from that patched model, sweep α between the two, choose on validation of tasks 1..2 + supported, ...
- parallel: merge the specialised task vectors θᵢ − θ0 with a combiner (merging.py: average, task
  arithmetic, TIES, DARE, TSV-M, Iso-C, Iso-CTS) and sweep the shared coefficient; `per_task` instead
  searches one coefficient per task.
Every mode chooses on validation of all its patch tasks plus the supported tasks, by the study's rule. With
the max-drop rule (experiments/multitask.py's default, a 3-point budget) the specialised models and every mode
are chosen at the same supported-drop budget, always measured from the zero-shot model θ0.

May import: errors, identity, paths, storage, devices, tasks, data, models, caches, weights, training, evaluation, config, results, reporting, backends, distributed, pipeline
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace

import pandas as pd

from .backends import Backend
from .evaluation.weight_set import WeightSet
from .config import StudyConfig
from .errors import PaintRayError, unknown
from .training.finetune import visual_state
from .identity import digest
from .weights.interpolate import lerp_state
from .weights.merging import COMBINERS, COMMON_FRACTION, as_theta, merge_task_vectors, task_vectors
from .results.selection import zero_shot_row
from .results.study import PatchedModel, StudyResult
from .pipeline import Pipeline, default_backend, exclusive

MODES = ("joint", "sequential", "parallel")
MAX_COMBINATIONS = 512          # per-task search: every combination is a weight set held by an evaluator


@dataclass
class MultitaskConfig:
    study: StudyConfig                       # patch_tasks: the tasks patched together (at least two)
    modes: list[str] = field(default_factory=lambda: list(MODES))
    combiner: str = "ties"
    per_task: bool = False                   # parallel: one coefficient per task instead of a shared one
    density: float = 0.2
    common_fraction: float = COMMON_FRACTION  # iso_cts: the common subspace's share of each matrix's rank
    coefficients: list[float] | None = None  # per_task: evaluate these (one per task) instead of searching

    def validate(self) -> None:
        for m in self.modes:
            if m not in MODES:
                raise unknown("mode", m, MODES)
        if self.combiner not in COMBINERS:
            raise unknown("combiner", self.combiner, COMBINERS)
        if len(self.study.patch_tasks) < 2:
            raise PaintRayError(f"multi-task modes need at least 2 patch tasks, got "
                                f"{','.join(self.study.patch_tasks) or 'none'}; use experiments/scaling.py "
                                f"for a single task")
        if len(self.study.models) != 1:
            raise PaintRayError(f"a multi-task study patches one model at a time, got {len(self.study.models)}")
        if len(self.study.seeds) != 1:
            raise PaintRayError(f"a multi-task study runs one fine-tuning seed at a time, got --seeds "
                                f"{','.join(map(str, self.study.seeds))}; run it once per seed (e.g. --seeds 1)")
        if not 0.0 < self.density <= 1.0:
            raise PaintRayError(f"--density {self.density:g} must be in (0, 1]")
        if not 0.0 <= self.common_fraction <= 1.0:
            raise PaintRayError(f"--common-fraction {self.common_fraction:g} must be in [0, 1] (the common "
                                f"subspace's share of each matrix's rank)")
        n = len(self.study.patch_tasks)
        if self.coefficients is not None:
            if not self.per_task:
                raise PaintRayError("--coefficients needs --per-task (a shared coefficient is swept over --alphas)")
            if len(self.coefficients) != n:
                raise PaintRayError(f"--coefficients has {len(self.coefficients)} values for {n} patch tasks "
                                    f"({','.join(self.study.patch_tasks)}); give exactly {n}")
        elif self.per_task and "parallel" in self.modes and self.study.alpha_search is not None:
            raise PaintRayError("--per-task searches a grid of coefficients per task; give --alphas a grid (e.g. "
                                "0:1:0.25) rather than auto, or give --coefficients")
        elif self.per_task and "parallel" in self.modes:
            combos = len([a for a in self.study.alphas if a > 0]) ** n
            if combos > MAX_COMBINATIONS:
                raise PaintRayError(f"--per-task would search {combos} coefficient combinations "
                                    f"({n} tasks); the limit is {MAX_COMBINATIONS}: use a coarser --alphas "
                                    f"or give --coefficients")


def run_multitask(mt: MultitaskConfig, backend: Backend | None = None) -> tuple[StudyResult, pd.DataFrame]:
    """The specialised models, then each mode; returns (a StudyResult of every patched model, the table)."""
    mt.validate()
    cfg = mt.study
    with exclusive(cfg.out):
        backend = backend or default_backend(cfg)
        pipe = Pipeline(cfg, backend)
        try:
            pipe.prepare()
            special = pipe.single_task()
            patched = list(special) + _modes(pipe, mt, {pm.patch: pm for pm in special})
            result = pipe.result(patched)
        finally:
            backend.close()
    return result, multitask_table(result, cfg.patch_tasks, {pm.patch: pm for pm in special})


def _modes(pipe: Pipeline, mt: MultitaskConfig, by_task: dict[str, PatchedModel]) -> list[PatchedModel]:
    cfg = pipe.cfg
    spec, patch = cfg.models[0], cfg.patch_tasks
    theta0 = visual_state(pipe.models[spec].model.visual)
    out = []

    # θ0's accuracies on every task, from the specialised frontiers' α = 0 rows: where a mode's own α = 0 is
    # not θ0 (sequential), its budget, zero-shot figures and gains are measured from this row
    frontiers = [by_task[t].frontier for t in patch]
    if "joint" in mt.modes:
        jobs = [replace(j, recipe=joint_recipe(j.recipe, len(patch))) for j in pipe.jobs(spec, patch, mode="joint")]
        sets = [pipe.weight_set(tr) for tr in pipe.finetune(jobs)]
        alphas = pipe.evaluate_sets(sets, patch)
        out.append(pipe.select(sets, patch, alphas))

    if "sequential" in mt.modes:
        first = by_task[patch[0]]
        start_key = digest([first.weights.key, first.selection.alpha])
        current = lerp_state(theta0, pipe.load_weights(first.weights.theta1), first.selection.alpha)
        for k, task in enumerate(patch[1:], start=2):
            start = pipe.save_weights(current, "starts", start_key)
            trials = pipe.finetune(pipe.jobs(spec, [task], mode="sequential", start=start, start_key=start_key))
            sets = [pipe.weight_set(tr, start, start_key, patch[:k]) for tr in trials]
            # α = 0 here is the model patched so far, not θ0: budgets and gains are measured from θ0's row
            theta0_row = zero_shot_row(frontiers, patch[:k], cfg.supported)
            alphas = pipe.evaluate_sets(sets, patch[:k], baseline=theta0_row)
            pm = pipe.select(sets, patch[:k], alphas, config={"first_alpha": first.selection.alpha},
                             baseline=theta0_row)
            if not pm.selection.eligible or k == len(patch):
                out.append(pm)           # no α of this step within the budget: the chain ends, reported so
                break
            current = lerp_state(current, pipe.load_weights(pm.weights.theta1), pm.selection.alpha)
            start_key = digest([pm.weights.key, pm.selection.alpha])

    if "parallel" in mt.modes:
        chosen = [by_task[t].weights for t in patch]
        names = sorted(theta0)          # a fixed order: DARE seeds its drops by tensor position
        taus = task_vectors([theta0[n] for n in names], [[pipe.load_weights(w.theta1)[n] for n in names] for w in chosen])

        extra = combiner_options(mt, cfg.seeds[0])

        def merged_set(coefs: list[float] | None) -> WeightSet:
            # the options a preset does not read stay out of the key, so earlier merges keep theirs
            key = digest([mt.combiner, mt.density, coefs, [w.key for w in chosen]] + ([extra] if extra else []))
            theta = dict(zip(names, as_theta([theta0[n] for n in names],
                                             merge_task_vectors(taus, mt.combiner, coefs, mt.density, **extra))))
            return WeightSet(pipe.refs[spec], pipe.save_weights(theta, "merged", key), key, "+".join(patch), "parallel",
                             tuple(cfg.eval_tasks("+".join(patch))),
                             recipe={"combiner": mt.combiner, "density": mt.density, **extra,
                                     "coefficients": ",".join(f"{c:g}" for c in coefs) if coefs else ""})
        if not mt.per_task:
            ws = merged_set(None)
            alphas = pipe.evaluate_sets([ws], patch)
            out.append(pipe.select([ws], patch, alphas))
        else:
            grid = [a for a in cfg.alphas if a > 0]
            combos = [list(mt.coefficients)] if mt.coefficients else \
                [list(c) for c in itertools.product(grid, repeat=len(patch))]
            sets = [merged_set(c) for c in combos]
            pipe.sweep(sets, [0.0, 1.0])       # the coefficients are the knob: each merge at α = 1
            out.append(pipe.select(sets, patch, [0.0, 1.0], choose_at=1.0))
    return out


def combiner_options(mt: MultitaskConfig, seed: int) -> dict:
    """The options of `merge_task_vectors` beyond density that the combiner reads: Iso-CTS's common fraction,
    DARE's seed (the study's fine-tuning seed, so each seed's merge draws its own drops)."""
    opts = COMBINERS[mt.combiner]
    return ({"common_fraction": mt.common_fraction} if opts["matrix"] == "iso_cts" else {}) | \
        ({"seed": seed} if opts["trim"] == "random" else {})


def joint_recipe(recipe, n_tasks: int):
    """The joint job's recipe: with batches drawn with replacement, equal task shares per batch and the steps
    of the `n_tasks` specialised models added up (the same examples per task); other orders as they are."""
    if recipe.order != "replacement":
        return recipe
    return replace(recipe, steps=recipe.steps * n_tasks, mix="balanced")


def multitask_table(result: StudyResult, patch: list[str], by_task: dict) -> pd.DataFrame:
    """Test accuracy per patch task, their average, the supported accuracy and drop from zero-shot (the
    specialised row: the mean over the specialised models, each at its own α) and the gap to the specialised.
    A mode with no α (or coefficients) within the drop budget is a row with `eligible` False and no accuracies."""
    chosen = {t: by_task[t].frontier.set_index("alpha").loc[by_task[t].selection.alpha] for t in patch}
    special = {t: chosen[t][f"{t}_test"] for t in patch}
    zero_shot = by_task[patch[0]].frontier.set_index("alpha").loc[0.0, "supported_test"]
    rows = [{"mode": "specialised", **{t: special[t] for t in patch}, "average": sum(special.values()) / len(patch),
             "supported": sum(chosen[t]["supported_test"] for t in patch) / len(patch),
             "alpha": float("nan"), "coefficients": ",".join(f"{by_task[t].selection.alpha:g}" for t in patch),
             "eligible": True}]
    for pm in result.patched:
        if pm.mode == "single":
            continue
        f = pm.chosen_point()
        accs = {t: f.get(f"{t}_test", float("nan")) for t in patch}    # a chain that ended early lacks later tasks
        per_task = pm.coefficient_table is not None
        rows.append({"mode": pm.mode if pm.mode != "parallel" else f"parallel ({pm.config.get('combiner')})",
                     **accs, "average": sum(accs.values()) / len(patch), "supported": f["supported_test"],
                     "alpha": float("nan") if per_task else pm.selection.alpha,
                     "coefficients": pm.config["coefficients"] if per_task and pm.selection.eligible else "",
                     "eligible": pm.selection.eligible})
    table = pd.DataFrame(rows)
    table["drop"] = zero_shot - table["supported"]
    table["gap"] = table["average"].iloc[0] - table["average"]
    return table
