"""IsoScore, centred MEV, TwoNN and cross-text cosines against their references and closed forms."""

import math

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from condense.metrics import max_explainable_variance
from condense.metrics import isotropy
from condense.metrics.isotropy import (
    cross_pair_index,
    cross_text_cosine_histogram,
    cross_text_cosines,
    gauss_isoscore,
    gauss_mev_centred,
    gauss_twonn_id,
    isoscore,
    mev_centred,
    sample_measures,
    twonn_id,
)
from condense.metrics.streaming import FINE_BINS, HIST_BINS


def reference_isoscore(points: np.ndarray) -> float:
    """Rudman et al. 2022's steps, transcribed: the reference takes points as columns (dims x samples)."""
    points = points.T
    n = points.shape[0]
    # Step 2: reorient the points onto their principal axes (all n of them, as PCA(n_components=n))
    centred = points - points.mean(axis=1, keepdims=True)
    _, axes = np.linalg.eigh(np.cov(points))
    reoriented = axes.T @ centred
    # Step 3: the variance vector, the diagonal of the reoriented points' covariance (np.cov: ddof 1)
    cov_diag = np.cov(reoriented)[np.diag_indices(n)]
    # Step 4: rescale it to norm sqrt(n)
    cov_diag_normalized = cov_diag * np.sqrt(n) / np.linalg.norm(cov_diag)
    # Step 5: the isotropy defect, the distance from the identity's diagonal, normalised to [0, 1]
    isotropy_defect = np.linalg.norm(cov_diag_normalized - np.ones(n)) / np.sqrt(2 * (n - np.sqrt(n)))
    # Step 6: the fraction of dimensions used, phi
    phi = (n - isotropy_defect**2 * (n - np.sqrt(n))) ** 2 / n**2
    # Step 7: IsoScore, iota
    return (n * phi - 1) / (n - 1)


def anisotropic(n: int, dim: int, seed: int) -> np.ndarray:
    """Gaussian rows with spread-out variances, a rotation and a large common mean."""
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    scales = np.geomspace(10.0, 0.1, dim)
    return (rng.standard_normal((n, dim)) * scales) @ rotation.T + 30.0


@pytest.mark.parametrize("n, dim", [(400, 12), (300, 40), (25, 60), (7, 7)])
def test_isoscore_matches_transcription_of_reference(n, dim):
    x = anisotropic(n, dim, seed=n + dim)
    assert isoscore(x) == pytest.approx(reference_isoscore(x), rel=1e-9, abs=1e-12)
    assert isoscore(torch.as_tensor(x, dtype=torch.float32)) == pytest.approx(reference_isoscore(x), rel=1e-4)


def test_isoscore_closed_forms():
    dim = 10
    for k in (1, 3, dim):  # +-e_1..e_k, equal variance in k of dim directions: PR = k
        eye = np.eye(dim)[:k]
        assert isoscore(np.concatenate([eye, -eye]) * 4.0 + 1.5) == pytest.approx((k - 1) / (dim - 1), abs=1e-12)
    assert math.isnan(isoscore(np.ones((5, 3))))
    assert math.isnan(isoscore(np.ones((1, 3))))


def test_gaussian_isoscore_bias_follows_its_expectation():
    # Wishart with k - 1 degrees of freedom: E tr(C)^2 / E |C|_F^2 = (k - 1) d / (k + d)
    for k, dim in [(1000, 4096), (300, 100), (100, 300)]:
        expected = ((k - 1) * dim / (k + dim) - 1) / (dim - 1)
        assert gauss_isoscore(k, dim) == pytest.approx(expected, rel=0.01)
    assert gauss_isoscore(1000, 4096) == pytest.approx(0.196, abs=0.005)  # the "about 0.2"
    trend = [gauss_isoscore(k, 20) for k in (30, 100, 1000, 20000)]
    assert trend == sorted(trend) and trend[-1] > 0.99


def test_gaussian_centred_mev_sits_at_the_marchenko_pastur_edge():
    # largest covariance eigenvalue of k - 1 degrees of freedom ~ (1 + sqrt(dim / (k - 1)))^2, trace ~ dim
    for k, dim in [(1024, 576), (1000, 100), (300, 1000), (2000, 50)]:
        edge = (1 + math.sqrt(dim / (k - 1))) ** 2 / dim
        assert gauss_mev_centred(k, dim) == pytest.approx(edge, rel=0.05), (k, dim)
        assert gauss_mev_centred(k, dim) > 1.2 / dim  # above the naive 1/D, by more as D/K grows


