"""Plots a person would rather look at than read: α frontiers and the scaling summary."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def frontier_plot(table: pd.DataFrame, chosen_alpha: float, title: str, path: str | Path,
                  split: str = "val", published: list[dict] | None = None) -> Path:
    """Supported vs patch accuracy over α: points labelled with α, zero-shot and fine-tuned marked,
    the chosen α highlighted, the Pareto front drawn; `published` figures (published_report.plot_marks,
    test accuracies: give split="test") as labelled lines and a curve."""
    x, y = 100 * table[f"patch_{split}"], 100 * table[f"supported_{split}"]
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=110)
    ax.plot(x, y, "-", color="0.75", zorder=1)
    ax.scatter(x, y, c=table["alpha"], cmap="viridis", s=36, zorder=2, label="θα")
    front = table[table["pareto"]].sort_values(f"patch_{split}")
    ax.plot(100 * front[f"patch_{split}"], 100 * front[f"supported_{split}"], "--", color="tab:blue",
            lw=1.2, zorder=1, label="Pareto front")
    for a, xi, yi in zip(table["alpha"], x, y):
        ax.annotate(f"{a:g}", (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ends = {0.0: ("zero-shot", "s", "tab:gray"), 1.0: ("fine-tuned", "D", "tab:red")}
    for a, (label, marker, color) in ends.items():
        sel = table["alpha"] == a
        ax.scatter(x[sel], y[sel], marker=marker, s=80, color=color, zorder=3, label=label)
    sel = table["alpha"] == chosen_alpha
    ax.scatter(x[sel], y[sel], marker="*", s=260, color="gold", edgecolor="k", zorder=4,
               label=f"chosen α = {chosen_alpha:g}")
    for mark in published or []:
        style = {"color": "tab:purple", "lw": 1.0, "alpha": 0.8, "zorder": 0}
        if mark["kind"] == "vline":
            ax.axvline(mark["x"], ls="--" if "zero-shot" in mark["label"] else ":", label=f"published: {mark['label']}",
                       **style)
        elif mark["kind"] == "hline":
            ax.axhline(mark["y"], ls="-.", label=f"published: {mark['label']}", **style)
        elif mark["kind"] == "curve":
            px, py = zip(*mark["points"])
            ax.plot(px, py, "x-", ms=5, label=mark["label"], **style)
    ax.set_xlabel(f"patch task accuracy ({split}, %)")
    ax.set_ylabel(f"supported tasks accuracy ({split}, %)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best" if published else "lower left")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def scaling_plot(table: pd.DataFrame, path: str | Path) -> Path:
    """Per patch task: zero-shot / fine-tuned / patched accuracy and supported drop against model size."""
    patches = list(dict.fromkeys(table["patch"]))
    fig, axes = plt.subplots(1, len(patches) + 1, figsize=(4.2 * (len(patches) + 1), 3.8), dpi=110)
    for ax, patch in zip(axes, patches):
        t = table[table["patch"] == patch]
        for col, label, style in [("patch_zero_shot", "zero-shot", "o--"), ("patch_fine_tuned", "fine-tuned", "s:"),
                                  ("patch_patched", "patched", "*-"),
                                  ("supported_patched", "supported tasks, patched", "d-.")]:
            ax.plot(t["model"], 100 * t[col], style, label=label)
        ax.set_title(f"patch task: {patch}", fontsize=10)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    ax = axes[-1]
    for patch in patches:
        t = table[table["patch"] == patch]
        ax.plot(t["model"], 100 * t["drop"], "o-", label=f"{patch}: supported drop")
        ax.plot(t["model"], 100 * t["gain"], "^--", label=f"{patch}: patch gain")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_title("gain and supported drop at the chosen α", fontsize=10)
    ax.set_ylabel("points")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)   # below: lines fill the plot
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
