"""log10 of the sphere fraction inside a cone: closed forms in 2 and 3 dimensions, symmetry, scale."""

import math

import numpy as np
import pytest

from condense.metrics import cone_log10_sphere_fraction


@pytest.mark.parametrize("angle", [5.0, 30.0, 90.0, 150.0])
def test_two_and_three_dimensions(angle):
    a = math.radians(angle)
    assert cone_log10_sphere_fraction(angle, 2) == pytest.approx(math.log10(a / math.pi))
    assert cone_log10_sphere_fraction(angle, 3) == pytest.approx(math.log10((1 - math.cos(a)) / 2), abs=1e-6)


@pytest.mark.parametrize("dim", [4, 50, 768, 4096])
def test_hemisphere_is_half_and_monotone(dim):
    assert cone_log10_sphere_fraction(90.0, dim) == pytest.approx(math.log10(0.5), abs=1e-6)
    values = [cone_log10_sphere_fraction(a, dim) for a in (10, 30, 60, 89)]
    assert values == sorted(values)


def test_high_dimension_does_not_underflow_and_matches_monte_carlo():
    # large-D asymptote: fraction ~ sin^(D-1) a / (cos a * sqrt(2 pi D))
    a, d = math.radians(30.0), 4096
    asymptote = (d - 1) * math.log10(math.sin(a)) - math.log10(math.cos(a) * math.sqrt(2 * math.pi * d))
    assert cone_log10_sphere_fraction(30.0, d) == pytest.approx(asymptote, abs=0.01)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200_000, 8))
    frac = (x[:, 0] / np.linalg.norm(x, axis=1) > math.cos(math.radians(50))).mean()
    assert cone_log10_sphere_fraction(50.0, 8) == pytest.approx(math.log10(frac), abs=0.02)


def test_degenerate_angles():
    assert cone_log10_sphere_fraction(0.0, 10) == -math.inf
    assert cone_log10_sphere_fraction(180.0, 10) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError):
        cone_log10_sphere_fraction(10.0, 1)
