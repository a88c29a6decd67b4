"""Multi-task combiners on small hand-made task vectors; every expected value is worked out by hand."""
from __future__ import annotations

import pytest
import torch

from paint_ray.errors import PaintRayError
from paint_ray.weights.interpolate import add_task_vectors_, interpolate_
from paint_ray.weights.merging import COMBINERS, as_theta, merge_task_vectors, task_vectors


def t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def assert_vector(got: list[torch.Tensor], expected: list[list]) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, t(e))


# Two task vectors, each one (2,3) tensor and one (4,) tensor.
TAU1 = [t([[1, 2, 3], [4, 5, 6]]), t([1, 0, -1, 2])]
TAU2 = [t([[3, 2, 1], [0, -1, 2]]), t([-1, 2, 1, 0])]

# Three task vectors for sign election and the disjoint mean (no trimming: density 1).
SIGN = [
    [t([[1, 1, 0], [2, -1, 3]]), t([3, 0, 6, -2])],
    [t([[2, 3, 0], [-4, -1, 1]]), t([5, 0, -2, -2])],
    [t([[-5, 2, 0], [1, 4, 2]]), t([-1, 0, 0, 1])],
]


def test_presets_are_the_documented_methods():
    assert set(COMBINERS) == {"average", "task_arithmetic", "ties", "dare_linear", "dare_ties", "tsv", "iso_c",
                              "iso_cts"}


def test_task_vectors_are_differences_from_theta0():
    theta0 = [t([[1, 1, 1], [1, 1, 1]]), t([0, 0, 0, 0])]
    theta1 = [t([[2, 3, 4], [5, 6, 7]]), t([1, 0, -1, 2])]
    (tau,) = task_vectors(theta0, [theta1])
    assert_vector(tau, [[[1, 2, 3], [4, 5, 6]], [1, 0, -1, 2]])


def test_average_is_the_mean():
    assert_vector(merge_task_vectors([TAU1, TAU2], "average"), [[[2, 2, 2], [2, 2, 4]], [0, 1, 0, 1]])


def test_average_of_three():
    tau3 = [t([[2, 2, 2], [2, 2, 1]]), t([3, 1, 3, 1])]
    assert_vector(merge_task_vectors([TAU1, TAU2, tau3], "average"), [[[2, 2, 2], [2, 2, 3]], [1, 1, 1, 1]])


def test_task_arithmetic_shared_coefficient():
    # 0.25 * (τ1 + τ2) = 0.25 * ([[4,4,4],[4,4,8]], [0,2,0,2])
    got = merge_task_vectors([TAU1, TAU2], "task_arithmetic", coefficients=0.25)
    assert_vector(got, [[[1, 1, 1], [1, 1, 2]], [0, 0.5, 0, 0.5]])


def test_task_arithmetic_per_task_coefficients():
    # τ1 − 2·τ2
    got = merge_task_vectors([TAU1, TAU2], "task_arithmetic", coefficients=[1, -2])
    assert_vector(got, [[[-5, -2, 1], [4, 7, 2]], [3, -4, -3, 2]])


def test_task_arithmetic_default_is_the_plain_sum_and_accepts_one_task():
    assert_vector(merge_task_vectors([TAU1, TAU2], "task_arithmetic"), [[[4, 4, 4], [4, 4, 8]], [0, 2, 0, 2]])
    assert_vector(merge_task_vectors([TAU1], "task_arithmetic", coefficients=3), [[[3, 6, 9], [12, 15, 18]],
                                                                                 [3, 0, -3, 6]])


def test_ties_trim_removes_small_entries_per_tensor():
    # density 0.5: the (4,) tensors keep 2 of 4 entries, the (2,3) tensors 3 of 6 — per tensor, so the
    # (2,3) tensors, all far smaller than the (4,) ones, keep their own top half.
    tau1 = [t([[0.01, -0.02, 0.03], [0.04, 0.05, -0.06]]), t([4, 0.1, -3, 1])]
    tau2 = [t([[0.02, 0.01, -0.03], [0.05, -0.04, 0.06]]), t([2, 5, 0.2, -1])]
    # trimmed: τ1 → [[0,0,0],[.04,.05,-.06]], [4,0,-3,0];  τ2 → [[0,0,0],[.05,-.04,.06]], [2,5,0,0]
    # (4,): entry 1 is τ2's 5 alone (τ1's 0.1 was trimmed, else the mean would be 2.55); entry 3 is 0
    # (both ±1 trimmed, else + would be elected and give 1).
    # (2,3): (1,1) mass .05−.04 > 0 so only τ1's .05; (1,2) mass 0 elects + so only τ2's .06.
    got = merge_task_vectors([tau1, tau2], "ties", density=0.5)
    assert_vector(got, [[[0, 0, 0], [0.045, 0.05, 0.06]], [3, 5, -3, 0]])


