"""Published figures beside a report of ours: summary columns, terminal lines, the comparison table and plot
marks, as plain pandas (tracking.py puts them on MLflow runs).

Only models a source covers get any of this (published.model_key: the OpenAI CLIPs); every other report is
left exactly as it was. Ours are test accuracies read from a patched model's frontier; each is compared with
every published figure of its kind, the best-matching source first (published.find).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd

from . import published
from .published import FINE_TUNED, FLAG_POINTS, JOINT, PATCHED, ZERO_SHOT, Comparison

if TYPE_CHECKING:
    from ..results.study import PatchedModel, StudyResult

# summary slot -> (which task: "patch" or "supported", kind, at which α: 0, 1 or the chosen one)
SLOTS = {"patch_zero_shot": ("patch", ZERO_SHOT, "zero"), "patch_fine_tuned": ("patch", "end", "one"),
         "patch_patched": ("patch", PATCHED, "chosen"), "supported_zero_shot": ("supported", ZERO_SHOT, "zero"),
         "supported_patched": ("supported", PATCHED, "chosen")}
SHORT = {"patch_zero_shot": "zs pub", "patch_fine_tuned": "ft pub", "patch_patched": "α pub",
         "supported_zero_shot": "supp zs pub", "supported_patched": "supp α pub"}


def _end_kind(mode: str) -> str | None:
    """What α = 1 is, as sources name it: a single-task fine-tune, or a joint one; other modes have none."""
    return {"single": FINE_TUNED, "joint": JOINT}.get(mode)


def comparisons(pm: PatchedModel, supported: Sequence[str]) -> list[Comparison]:
    """Every (our test accuracy, published figure) pair for a patched model: zero-shot at α = 0 on each task,
    fine-tuned (or joint) at α = 1 on its patch tasks, and patched figures at every α of its frontier."""
    if not published.covers(pm.model):
        return []
    by_alpha = pm.frontier.set_index("alpha")
    patch_tasks = pm.patch.split("+")
    tasks = list(dict.fromkeys([*patch_tasks, *supported]))
    out: list[Comparison] = []

    def add(task: str, kind: str, alpha: float) -> None:
        col = f"{task}_test"
        if alpha not in by_alpha.index or col not in by_alpha.columns or pd.isna(by_alpha.loc[alpha, col]):
            return
        patch = pm.patch if kind == PATCHED else None
        for fig in published.find(pm.model, task, kind, alpha if kind == PATCHED else None, patch):
            out.append(Comparison(task, kind, float(alpha), float(by_alpha.loc[alpha, col]), fig))

    for task in tasks:
        add(task, ZERO_SHOT, 0.0)
    if _end_kind(pm.mode):
        for task in patch_tasks:
            add(task, _end_kind(pm.mode), 1.0)
    if pm.mode == "single":
        for alpha in by_alpha.index:
            for task in tasks:
                add(task, PATCHED, float(alpha))
    return out


def primary(pm: PatchedModel, supported: Sequence[str],
            comps: list[Comparison] | None = None) -> dict[str, Comparison]:
    """The best-matching comparison per summary slot (one patch task / one supported task only: a published
    figure is never averaged into a mean of ours)."""
    comps = comparisons(pm, supported) if comps is None else comps
    patch_tasks = pm.patch.split("+")
    chosen = pm.selection.alpha
    out = {}
    for slot, (role, kind, at) in SLOTS.items():
        names = patch_tasks if role == "patch" else list(supported)
        if len(names) != 1:
            continue
        kind = _end_kind(pm.mode) if kind == "end" else kind
        alpha = {"zero": 0.0, "one": 1.0, "chosen": chosen}[at]
        found = [c for c in comps if c.task == names[0] and c.kind == kind and abs(c.alpha - alpha) < 1e-9]
        if found:
            out[slot] = found[0]
    return out


def summary_columns(pm: PatchedModel, supported: Sequence[str]) -> dict:
    """Columns for a summary row (scaling.parquet): per slot the published value (a fraction, like ours), its
    source and kind, and whether ours is more than FLAG_POINTS away. Empty for models no source covers."""
    row = {}
    for slot, c in primary(pm, supported).items():
        row[f"{slot}_published"] = c.figure.percent / 100
        row[f"{slot}_published_source"] = c.figure.label
        row[f"{slot}_published_flag"] = c.flagged
    return row


def with_published(table: pd.DataFrame, result: StudyResult) -> pd.DataFrame:
    """The study's summary table with the published columns added to the rows that have them."""
    extra = [summary_columns(pm, result.config.supported) for pm in result.patched]
    if not any(extra):
        return table
    return pd.concat([table.reset_index(drop=True), pd.DataFrame(extra)], axis=1)


