"""Multi-task combiners of task vectors τᵢ = θᵢ − θ0: one generalised merge, a few named presets.

`merge_task_vectors` returns one merged vector v; the caller forms θ0 + v (`as_theta`) and interpolates it
like any fine-tuned θ1, so the merged model is θ0 + α·v (α is the papers' scaling factor, swept and chosen
on validation like every α here). Every preset is the same pipeline with different options (as in mergekit's
generalized task arithmetic), applied per tensor position:

    weight by cᵢ -> 2-D tensors: a spectral merge (`matrix`), if the preset has one
                 -> otherwise: trim (`magnitude` top-density, or `random` drop-and-rescale) -> elect sign by
                    mass -> sum or mean

- average:         mean of τᵢ.
- task_arithmetic: Σ cᵢ τᵢ (Ilharco et al. 2023).
- ties:            TIES-merging (Yadav et al. 2023): trim, elect, disjoint mean.
- dare_linear:     DARE (Yu et al. 2024): drop each entry with probability 1 − density, rescale the kept ones
                   by 1/density, then sum; dare_ties also elects signs (mergekit's presets, same defaults).
- tsv:             TSV-M (Gargiulo et al., CVPR 2025): per 2-D tensor, each task's top r/T singular triplets,
                   their U and V orthogonalised (Procrustes), recombined with the tasks' own singular values.
- iso_c:           Iso-C (Marczak et al., ICML 2025): per 2-D tensor, the sum Σ τᵢ with its spectrum made flat
                   at its mean singular value.
- iso_cts:         Iso-CTS (same paper): the sum's top singular directions (a `common_fraction` of the rank)
                   plus each task's top directions outside them, orthogonalised, with a flat spectrum.
In tsv, iso_c and iso_cts every tensor that is not 2-D (biases, norms, class token, the patch convolution)
is the mean of the τᵢ, as both papers' code does.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

from ..errors import PaintRayError, unknown

Vector = list[torch.Tensor]

# name -> options of `_merge`. trim: None, "magnitude" (keep the top-`density` entries) or "random" (DARE:
# keep each entry with probability `density`, rescaled by 1/density); elect: sign election by mass; reduce:
# "mean" divides by the number of contributing tasks, "sum" does not; matrix: the spectral merge of 2-D
# tensors (their other options unused), None for the entry-wise pipeline.
COMBINERS: dict[str, dict] = {
    "average": {"trim": None, "elect": False, "reduce": "mean", "matrix": None, "min_tasks": 2},
    "task_arithmetic": {"trim": None, "elect": False, "reduce": "sum", "matrix": None, "min_tasks": 1},
    "ties": {"trim": "magnitude", "elect": True, "reduce": "mean", "matrix": None, "min_tasks": 2},
    "dare_linear": {"trim": "random", "elect": False, "reduce": "sum", "matrix": None, "min_tasks": 1},
    "dare_ties": {"trim": "random", "elect": True, "reduce": "sum", "matrix": None, "min_tasks": 2},
    "tsv": {"trim": None, "elect": False, "reduce": "mean", "matrix": "tsv", "min_tasks": 2},
    "iso_c": {"trim": None, "elect": False, "reduce": "mean", "matrix": "iso_c", "min_tasks": 1},
    "iso_cts": {"trim": None, "elect": False, "reduce": "mean", "matrix": "iso_cts", "min_tasks": 2},
}
COMMON_FRACTION = 0.8          # Iso-CTS: the share of each 2-D tensor's rank given to the common subspace (the paper's)


def task_vectors(theta0: Vector, thetas: Sequence[Vector]) -> list[Vector]:
    """τᵢ = θᵢ − θ0 for each fine-tuned θᵢ (tensors in the same order as θ0)."""
    for i, theta in enumerate(thetas):
        _check_like(theta0, theta, f"θ{i + 1}")
    return [list(torch._foreach_sub(theta, theta0)) for theta in thetas]


def as_theta(theta0: Vector, vector: Vector) -> Vector:
    """θ0 + v: a merged vector as a 'θ1' for interpolate_ (α then scales the whole merged vector)."""
    return list(torch._foreach_add(theta0, vector))


def merge_task_vectors(vectors: Sequence[Vector], method: str = "average",
                       coefficients: float | Sequence[float] | None = None, density: float = 0.2,
                       common_fraction: float = COMMON_FRACTION, seed: int = 0) -> Vector:
    """One merged task vector from τ₁..τₙ by the named preset.

    coefficients: None (1 for every task), one shared float, or one per task; each τᵢ is scaled by its cᵢ
    before merging (as FusionBench's TSV-M does with per-task alphas). `density` is the fraction of entries
    each τᵢ keeps per tensor (presets that trim), `common_fraction` the common subspace's share of the rank
    (iso_cts), `seed` the seed of DARE's random drops (the same seed and tensor order give the same merge:
    the drops of a tensor are seeded by its position, so give the tensors in a fixed order, e.g. by name).
    """
    if method not in COMBINERS:
        raise unknown("merge method", method, COMBINERS)
    opts = COMBINERS[method]
    n = len(vectors)
    if n < opts["min_tasks"]:
        raise PaintRayError(f"merge method {method!r} needs at least {opts['min_tasks']} tasks, got {n}")
    if not 0.0 < density <= 1.0:
        raise PaintRayError(f"density {density!r} must be in (0, 1] (the fraction of entries kept)")
    if not 0.0 <= common_fraction <= 1.0:
        raise PaintRayError(f"common fraction {common_fraction!r} must be in [0, 1] (the common subspace's "
                            f"share of each matrix's rank)")
    coefs = _coefficients(coefficients, n)
    for i, tau in enumerate(vectors[1:], start=2):
        _check_like(vectors[0], tau, f"task vector {i}")
    return [_merge([tau[j] for tau in vectors], coefs, opts, density, common_fraction, (seed, j))
            for j in range(len(vectors[0]))]


@torch.no_grad()
def _merge(deltas: list[torch.Tensor], coefs: list[float], opts: dict, density: float, common_fraction: float,
           seed: tuple[int, int]) -> torch.Tensor:
    """Merge one tensor position across tasks."""
    if opts["matrix"] is not None:
        weighted = [d * c for d, c in zip(deltas, coefs)]
        if deltas[0].ndim == 2 and min(deltas[0].shape) >= len(deltas):
            return _MATRIX[opts["matrix"]](weighted, common_fraction).to(deltas[0].dtype)
        # not a matrix (or one of rank below the task count, where the reference would keep no direction of
        # any task and give zero): the mean of the τᵢ, as the papers do for biases and norms
        return torch.stack(weighted).mean(0)
    if opts["trim"] == "magnitude" and density < 1.0:
        deltas = [_trim(d, density) for d in deltas]
    elif opts["trim"] == "random" and density < 1.0:
        deltas = [_drop(d, density, (*seed, i)) for i, d in enumerate(deltas)]
    # Weight before electing (as mergekit does): a shared positive c leaves the election unchanged, a
    # per-task cᵢ makes a task count cᵢ times in the mass; with a shared c, ties = c · disjoint mean.
    weighted = torch.stack([d * c for d, c in zip(deltas, coefs)])
    if not opts["elect"]:
        out = weighted.sum(0)
        return out / len(deltas) if opts["reduce"] == "mean" else out
    # Elected sign: the sign of the total mass; a zero total counts as + (mergekit's `>= 0`).
    elected = weighted.sum(0).ge(0).to(weighted.dtype) * 2 - 1
    agree = weighted.sign() == elected  # zero (trimmed) entries have sign 0, so never agree
    out = (weighted * agree).sum(0)
    if opts["reduce"] == "sum":
        return out
    # Disjoint mean: over the tasks that agree at that entry only; 0 where none does.
    return out / agree.sum(0).clamp(min=1).to(weighted.dtype)


def _trim(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the top-`density` fraction of entries by magnitude, zero the rest.

    Per tensor over all its entries (mergekit's `sparsify.magnitude`), not over the whole flattened task
    vector as the TIES reference code does: the same fraction of every layer survives, so small layers are
    not wiped out by large ones. k = int(density·numel) like mergekit, but at least 1 (a 1-entry tensor at
    density 0.2 keeps its entry rather than failing); ties at the threshold are broken by topk, so exactly
    k entries survive.
    """
    k = max(1, int(density * delta.numel()))
    if k >= delta.numel():
        return delta
    flat = delta.reshape(-1)
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[torch.topk(flat.abs().float(), k).indices] = True
    return (flat * keep).reshape(delta.shape)