def test_ties_sign_election_is_by_mass_and_mean_is_disjoint():
    # (0,0): 1+2−5 = −2, so the one large negative beats two small positives: −5.
    # (1,1): −1−1+4 = +2, so 4. (1,0): 2−4+1 < 0, so −4. (0,2): all zero, so 0.
    # (4,) entry 0: 3,5,−1 → + → mean of the agreeing 3 and 5 = 4 (not 7/3);
    # entry 2: 6,−2,0 → + → 6 alone (the zero is not counted); entry 3: −2,−2,1 → − → −2.
    got = merge_task_vectors(SIGN, "ties", density=1.0)
    assert_vector(got, [[[-5, 2, 0], [-4, 4, 2]], [4, 0, 6, -2]])


def test_ties_shared_coefficient_scales_the_merge():
    got = merge_task_vectors(SIGN, "ties", coefficients=0.5, density=1.0)
    assert_vector(got, [[[-2.5, 1, 0], [-2, 2, 1]], [2, 0, 3, -1]])


def test_ties_per_task_coefficients_weight_the_election():
    # τ1 counted 4×: (0,0): 4+2−5 = 1 → + → (4+2)/2 = 3; (1,0): 8−4+1 → + → (8+1)/2; (1,1): −4−1+4 → −.
    got = merge_task_vectors(SIGN, "ties", coefficients=[4, 1, 1], density=1.0)
    assert_vector(got, [[[3, 3, 0], [4.5, -2.5, 5]], [8.5, 0, 24, -5]])


def test_ties_keeps_a_one_entry_tensor():
    got = merge_task_vectors([[t([2.0])], [t([1.0])]], "ties", density=0.2)
    assert_vector(got, [[1.5]])


def test_merged_vector_applied_to_theta0():
    theta0 = [t([[1, 1, 1], [1, 1, 1]]), t([0, 0, 0, 0])]
    merged = merge_task_vectors([TAU1, TAU2], "task_arithmetic", coefficients=[1, -2])
    target = [torch.zeros(2, 3, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)]
    add_task_vectors_(target, theta0, [merged], [0.5])
    expected = [[[-1.5, 0, 1.5], [3, 4.5, 2]], [1.5, -2, -1.5, 1]]
    assert_vector(target, expected)
    # The same model through the α machinery: θ0 + v as θ1, interpolated at α = 0.5.
    target2 = [torch.zeros_like(x) for x in target]
    interpolate_(target2, theta0, as_theta(theta0, merged), 0.5)
    assert_vector(target2, expected)


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_unknown_method_names_valid_choices():
    with pytest.raises(PaintRayError) as exc:
        merge_task_vectors([TAU1, TAU2], "tie")
    msg = one_line(exc)
    assert "'tie'" in msg and "did you mean 'ties'" in msg
    assert "valid: average, dare_linear, dare_ties, iso_c, iso_cts, task_arithmetic, ties, tsv" in msg


def test_wrong_number_of_coefficients():
    with pytest.raises(PaintRayError) as exc:
        merge_task_vectors([TAU1, TAU2], "task_arithmetic", coefficients=[1, 2, 3])
    assert "3 coefficients for 2 tasks" in one_line(exc)


@pytest.mark.parametrize("method", ["average", "ties", "dare_ties", "tsv", "iso_cts"])
def test_multi_task_methods_need_two_tasks(method):
    with pytest.raises(PaintRayError) as exc:
        merge_task_vectors([TAU1], method)
    msg = one_line(exc)
    assert "needs at least 2 tasks" in msg and method in msg


@pytest.mark.parametrize("density", [0.0, -0.1, 1.5])
def test_density_outside_unit_interval(density):
    with pytest.raises(PaintRayError) as exc:
        merge_task_vectors([TAU1, TAU2], "ties", density=density)
    msg = one_line(exc)
    assert f"density {density!r}" in msg and "(0, 1]" in msg


def test_mismatched_shapes():
    with pytest.raises(PaintRayError) as exc:
        merge_task_vectors([TAU1, [t([[1, 2], [3, 4]]), t([0, 0, 0, 0])]], "average")
    assert "shape (2, 2), expected (2, 3)" in one_line(exc)


