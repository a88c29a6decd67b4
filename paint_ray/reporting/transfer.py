"""Broad transfer (RQ4): how patching one task changes accuracy on every other task."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def transfer_matrix(result, at: str = "patched") -> pd.DataFrame:
    """Rows: patch task; columns: eval task; values: test accuracy change from zero-shot, in points,
    of the patched model at the chosen α (`at="patched"`) or of the fine-tuned model (`at="fine_tuned"`)."""
    rows = {}
    for pm in result.patched:
        f = pm.frontier.set_index("alpha")
        alpha = pm.selection.alpha if at == "patched" else 1.0
        tests = [c for c in f.columns if c.endswith("_test") and not c.startswith(("patch_", "supported_"))]
        rows[f"{pm.model} · {pm.patch}" if len(result.config.models) > 1 else pm.patch] = {
            c.removesuffix("_test"): 100 * (f.loc[alpha, c] - f.loc[0.0, c]) for c in tests}
    return pd.DataFrame(rows).T


def transfer_heatmap(matrix: pd.DataFrame, path: str | Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * matrix.shape[1], 1.2 + 0.7 * matrix.shape[0]), dpi=110)
    lim = max(5.0, float(matrix.abs().max().max()))
    im = ax.imshow(matrix.to_numpy(dtype=float), cmap="RdBu", vmin=-lim, vmax=lim)
    ax.set_xticks(range(matrix.shape[1]), matrix.columns, rotation=35, ha="right", fontsize=8)
    ax.set_yticks(range(matrix.shape[0]), matrix.index, fontsize=8)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            v = matrix.iloc[i, j]
            if pd.notna(v):
                ax.text(j, i, f"{v:+.1f}", ha="center", va="center", fontsize=7)
    ax.set_xlabel("evaluated on")
    ax.set_ylabel("patched on")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="accuracy change (points)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