def _drop(delta: torch.Tensor, density: float, seed: tuple[int, ...]) -> torch.Tensor:
    """DARE: keep each entry with probability `density` and divide the kept ones by it (E[out] = delta).

    The mask is drawn on the CPU from a generator seeded by (seed, tensor position, task), so a merge is the
    same on every machine and device, and two tasks never share a mask."""
    g = torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(repr(seed).encode()).digest()[:8], "little"))
    keep = torch.rand(delta.shape, generator=g) < density
    return delta * keep.to(delta.device, delta.dtype) / density


def _svd(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD in float64 for float64 input, else float32 (bf16/fp16 have no SVD and too little precision)."""
    return torch.linalg.svd(m if m.dtype == torch.float64 else m.float(), full_matrices=False)


def _polar(m: torch.Tensor) -> torch.Tensor:
    """The orthogonal matrix closest to `m` (Procrustes: P Qᵀ of m = P Σ Qᵀ), as the TSV-M and Iso-CTS code
    orthogonalises its stacked singular vectors."""
    p, _, qh = _svd(m)
    return p @ qh


def _tsv(deltas: list[torch.Tensor], _common: float) -> torch.Tensor:
    """TSV-M on one matrix: with k = ⌊r/T⌋ (r = min(m, n), T tasks), U = [U₁[:, :k] … U_T[:, :k]],
    Σ = diag(Σ₁[:k] … Σ_T[:k]), V = [V₁[:, :k] … V_T[:, :k]]; merged = polar(U) Σ polar(V)ᵀ
    (the reference's compute_and_sum_svd_mem_reduction, without its zero padding, which adds nothing)."""
    k = min(deltas[0].shape) // len(deltas)
    us, ss, vhs = zip(*(_svd(d) for d in deltas))
    u = torch.cat([x[:, :k] for x in us], 1)
    s = torch.cat([x[:k] for x in ss])
    vh = torch.cat([x[:k] for x in vhs], 0)
    return _polar(u) @ torch.diag(s) @ _polar(vh)


def _iso_c(deltas: list[torch.Tensor], _common: float) -> torch.Tensor:
    """Iso-C on one matrix: Δ = Σ τᵢ = U Σ Vᵀ; merged = U (mean(σ) I) Vᵀ."""
    u, s, vh = _svd(torch.stack(deltas).sum(0))
    return u @ torch.diag(torch.full_like(s, float(s.mean()))) @ vh


def _iso_cts(deltas: list[torch.Tensor], common_fraction: float) -> torch.Tensor:
    """Iso-CTS on one matrix (the reference's iso_cts, index for index):
    - r = min(m, n); k_c = int(r·fraction), then the task-specific total r − k_c is rounded to a multiple
      of T (Python's round, so every task gets the same s = (r − k_c)/T directions), never above r;
    - common: the top k_c singular triplets of Δ = Σ τᵢ;
    - task i: the top s triplets of τᵢ − U_c U_cᵀ τᵢ (τᵢ with the common column space projected out);
    - U = [U₁ₛ … U_Tₛ U_c], V likewise, Σ their singular values; merged = polar(U) (mean(Σ) I) polar(V)ᵀ."""
    t = len(deltas)
    r = min(deltas[0].shape)
    common = int(r * common_fraction)
    specific = min(round((r - common) / t) * t, (r // t) * t)   # the cap: a fraction near 0 could round above r
    common, per_task = r - specific, specific // t
    u, s, vh = _svd(torch.stack(deltas).sum(0))
    uc, sc, vhc = u[:, :common], s[:common], vh[:common]
    us, ss, vhs = [], [], []
    for d in deltas if per_task else ():
        d = d if d.dtype == uc.dtype else d.to(uc.dtype)
        ui, si, vhi = _svd(d - uc @ (uc.T @ d))
        us.append(ui[:, :per_task])
        ss.append(si[:per_task])
        vhs.append(vhi[:per_task])
    u_all, s_all, vh_all = torch.cat([*us, uc], 1), torch.cat([*ss, sc]), torch.cat([*vhs, vhc], 0)
    return _polar(u_all) @ torch.diag(torch.full_like(s_all, float(s_all.mean()))) @ _polar(vh_all)


_MATRIX = {"tsv": _tsv, "iso_c": _iso_c, "iso_cts": _iso_cts}


def _coefficients(coefficients: float | Sequence[float] | None, n: int) -> list[float]:
    if coefficients is None:
        return [1.0] * n
    if isinstance(coefficients, (int, float)):
        return [float(coefficients)] * n
    coefs = [float(c) for c in coefficients]
    if len(coefs) != n:
        raise PaintRayError(f"{len(coefs)} coefficients for {n} tasks; give one shared coefficient or {n}")
    return coefs


def _check_like(ref: Vector, other: Vector, what: str) -> None:
    if len(other) != len(ref):
        raise PaintRayError(f"{what} has {len(other)} tensors, expected {len(ref)}")
    for j, (a, b) in enumerate(zip(ref, other)):
        if a.shape != b.shape:
            raise PaintRayError(f"{what} tensor {j} has shape {tuple(b.shape)}, expected {tuple(a.shape)}")