def test_gaussian_baselines_are_cached_and_seeded():
    functions = (gauss_isoscore, gauss_mev_centred, gauss_twonn_id)
    for f in functions:
        f.cache_clear()
    first = [f(200, 30) for f in functions]
    assert [f(200, 30) for f in functions] == first
    assert all(f.cache_info().hits == 1 for f in functions)
    x = torch.randn(200, 30, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert [f(200, 30, seed=5) for f in functions] == [isoscore(x), mev_centred(x), twonn_id(x)]


@pytest.mark.parametrize("n, dim", [(300, 20), (30, 200), (700, 600), (600, 700)])
def test_mev_centred_matches_covariance_eigenvalues(n, dim):
    x = anisotropic(n, dim, seed=n)
    eig = np.linalg.eigvalsh(np.cov(x, rowvar=False))
    assert mev_centred(x) == pytest.approx(eig[-1] / eig.sum(), rel=1e-9)


def test_mev_centred_is_not_the_uncentred_mev():
    a, b = 3.0, 1.0
    x = np.array([[a, 0], [-a, 0], [0, b], [0, -b]]) + np.array([100.0, 0.0])
    assert mev_centred(x) == pytest.approx(a**2 / (a**2 + b**2), abs=1e-12)
    assert max_explainable_variance(x) > 0.99  # the mean's direction dominates the uncentred one
    assert math.isnan(mev_centred(np.ones((4, 3))))


def reference_twonn(x: np.ndarray, discard_fraction: float = 0.1) -> float:
    """TwoNN written directly: k-d tree neighbours, numpy least squares through the origin."""
    distances, _ = cKDTree(x).query(x, k=3)  # column 0 is the point itself
    r1, r2 = distances[:, 1], distances[:, 2]
    mu = np.sort(r2[r1 > 0] / r1[r1 > 0])
    n = len(mu)
    m = int(n * (1 - discard_fraction))
    x_fit = np.log(mu[:m])[:, None]
    y_fit = -np.log(1 - np.arange(1, m + 1) / n)
    return float(np.linalg.lstsq(x_fit, y_fit, rcond=None)[0][0])


@pytest.mark.parametrize("n, dim", [(1000, 3), (700, 12), (1300, 40)])
def test_twonn_matches_direct_implementation(n, dim):
    x = anisotropic(n, dim, seed=dim)
    near = x[30:40].copy()
    near[:, 1:] += 0.01  # ties in the first coordinate only: not duplicates
    x = np.concatenate([x, x[:25], x[:5], near])  # duplicates: r1 = 0 for them, they still neighbour others
    assert twonn_id(x) == pytest.approx(reference_twonn(x), rel=1e-9)
    assert twonn_id(x, discard_fraction=0.3) == pytest.approx(reference_twonn(x, 0.3), rel=1e-9)


def embed(points: np.ndarray, dim: int, seed: int) -> np.ndarray:
    basis, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, points.shape[1])))
    return points @ basis.T + 5.0


def test_twonn_reads_known_dimensions():
    rng = np.random.default_rng(3)
    plane = embed(rng.uniform(-1, 1, (2000, 2)), 50, seed=1)
    assert twonn_id(plane) == pytest.approx(2.0, abs=0.15)
    sphere = rng.standard_normal((3000, 6))
    sphere = embed(sphere / np.linalg.norm(sphere, axis=1, keepdims=True), 64, seed=2)  # S^5
    assert twonn_id(sphere) == pytest.approx(5.0, abs=0.4)
    assert math.isnan(twonn_id(plane[:2]))
    with pytest.raises(ValueError, match="discard_fraction"):
        twonn_id(plane, discard_fraction=0.0)


def brute_cross(x: np.ndarray, texts: np.ndarray) -> np.ndarray:
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    i, j = np.triu_indices(len(x), 1)  # row-major (i, j), i < j
    cos = np.clip(np.einsum("pd,pd->p", u[i], u[j]), -1, 1)  # each pair's own dot product
    return cos[texts[i] != texts[j]]


def test_cross_text_cosines_match_brute_force_over_strips():
    rng = np.random.default_rng(0)
    n = isotropy.ROW_BLOCK * 2 + 37  # three strips
    x = anisotropic(n, 6, seed=1)
    texts = rng.integers(0, 9, n)
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    brute = brute_cross(x, texts)
    np.testing.assert_allclose(cross_text_cosines(u, texts), brute, rtol=0, atol=1e-13)
    edges = np.linspace(-1, 1, HIST_BINS + 1)
    np.testing.assert_array_equal(cross_text_cosine_histogram(u, texts), np.histogram(brute, edges)[0])


