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
    assert set(COMBINERS) == {"average", "task_arithmetic", "ties"}


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
    assert "'tie'" in msg and "did you mean 'ties'" in msg and "average, task_arithmetic, ties" in msg


def test_wrong_number_of_coefficients():
    with pytest.raises(PaintRayError) as exc:
        merge_task_vectors([TAU1, TAU2], "task_arithmetic", coefficients=[1, 2, 3])
    assert "3 coefficients for 2 tasks" in one_line(exc)


@pytest.mark.parametrize("method", ["average", "ties"])
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