def display_columns(table: pd.DataFrame) -> tuple[pd.DataFrame, list[tuple[str, str, str]]]:
    """Text columns for the terminal table ('48.39 ⚑') and their (column, header, format) entries."""
    shown, cols = table.copy(), []
    for slot, header in SHORT.items():
        value = f"{slot}_published"
        if value not in table.columns:
            continue
        flags = table.get(f"{value}_flag", pd.Series(False, index=table.index))
        shown[f"{value}_text"] = ["" if pd.isna(v) else f"{100 * v:.2f}%" + (" ⚑" if _true(f) else "")
                                  for v, f in zip(table[value], flags)]
        cols.append((f"{value}_text", header, "{}"))
    return shown, cols


def _true(flag) -> bool:
    return not pd.isna(flag) and bool(flag)


def format_comparisons(result: StudyResult) -> str:
    """Lines of ours beside each published figure of the slots, with source and kind; '' when none apply."""
    lines = []
    for pm in result.patched:
        for slot, c in primary(pm, result.config.supported).items():
            flag = f"  ⚑ more than {FLAG_POINTS:g} points apart" if c.flagged else ""
            lines.append(f"{pm.model}  {pm.patch}  {slot.replace('_', ' ')} ({c.task}, α={c.alpha:g}): ours "
                         f"{100 * c.ours:.1f}%, published {c.figure.percent_text}% ({c.diff_points:+.1f} points) — "
                         f"{c.figure.label} [{c.figure.source.url}]{flag}")
    if not lines:
        return ""
    return ("published figures beside ours (test accuracy; each source's own protocol, splits and prompts: "
            "expect a few points either way)\n" + "\n".join(lines))


def comparison_frame(comps: list[Comparison]) -> pd.DataFrame:
    """Every comparison as a table (the MLflow run's published.json)."""
    return pd.DataFrame([{"task": c.task, "kind": c.kind, "alpha": c.alpha, "ours_percent": round(100 * c.ours, 4),
                          "published_percent": c.figure.percent, "published_text": c.figure.text,
                          "units": c.figure.source.units, "diff_points": round(c.diff_points, 4),
                          "flag": c.flagged, "source": c.figure.source.name, "row": c.figure.row,
                          "url": c.figure.source.url, "revision": c.figure.source.revision,
                          "protocol": c.figure.source.protocol} for c in comps])


def plot_marks(pm: PatchedModel, supported: Sequence[str], comps: list[Comparison]) -> list[dict]:
    """What the frontier plot (test split) draws: vertical lines at the published patch-task figures, a
    horizontal one at the supported task's zero-shot figure (one supported task only), and the published
    PAINT curve where it is the same experiment (θ1 on MNIST, CIFAR-10 the only supported task)."""
    marks = []
    for slot, c in primary(pm, supported, comps).items():
        if slot in ("patch_zero_shot", "patch_fine_tuned"):
            marks.append({"kind": "vline", "x": c.figure.percent,
                          "label": f"{c.kind} {c.figure.percent_text}% ({c.figure.source.name})"})
        elif slot == "supported_zero_shot":
            marks.append({"kind": "hline", "y": c.figure.percent,
                          "label": f"{c.task} {c.kind} {c.figure.percent_text}% ({c.figure.source.name})"})
    if pm.mode == "single" and list(supported) == ["cifar10"] and pm.patch == "mnist":
        curve = [f for f in published.FIGURES if f.kind == PATCHED and f.model == published.model_key(pm.model)]
        by_alpha: dict[float, dict[str, float]] = {}
        for f in curve:
            by_alpha.setdefault(f.alpha, {})[f.task] = f.percent
        points = [(v["mnist"], v["cifar10"]) for _, v in sorted(by_alpha.items()) if {"mnist", "cifar10"} <= set(v)]
        if points:
            marks.append({"kind": "curve", "points": points,
                          "label": f"published PAINT curve ({published.SOURCES['paint_page'].name})"})
    return marks