def test_cross_pair_index_names_each_strips_cross_text_pairs_once():
    rng = np.random.default_rng(5)
    n = isotropy.ROW_BLOCK + 300  # two strips, the second shorter
    texts = rng.integers(0, 6, n)
    found = set()
    for strip, index in enumerate(cross_pair_index(texts)):
        lo = strip * isotropy.ROW_BLOCK
        width = n - lo
        for flat in index.tolist():
            found.add((lo + flat // width, lo + flat % width))
    brute = {(i, j) for i in range(n) for j in range(i + 1, n) if texts[i] != texts[j]}
    assert found == brute
    # the layers of a sample share it: passing it in changes nothing
    x = anisotropic(n, 8, seed=6)
    given, given_fine = sample_measures(x, texts, pairs=cross_pair_index(texts))
    own, own_fine = sample_measures(x, texts)
    assert given == own and np.array_equal(given_fine, own_fine)


def test_cross_text_cosine_closed_forms():
    same = np.tile([[1.0, 2.0, -3.0]], (6, 1))
    np.testing.assert_allclose(cross_text_cosines(same, [0, 0, 1, 1, 2, 2]), 1.0)
    assert cross_text_cosine_histogram(same, [0, 0, 1, 1, 2, 2])[-1] == 12  # cosine 1 in the last bin
    rng = np.random.default_rng(1)
    orthogonal = np.zeros((40, 8))  # text s lives in dimensions 2s, 2s + 1
    texts = np.repeat(np.arange(4), 10)
    for s in range(4):
        orthogonal[texts == s, 2 * s: 2 * s + 2] = rng.standard_normal((10, 2))
    assert np.abs(cross_text_cosines(orthogonal, texts)).max() < 1e-15
    assert cross_text_cosines(orthogonal, np.zeros(40)).size == 0
    dim = 256
    gauss = rng.standard_normal((600, dim))
    c = cross_text_cosines(gauss / np.linalg.norm(gauss, axis=1, keepdims=True), np.arange(600) % 7)
    assert abs(c.mean()) < 5 / math.sqrt(dim * len(c)) * 30 and c.std() == pytest.approx(1 / math.sqrt(dim), rel=0.03)
    with pytest.raises(ValueError, match="text_index"):
        cross_text_cosines(gauss, np.arange(5))


def cone_of_texts(n_texts: int, per_text: int, dim: int, half_angle_deg: float, seed: int) -> np.ndarray:
    """Unit vectors at exactly the given angle from e_0, random around it: E[cos] = cos^2 of the angle."""
    rng = np.random.default_rng(seed)
    perp = rng.standard_normal((n_texts * per_text, dim - 1))
    perp /= np.linalg.norm(perp, axis=1, keepdims=True)
    a = math.radians(half_angle_deg)
    return np.concatenate([np.full((len(perp), 1), math.cos(a)), math.sin(a) * perp], axis=1)


def test_sample_measures_equal_the_single_functions():
    rng = np.random.default_rng(2)
    x = cone_of_texts(30, 40, 64, 50.0, seed=3) * rng.uniform(1, 3, (1200, 1))
    x = np.concatenate([x, x[:4]])
    texts = np.concatenate([np.repeat(np.arange(30), 40), [31, 32, 33, 34]])
    cols, fine = sample_measures(x, texts)
    assert cols["isoscore"] == pytest.approx(isoscore(x), rel=1e-10)
    assert cols["mev_centred"] == pytest.approx(mev_centred(x), rel=1e-10)
    for s in (1, 2, 4):
        assert cols[f"twonn_id_{s}"] == pytest.approx(twonn_id(x[: len(x) // s]), rel=1e-10)
    brute = brute_cross(x, texts)
    assert cols["cross_mean_cos"] == pytest.approx(brute.mean(), rel=1e-12)
    assert cols["cross_mean_cos"] == pytest.approx(math.cos(math.radians(50.0)) ** 2, abs=0.01)
    assert cols["cross_pairs"] == len(brute)
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_array_equal(fine, cross_text_cosine_histogram(u, texts, bins=FINE_BINS))
    empty, counts = sample_measures(x[:1], texts[:1])
    assert all(math.isnan(v) for k, v in empty.items() if k != "cross_pairs") and counts.sum() == 0


def test_duplicate_rows_are_grouped_exactly_and_get_distance_zero():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((40, 5))
    x[10, 0] = x[3, 0]  # a tie in the first coordinate only
    x[20] = x[4]
    x[21] = x[4]  # a triple
    x[30] = x[0]
    t = torch.as_tensor(x)
    groups = isotropy._duplicate_groups(t)
    same = (t[:, None, :] == t[None, :, :]).all(dim=2)
    assert torch.equal(groups[:, None] == groups[None, :], same)
    # a Gram matrix whose round-off leaves duplicates a hair apart: they still get r1 = 0 exactly
    xc = t - t.mean(dim=0)
    noisy = xc @ xc.T + 1e-9 * torch.as_tensor(rng.standard_normal((40, 40))).abs()
    noisy = (noisy + noisy.T) / 2
    r = isotropy._two_nearest(noisy, groups, [40])[40]
    duplicated = same.sum(dim=1) > 1
    assert bool((r[duplicated, 0] == 0).all()) and bool((r[~duplicated, 0] > 0).all())
    assert bool((r[[4, 20, 21], 1] == 0).all())  # a triple's second neighbour is a copy too
