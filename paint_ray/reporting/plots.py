"""Plots a person would rather look at than read: α frontiers and the scaling summary."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def frontier_plot(table: pd.DataFrame, chosen_alpha: float, title: str, path: str | Path,
                  split: str = "val", published: list[dict] | None = None) -> Path:
    """Supported vs patch accuracy over α: points labelled with α, zero-shot and fine-tuned marked,
    the chosen α highlighted, the Pareto front drawn; `published` figures (published_report.plot_marks,
    test accuracies: give split="test") as labelled lines and a curve."""
    table = table.dropna(subset=[f"patch_{split}"]).reset_index(drop=True)   # an adaptive search tests a few α
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
    if np.isfinite(chosen_alpha):           # nan: no α within the drop budget, nothing chosen
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


def scaling_plot(patched: list, table: pd.DataFrame, path: str | Path) -> Path:
    """One panel per patch task with every size's test frontier (one line per seed, the mean-rule point
    starred, the ≤1 / ≤3-point budget points ringed), and a last panel with the gain at each budget and the
    frontier area against model size (mean over seeds, bars from min to max)."""
    from ..results.robust import BUDGETS, across_seeds
    single = [pm for pm in patched if pm.mode == "single"]
    rows = table[table["mode"] == "single"].set_index(["model", "patch", "seed"])
    patches = list(dict.fromkeys(pm.patch for pm in single))
    models = list(dict.fromkeys(pm.model for pm in single))
    colors = {m: plt.get_cmap("viridis")(i / max(1, len(models) - 1) * 0.85) for i, m in enumerate(models)}
    seeds = sorted({pm.seed for pm in single})
    styles = dict(zip(seeds, ["-", "--", ":", "-."] * 8))
    fig, axes = plt.subplots(1, len(patches) + 1, figsize=(4.6 * (len(patches) + 1), 4.2), dpi=110, squeeze=False)
    axes = axes[0]
    for ax, patch in zip(axes, patches):
        for pm in (p for p in single if p.patch == patch):
            t = pm.frontier.dropna(subset=["patch_test"]).sort_values("alpha")
            x, y = 100 * t["supported_test"], 100 * t["patch_test"]
            label = pm.model if pm.seed == seeds[0] else None
            ax.plot(x, y, styles[pm.seed], color=colors[pm.model], lw=1.3, marker=".", ms=4, label=label)
            f = t.set_index("alpha")
            ax.scatter(100 * f.loc[0.0, "supported_test"], 100 * f.loc[0.0, "patch_test"], marker="s", s=25,
                       color=colors[pm.model], zorder=3)
            a = pm.selection.alpha
            ax.scatter(100 * f.loc[a, "supported_test"], 100 * f.loc[a, "patch_test"], marker="*", s=120,
                       color=colors[pm.model], edgecolor="k", lw=0.5, zorder=4)
            row = rows.loc[(pm.model, patch, pm.seed)]
            for b in BUDGETS:
                ab = row[f"alpha_at_{b:g}"]
                ax.scatter(100 * f.loc[ab, "supported_test"], 100 * f.loc[ab, "patch_test"], marker="o", s=60,
                           facecolor="none", edgecolor=colors[pm.model], lw=1.0, zorder=4)
        ax.set_title(f"patch task: {patch}" + (f" ({len(seeds)} seeds: " + ", ".join(
            f"{s} {'solid' if st == '-' else 'dashed' if st == '--' else 'dotted'}"
            for s, st in list(styles.items())[:3]) + ")" if len(seeds) > 1 else ""), fontsize=9)
        ax.set_xlabel("supported tasks accuracy (test, %)")
        ax.set_ylabel("patch task accuracy (test, %)")
        ax.invert_xaxis()          # moving right = giving up supported accuracy, as α grows
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, title="■ α=0  ★ mean rule  ○ ≤1/≤3 pt", title_fontsize=7, loc="lower right")
    ax = axes[-1]
    summary = across_seeds(table[table["mode"] == "single"])
    x = np.arange(len(models))
    for j, patch in enumerate(patches):
        s = summary[summary["patch"] == patch].set_index("model").reindex(models)
        for k, (m, marker, label) in enumerate([("gain_at_1", "o", "gain at ≤1-pt drop"),
                                               ("gain_at_3", "^", "gain at ≤3-pt drop"),
                                               ("area", "s", "frontier area")]):
            off = (j * 3 + k - (3 * len(patches) - 1) / 2) * 0.06
            ax.errorbar(x + off, 100 * s[m], yerr=[100 * (s[m] - s[f"{m}_min"]), 100 * (s[f"{m}_max"] - s[m])],
                        fmt=marker + ("-" if j == 0 else "--"), color=f"C{j}", ms=5, capsize=3, lw=1,
                        label=f"{patch}: {label}")
    ax.set_xticks(x, models)
    ax.set_ylabel("points of patch-task gain (test)")
    ax.set_title("by model size (mean, bars: min–max over seeds)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