# ---------------------------------------------------------------- spectral merges: TSV-M, Iso-C, Iso-CTS
# Independent references in numpy, written as the papers' code is (zero-padded blocks, its index arithmetic),
# so the implementation under test (unpadded, torch) is checked against another path to the same formula.

def np_polar(m):
    import numpy as np
    p, _, qh = np.linalg.svd(m, full_matrices=False)
    return p @ qh


def np_tsv(taus):
    """compute_and_sum_svd_mem_reduction (TSV-M's code): blocks of k = int(r/T) triplets in zero-padded
    r-wide U, Σ, V, then U and V orthogonalised by their own SVDs."""
    import numpy as np
    r, n_tasks = min(taus[0].shape), len(taus)
    k = int(r * (1 / n_tasks))
    su, ss, sv = np.zeros((taus[0].shape[0], r)), np.zeros(r), np.zeros((r, taus[0].shape[1]))
    for i, tau in enumerate(taus):
        u, s, vh = np.linalg.svd(tau, full_matrices=False)
        su[:, i * k:(i + 1) * k], ss[i * k:(i + 1) * k], sv[i * k:(i + 1) * k] = u[:, :k], s[:k], vh[:k]
    return np_polar(su) @ np.diag(ss) @ np_polar(sv)


def np_iso_cts(taus, fraction):
    """iso_cts (the Iso-CTS code), index for index."""
    import numpy as np
    shape, t = taus[0].shape, len(taus)
    common = int(min(shape) * fraction)
    specific_total = round((min(shape) - common) / t) * t
    common = min(shape) - specific_total
    u, s, vh = np.linalg.svd(sum(taus), full_matrices=False)
    cu, cs, cv = u[:, :common], s[:common], vh[:common]
    per = int((min(shape) - common) / t)
    U, S, V = np.zeros((shape[0], min(shape))), np.zeros(min(shape)), np.zeros((min(shape), shape[1]))
    for i, w in enumerate(taus):
        ut, st, vt = np.linalg.svd(w - cu @ cu.T @ w, full_matrices=False)
        U[:, i * per:(i + 1) * per], S[i * per:(i + 1) * per], V[i * per:(i + 1) * per] = ut[:, :per], st[:per], vt[:per]
    U[:, t * per:t * per + common], S[t * per:t * per + common], V[t * per:t * per + common] = cu, cs, cv
    return np_polar(U) @ np.diag(np.full_like(S, S.mean())) @ np_polar(V)


def random_taus(n, shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(shape[1], generator=g, dtype=torch.float64)]
            for _ in range(n)]


def test_tsv_by_hand_splits_the_angle_between_task_directions():
    # τ1 = 3·e1e1ᵀ (+ a smaller second direction), τ2 = 2·u2e2ᵀ with u2 = (e1 + e2)/√2; r = 2, T = 2: one
    # triplet each. U = [e1, u2] (45° apart) orthogonalised symmetrically: both turn 22.5° apart from the
    # middle, so polar(U) = [[c, s], [−s, c]] (c, s = cos, sin 22.5°); V = [e1; e2] is already orthogonal.
    import math
    c, s = math.cos(math.pi / 8), math.sin(math.pi / 8)
    tau1 = [t([[3, 0], [0, 1]]), t([1, 3])]
    tau2 = [t([[0, math.sqrt(2)], [0, math.sqrt(2)]]), t([3, 1])]
    got = merge_task_vectors([tau1, tau2], "tsv")
    assert_vector(got, [[[3 * c, 2 * s], [-3 * s, 2 * c]], [2, 2]])      # the bias: the mean, as the paper's code


def test_tsv_keeps_each_of_orthogonal_low_rank_task_matrices():
    # Tasks with mutually orthogonal column and row spaces, each of rank ≤ r/T: nothing interferes, so
    # TSV-M is their plain sum (each task kept exactly), and it equals task arithmetic on the matrix.
    g = torch.Generator().manual_seed(1)
    q_left, _ = torch.linalg.qr(torch.randn(8, 8, generator=g, dtype=torch.float64))
    q_right, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    taus = []
    for i in range(3):                             # r = 6, T = 3: two directions each
        cols, rows = q_left[:, 2 * i:2 * i + 2], q_right[:, 2 * i:2 * i + 2]
        taus.append([cols @ torch.diag(t([3.0 + i, 1.0 + i])) @ rows.T, t([i, 0.0, -i, 1, 2, 3])])
    got = merge_task_vectors(taus, "tsv")
    torch.testing.assert_close(got[0], sum(tau[0] for tau in taus))
    torch.testing.assert_close(got[1], sum(tau[1] for tau in taus) / 3)


