"""Property tests (hypothesis): invariances and bounds of the metrics, and the result round trip."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from condense.metrics import (
    PooledCosineAccumulator,
    TokenGeometryAccumulator,
    cone_half_angles_deg,
    effective_rank,
    max_explainable_variance,
    mean_pairwise_angle_deg,
    mean_pairwise_cosine,
    pairwise_cosine,
    singular_value_entropy,
)
from condense.results import HIST_EDGES, ProbeResult, RESULT_FORMAT

matrices = st.tuples(st.integers(2, 24), st.integers(2, 40), st.integers(0, 2**31 - 1), st.floats(-3, 3))


def make(n, d, seed, offset):
    x = np.random.default_rng(seed).standard_normal((n, d)) + offset  # offset: a shared direction, i.e. a cone
    return x


@given(matrices)
def test_scaling_each_token_changes_nothing(m):
    x = make(*m)
    scales = np.random.default_rng(m[2] + 1).uniform(0.01, 100, size=(len(x), 1))
    assert mean_pairwise_cosine(x * scales) == pytest.approx(mean_pairwise_cosine(x), abs=1e-9)
    assert mean_pairwise_angle_deg(x * scales) == pytest.approx(mean_pairwise_angle_deg(x), abs=1e-6)
    np.testing.assert_allclose(cone_half_angles_deg(x * scales), cone_half_angles_deg(x), atol=1e-6)


@given(matrices)
def test_permuting_tokens_changes_nothing(m):
    x = make(*m)
    perm = np.random.default_rng(m[2] + 2).permutation(len(x))
    assert mean_pairwise_cosine(x[perm]) == pytest.approx(mean_pairwise_cosine(x), abs=1e-9)
    np.testing.assert_allclose(cone_half_angles_deg(x[perm]), cone_half_angles_deg(x)[perm], atol=1e-6)
    assert max_explainable_variance(x[perm]) == pytest.approx(max_explainable_variance(x), rel=1e-9)


@given(matrices)
def test_bounds(m):
    x = make(*m)
    n, d = x.shape
    assert -1 <= mean_pairwise_cosine(x) <= 1
    assert 0 <= mean_pairwise_angle_deg(x) <= 180
    angles = cone_half_angles_deg(x)
    assert np.all((angles >= 0) & (angles <= 180))
    assert 1 / min(n, d) - 1e-12 <= max_explainable_variance(x) <= 1 + 1e-12
    assert 0 <= singular_value_entropy(x) <= math.log(min(n, d)) + 1e-9
    assert 1 - 1e-9 <= effective_rank(x) <= min(n, d) + 1e-9


@given(st.integers(1, 4), st.integers(2, 16), st.integers(2, 12), st.integers(0, 2**31 - 1))
@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
def test_accumulator_quantiles_are_ordered_and_bounded(b, s, d, seed):
    x = torch.tensor(np.random.default_rng(seed).standard_normal((b, s, d)), dtype=torch.float32)
    acc = PooledCosineAccumulator()
    acc.update(x / x.norm(dim=-1, keepdim=True), torch.ones(b, s, dtype=torch.bool))
    cols = acc.finalize().columns
    qs = [cols[f"q{q:02d}_cos"] for q in (5, 25, 50, 75, 95)]
    assert qs == sorted(qs) and -1 <= qs[0] and qs[-1] <= 1
    assert cols["std_cos"] >= 0 and cols["n_pairs"] == b * s * (s - 1) / 2


@given(st.integers(1, 6), st.integers(0, 2**31 - 1), st.booleans())
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None, max_examples=25)
def test_result_round_trip(tmp_path, n_layers, seed, with_massive):
    rng = np.random.default_rng(seed)
    density = rng.uniform(0, 5, size=(n_layers, 128))
    layers = pd.DataFrame({
        "layer": np.arange(n_layers), "layer_fraction": np.linspace(0, 1, n_layers),
        "mean_cos": rng.uniform(-1, 1, n_layers), "std_cos": rng.uniform(0, 1, n_layers),
        "massive_positions": ["0:3;5:1" if with_massive else ""] * n_layers,
    })
    trend = {"spearman": float(rng.uniform(-1, 1)), "kendall": math.nan}
    result = ProbeResult(layers, density, trend, {"format": RESULT_FORMAT, "model": "m", "trend": trend})
    folder = tmp_path / f"r{seed}"
    result.save(folder, heatmap=False)
    back = ProbeResult.load(folder)
    np.testing.assert_allclose(back.histograms, density)
    np.testing.assert_allclose(back.layers["mean_cos"], layers["mean_cos"], rtol=1e-9)
    assert list(back.layers["massive_positions"]) == list(layers["massive_positions"])
    assert back.trend["spearman"] == pytest.approx(trend["spearman"]) and math.isnan(back.trend["kendall"])
    np.testing.assert_array_equal(np.load(folder / "histograms.npz")["bin_edges"], HIST_EDGES)


@given(st.integers(2, 12), st.integers(2, 16), st.integers(0, 2**31 - 1))
@settings(deadline=None, max_examples=40)
def test_parallel_vectors_stay_inside_minus_one_one(n, d, seed):
    """Rounding makes u.u exceed 1 for about half of all directions: cosines are clipped, so angles are
    0 and never NaN (arccos of 1 + 1e-16 is NaN)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(d) * rng.uniform(0.01, 100, size=(n, 1))
    c = pairwise_cosine(x).numpy()
    assert c.max() <= 1.0 and c.min() >= 1.0 - 1e-12
    assert mean_pairwise_angle_deg(x) == pytest.approx(0.0, abs=1e-5)
    assert np.all(cone_half_angles_deg(x) < 1e-5)
    t = torch.tensor(x[None])
    acc = PooledCosineAccumulator()
    acc.update(t / t.norm(dim=-1, keepdim=True), torch.ones(1, n, dtype=torch.bool))
    cols = acc.finalize().columns
    assert cols["mean_pair_angle_deg"] == pytest.approx(0.0, abs=1e-5) and cols["q95_cos"] <= 1.0
    for dtype in (torch.float32, torch.float64):
        geometry = TokenGeometryAccumulator(d, spectrum_seqs=0)
        geometry.update(t.to(dtype), torch.ones(1, n, dtype=torch.bool), torch.arange(n)[None])
        angles = geometry.finalize()
        assert angles["cone_half_angle_mean_deg"] < 0.05 and angles["cone_half_angle_max_deg"] < 0.05
