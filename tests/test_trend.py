"""Depth trend statistics, last-N means, bootstrap coverage, Gaussian baseline."""

import math

import numpy as np
import pytest
from scipy import stats

from condense.metrics import bootstrap_mean_cos, depth_trend, gaussian_baseline, last_layers_means


def test_monotone_and_reversed_trends():
    layers = np.arange(10)
    assert depth_trend(layers, layers**2) == {"spearman": pytest.approx(1.0), "kendall": pytest.approx(1.0)}
    assert depth_trend(layers, -np.exp(layers)) == {"spearman": pytest.approx(-1.0), "kendall": pytest.approx(-1.0)}


def test_trend_matches_scipy_with_ties_and_nan_for_degenerate():
    layers = np.arange(8)
    values = np.array([0.1, 0.3, 0.2, 0.2, 0.5, 0.4, 0.6, 0.6])
    t = depth_trend(layers, values)
    assert t["kendall"] == pytest.approx(stats.kendalltau(layers, values).statistic)  # tau-b
    assert t["spearman"] == pytest.approx(stats.spearmanr(layers, values).statistic)
    assert math.isnan(depth_trend(layers[:2], values[:2])["spearman"])
    assert math.isnan(depth_trend(layers, np.ones(8))["kendall"])


def test_last_layer_means():
    out = last_layers_means(np.arange(10.0))
    assert out["last1"] == 9 and out["last3"] == 8 and out["last5"] == 7
    assert out["last_half"] == pytest.approx(7.0)


def test_bootstrap_ci_covers_true_mean_at_nominal_rate():
    """Per-sequence pair means drawn from a known distribution; the 90% CI must cover ~90% of the time."""
    rng = np.random.default_rng(0)
    true_mean, covered, trials = 0.3, 0, 200
    for _ in range(trials):
        counts = rng.integers(50, 150, size=(1, 40)).astype(float)
        sums = (true_mean + rng.normal(0, 0.2, size=(1, 40))) * counts
        ci = bootstrap_mean_cos(np.array([0]), sums, counts, resamples=300, seed=int(rng.integers(1e9)),
                                level=0.9)["mean_cos_ci"][0]
        covered += ci[0] <= true_mean <= ci[1]
    assert 0.84 <= covered / trials <= 0.96


def test_bootstrap_trend_ci_is_seeded_and_brackets_estimate():
    rng = np.random.default_rng(1)
    layers = np.arange(6)
    counts = np.full((6, 30), 100.0)
    sums = (layers[:, None] * 0.1 + rng.normal(0, 0.05, (6, 30))) * counts
    a = bootstrap_mean_cos(layers, sums, counts, 100, seed=3)
    b = bootstrap_mean_cos(layers, sums, counts, 100, seed=3)
    assert a["spearman_ci"] == b["spearman_ci"]
    np.testing.assert_array_equal(a["mean_cos_ci"], b["mean_cos_ci"])
    point = sums.sum(1) / counts.sum(1)
    assert np.all(a["mean_cos_ci"][:, 0] <= point) and np.all(point <= a["mean_cos_ci"][:, 1])
    assert a["spearman_ci"][1] == pytest.approx(1.0)


def test_gaussian_baseline_closed_forms_and_simulation():
    base = gaussian_baseline(n_tokens=128, dim=64, seed=0)
    assert base["mean_cos"] == 0 and base["std_cos"] == pytest.approx(1 / 8)
    assert base["mean_pair_angle_deg"] == 90
    # simulated quantiles agree with the normal approximation N(0, 1/D)
    assert base["q95_cos"] == pytest.approx(1.645 / 8, abs=0.02)
    assert base["mev"] < 0.05 and base["effective_rank"] > 40
    assert gaussian_baseline(128, 64, seed=0) == base


def test_last_half_of_an_odd_number_of_layers_rounds_down():
    out = last_layers_means(np.arange(7.0))
    assert out["last_half"] == pytest.approx(5.0)  # the last 3 of 7
    assert last_layers_means(np.array([0.25]))["last_half"] == 0.25


def test_bootstrap_resamples_pooled_sums_over_pooled_counts():
    """Long sequences condensed (mean 0.8), short ones not (mean 0): the pooled mean is ~0.799 and every
    resample's sum / count stays near it; a mean of per-sequence means would sit near 0.4."""
    rng = np.random.default_rng(2)
    counts = np.array([[1000.0] * 10 + [1.0] * 10])
    sums = np.concatenate([0.8 + rng.normal(0, 0.001, 10), np.zeros(10)])[None] * counts
    point = sums.sum() / counts.sum()
    low, high = bootstrap_mean_cos(np.array([0]), sums, counts, resamples=400, seed=0)["mean_cos_ci"][0]
    # any resample holding k long sequences has mean ~ 800 k / (1000 k + 20 - k), in [0.79, 0.8] for k >= 2
    assert 0.79 < low <= point <= high < 0.8


def test_bootstrap_keeps_layers_paired():
    """Every sequence rises by 0.01 per layer on top of a large sequence effect: a resample that draws
    the same sequences for every layer rises too (Spearman 1); independent draws per layer would not."""
    rng = np.random.default_rng(3)
    base = rng.uniform(0, 0.5, 30)
    layers = np.arange(5)
    counts = np.full((5, 30), 100.0)
    sums = (base[None] + 0.01 * layers[:, None]) * counts
    out = bootstrap_mean_cos(layers, sums, counts, resamples=200, seed=1)
    assert out["spearman_ci"] == pytest.approx((1.0, 1.0)) and out["kendall_ci"] == pytest.approx((1.0, 1.0))


def test_gaussian_baseline_cone_angle_matches_the_large_n_limit():
    # N isotropic unit vectors: |sum u| ~ sqrt(N), so each is at arccos(~1/sqrt(N)) from the mean direction
    base = gaussian_baseline(n_tokens=256, dim=512, seed=0)
    assert base["cone_half_angle_mean_deg"] == pytest.approx(math.degrees(math.acos(1 / math.sqrt(256))), abs=0.5)
    assert base["hf_lf_ratio"] > 1  # no shared mean token: the high-frequency part dominates


@pytest.mark.parametrize("seed", range(20))
def test_trend_matches_scipy_on_random_ties_in_both_variables(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 60))
    layers = rng.integers(0, max(2, n // 2), n).astype(float)  # repeated layers: ties in x too
    values = rng.integers(0, 6, n) / 5.0
    values[rng.random(n) < 0.1] = np.nan
    t, ok = depth_trend(layers, values), np.isfinite(values)
    if ok.sum() < 3 or np.ptp(values[ok]) == 0 or np.ptp(layers[ok]) == 0:
        return
    assert t["spearman"] == pytest.approx(stats.spearmanr(layers[ok], values[ok]).statistic, abs=1e-12)
    assert t["kendall"] == pytest.approx(stats.kendalltau(layers[ok], values[ok], variant="b").statistic, abs=1e-12)


def test_a_nan_layer_is_left_out_of_the_trend():
    """With --nonfinite exclude a layer can be NaN (no token survived): the trend is that of the others."""
    layers = np.arange(6)
    values = np.array([0.1, 0.3, np.nan, 0.2, 0.5, 0.6])
    got = depth_trend(layers, values)
    ok = ~np.isnan(values)
    assert got["spearman"] == pytest.approx(stats.spearmanr(layers[ok], values[ok]).statistic)
    assert got["kendall"] == pytest.approx(stats.kendalltau(layers[ok], values[ok]).statistic)
    assert 0 < got["kendall"] < got["spearman"] < 1