@pytest.mark.parametrize("shape,n", [((7, 5), 2), ((5, 9), 3), ((6, 6), 4)])
def test_tsv_matches_the_reference_code(shape, n):
    taus = random_taus(n, shape)
    got = merge_task_vectors(taus, "tsv")
    torch.testing.assert_close(got[0], torch.from_numpy(np_tsv([tau[0].numpy() for tau in taus])))
    torch.testing.assert_close(got[1], torch.stack([tau[1] for tau in taus]).mean(0))


def test_iso_c_by_hand_flattens_the_spectrum_of_the_sum():
    # Δ = diag(3, 1) + diag(1, 1) = diag(4, 2): σ = (4, 2), mean 3 -> diag(3, 3); bias: mean of (1, 3) and (3, 1).
    got = merge_task_vectors([[t([[3, 0], [0, 1]]), t([1, 3])], [t([[1, 0], [0, 1]]), t([3, 1])]], "iso_c")
    assert_vector(got, [[[3, 0], [0, 3]], [2, 2]])


@pytest.mark.parametrize("n", [1, 2, 3])
def test_iso_c_is_the_mean_singular_value_times_the_polar_factor_of_the_sum(n):
    # U mean(σ) Vᵀ = (‖Δ‖_* / r) · Δ (ΔᵀΔ)^(-1/2): computed here by an eigendecomposition, not an SVD
    taus = random_taus(n, (6, 4), seed=n)
    delta = sum(tau[0] for tau in taus)
    evals, evecs = torch.linalg.eigh(delta.T @ delta)
    polar = delta @ evecs @ torch.diag(evals.rsqrt()) @ evecs.T
    nuclear = evals.sqrt().sum()
    got = merge_task_vectors(taus, "iso_c")
    torch.testing.assert_close(got[0], nuclear / 4 * polar)
    sv = torch.linalg.svdvals(got[0])
    torch.testing.assert_close(sv, torch.full_like(sv, float(nuclear) / 4))    # isotropic, same nuclear norm


def test_iso_c_of_one_isotropic_task_is_that_task_and_scales_with_it():
    # One task whose matrix is already isotropic (c·Q, Q orthogonal) comes back unchanged; a scaled copy
    # of any task gives the scaled merge (only isotropic tasks are fixed points: Iso-C flattens the rest).
    q, _ = torch.linalg.qr(torch.randn(5, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    (got,) = merge_task_vectors([[2.5 * q]], "iso_c")
    torch.testing.assert_close(got, 2.5 * q)
    taus = random_taus(1, (5, 3), seed=4)
    base = merge_task_vectors(taus, "iso_c")
    scaled = merge_task_vectors(taus, "iso_c", coefficients=0.3)
    torch.testing.assert_close(scaled[0], 0.3 * base[0])
    torch.testing.assert_close(merge_task_vectors([taus[0], taus[0]], "iso_c")[0], 2 * base[0])   # Σ τᵢ


@pytest.mark.parametrize("shape,n,fraction", [((8, 6), 2, 0.8), ((6, 10), 3, 0.5), ((9, 9), 2, 0.3),
                                              ((7, 5), 2, 0.8)])
def test_iso_cts_matches_the_reference_code(shape, n, fraction):
    taus = random_taus(n, shape, seed=7)
    got = merge_task_vectors(taus, "iso_cts", common_fraction=fraction)
    torch.testing.assert_close(got[0], torch.from_numpy(np_iso_cts([tau[0].numpy() for tau in taus], fraction)))
    torch.testing.assert_close(got[1], torch.stack([tau[1] for tau in taus]).mean(0))


def test_iso_cts_with_the_whole_rank_common_is_iso_c():
    taus = random_taus(3, (8, 5), seed=11)
    torch.testing.assert_close(merge_task_vectors(taus, "iso_cts", common_fraction=1.0)[0],
                               merge_task_vectors(taus, "iso_c")[0])


def test_iso_cts_gives_each_task_its_own_directions_outside_the_common_space():
    # 6x6, T = 2, fraction 0.5: int(6·0.5) = 3 common, then the task-specific 3 is rounded to a multiple of T
    # (round(1.5)·2 = 4), so 2 common directions (the sum's top two) and 2 per task (each task's own, outside
    # them). Every direction is kept at the mean of exactly those six σ. Without the rounding (3 common, 1 per
    # task) one direction of each task would be lost and the mean would be (20 + 18 + 1 + 0.9 + 0.8) / 5.
    e = torch.eye(6, dtype=torch.float64)
    big = 10 * (e[:, :1] @ e[:1]) + 9 * (e[:, 1:2] @ e[1:2])           # shared, dominant: the common space
    tau1 = [big + 1.0 * (e[:, 2:3] @ e[2:3]) + 0.9 * (e[:, 3:4] @ e[3:4]), t([0.0] * 6)]
    tau2 = [big + 0.8 * (e[:, 4:5] @ e[4:5]) + 0.7 * (e[:, 5:6] @ e[5:6]), t([0.0] * 6)]
    got = merge_task_vectors([tau1, tau2], "iso_cts", common_fraction=0.5)[0]
    mean = (20 + 18 + 1.0 + 0.9 + 0.8 + 0.7) / 6                       # σ of the common space and of each task
    torch.testing.assert_close(got, mean * e)


def test_spectral_merges_average_tensors_that_are_not_matrices():
    # a 4-D convolution and a 1-D bias are averaged (the papers' rule), also under per-task coefficients
    g = torch.Generator().manual_seed(5)
    taus = [[torch.randn(2, 3, 2, 2, generator=g, dtype=torch.float64), torch.randn(4, generator=g, dtype=torch.float64)]
            for _ in range(2)]
    for method in ("tsv", "iso_c", "iso_cts"):
        got = merge_task_vectors(taus, method, coefficients=[1.0, 3.0])
        torch.testing.assert_close(got[0], (taus[0][0] + 3 * taus[1][0]) / 2)
        torch.testing.assert_close(got[1], (taus[0][1] + 3 * taus[1][1]) / 2)


def test_spectral_merges_keep_float32_and_run_on_a_model_shaped_vector():
    taus = [[torch.randn(32, 16), torch.randn(16)] for _ in range(2)]
    for method in ("tsv", "iso_c", "iso_cts"):
        got = merge_task_vectors(taus, method)
        assert [g.dtype for g in got] == [torch.float32, torch.float32] and got[0].shape == (32, 16)


# ---------------------------------------------------------------- DARE

def test_dare_drops_and_rescales_each_entry_and_is_unbiased():
    g = torch.Generator().manual_seed(0)
    tau = [torch.randn(200, 100, generator=g, dtype=torch.float64)]
    got = merge_task_vectors([tau], "dare_linear", density=0.25, seed=3)[0]
    kept = got != 0
    torch.testing.assert_close(got[kept], tau[0][kept] / 0.25)        # survivors rescaled by 1/density
    assert abs(kept.double().mean().item() - 0.25) < 0.01             # 20,000 draws: within 4 σ of 0.25
    assert torch.equal(merge_task_vectors([tau], "dare_linear", density=0.25, seed=3)[0], got)   # seeded
    assert not torch.equal(merge_task_vectors([tau], "dare_linear", density=0.25, seed=4)[0], got)
    # unbiased: over many seeds the mean of the drops is τ itself
    small = [t([[1.0, -2.0], [0.5, 4.0]])]
    mean = sum(merge_task_vectors([small], "dare_linear", density=0.5, seed=s)[0] for s in range(4000)) / 4000
    torch.testing.assert_close(mean, small[0], atol=0.2, rtol=0)


def test_dare_masks_differ_between_tasks_and_dare_ties_elects_signs():
    tau = [torch.ones(50, 40, dtype=torch.float64)]
    linear = merge_task_vectors([tau, tau], "dare_linear", density=0.5)[0]
    # two different masks: entries of 0 (both dropped), 2 (one kept) and 4 (both kept)
    assert set(linear.unique().tolist()) == {0.0, 2.0, 4.0}
    neg = [-0.5 * torch.ones(50, 40, dtype=torch.float64)]
    tied = merge_task_vectors([tau, neg], "dare_ties", density=1.0)[0]
    torch.testing.assert_close(tied, torch.ones(50, 40, dtype=torch.float64))   # + elected, −0.5 dropped, summed


@pytest.mark.parametrize("fraction", [-0.1, 1.5])
def test_common_fraction_outside_unit_interval(fraction):
    with pytest.raises(PaintRayError) as exc:
        merge_task_vectors([TAU1, TAU2], "iso_cts", common_fraction=fraction)
    msg = one_line(exc)
    assert f"common fraction {fraction!r}" in msg and "[0, 1]" in msg
