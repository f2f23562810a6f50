"""hf_ddpm.metrics.statistics against independent float64 computations and closed forms."""

import numpy as np
import pytest
import scipy.linalg
from scipy.special import rel_entr
from sklearn.neighbors import NearestNeighbors

from hf_ddpm.metrics import class_balance_chi2, class_histogram, frechet_distance, inception_score, precision_recall
from hf_ddpm.metrics.images import as_image_batch, match_channels

pytestmark = pytest.mark.numerics  # run again under ATEN_CPU_CAPABILITY=default in CI (.ci/run)


def scipy_frechet(a, b):
    """Textbook route: tr sqrtm(Σ₁Σ₂) with scipy, float64."""
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    cross = scipy.linalg.sqrtm(s1 @ s2)
    return np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(cross).real


def features(rng, n, d, shift=0.0):
    return rng.standard_normal((n, d)) * rng.uniform(0.5, 2.0, d) + 3.0 + shift


def test_fd_matches_scipy_well_conditioned():
    rng = np.random.default_rng(0)
    a, b = features(rng, 600, 16), features(rng, 500, 16, shift=0.4) @ rng.standard_normal((16, 16))
    assert frechet_distance(a, b) == pytest.approx(scipy_frechet(a, b), rel=1e-9)


@pytest.mark.parametrize("n_a,n_b", [(40, 40), (30, 70), (70, 300)])
def test_fd_rank_deficient_matches_scipy(n_a, n_b):
    # D = 100 > N for at least one set: singular covariances, where sqrtm itself is only good to ~1e-7
    rng = np.random.default_rng(1)
    a, b = features(rng, n_a, 100), features(rng, n_b, 100, shift=0.2)
    assert frechet_distance(a, b) == pytest.approx(scipy_frechet(a, b), rel=1e-6)


@pytest.mark.parametrize("n", [20, 500])
def test_fd_scaled_and_shifted_copy_closed_form(n):
    # b = s·a + c: Σ_b = s²Σ_a, so tr(Σ_aΣ_b)^½ = s·tr Σ_a and FD = ‖(1 − s)μ_a − c‖² + (1 − s)² tr Σ_a, exactly,
    # also for N = 20 < D = 64 (rank-deficient)
    rng = np.random.default_rng(2)
    a, s, c = features(rng, n, 64), 1.7, rng.standard_normal(64)
    expected = np.sum(((1 - s) * a.mean(0) - c) ** 2) + (1 - s) ** 2 * np.trace(np.atleast_2d(np.cov(a, rowvar=False)))
    assert frechet_distance(a, s * a + c) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("n,d", [(20, 64), (300, 64), (64, 64)])
def test_fd_of_a_set_with_itself_is_zero(n, d):
    a = features(np.random.default_rng(3), n, d)
    assert 0.0 <= frechet_distance(a, a) < 1e-9 * np.trace(np.cov(a, rowvar=False))


def exact_moments(rng, n, mean, cov):
    """n samples whose sample mean and (N − 1) covariance are exactly ``mean`` and ``cov``."""
    z = rng.standard_normal((n, len(mean)))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T
    return mean + z @ np.linalg.cholesky(cov).T


def test_fd_of_gaussians_with_known_moments():
    # 2 × 2, non-commuting covariances: tr (Σ₁Σ₂)^½ = √(tr Σ₁Σ₂ + 2 √(det Σ₁ det Σ₂)) (Cayley–Hamilton)
    rng = np.random.default_rng(4)
    m1, m2 = np.array([1.0, -2.0]), np.array([0.5, 0.5])
    s1, s2 = np.array([[2.0, 0.7], [0.7, 1.0]]), np.array([[0.5, -0.2], [-0.2, 3.0]])
    cross = np.sqrt(np.trace(s1 @ s2) + 2 * np.sqrt(np.linalg.det(s1) * np.linalg.det(s2)))
    expected = np.sum((m1 - m2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * cross
    a, b = exact_moments(rng, 1000, m1, s1), exact_moments(rng, 700, m2, s2)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-10)
    # diagonal covariances in 8-D: FD = ‖Δμ‖² + Σ (σ₁ − σ₂)²
    sd1, sd2 = rng.uniform(0.5, 2, 8), rng.uniform(0.5, 2, 8)
    a = exact_moments(rng, 400, np.zeros(8), np.diag(sd1**2))
    b = exact_moments(rng, 400, np.ones(8), np.diag(sd2**2))
    assert frechet_distance(a, b) == pytest.approx(8.0 + np.sum((sd1 - sd2) ** 2), rel=1e-10)


def test_fd_rejects_bad_input():
    with pytest.raises(ValueError, match="feature dimension"):
        frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="non-finite"):
        frechet_distance(np.full((3, 3), np.nan), np.zeros((5, 3)))


def test_inception_score_extremes_and_formula():
    one_hot = np.eye(10)[np.arange(200) % 10]
    assert inception_score(one_hot) == pytest.approx(10.0, rel=1e-12)
    constant = np.tile(np.random.default_rng(5).dirichlet(np.ones(10)), (50, 1))
    assert inception_score(constant) == pytest.approx(1.0, rel=1e-12)
    probs = np.random.default_rng(6).dirichlet(np.full(7, 0.3), size=300)
    expected = np.exp(rel_entr(probs, probs.mean(0)).sum(1).mean())
    assert inception_score(probs) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="softmax"):
        inception_score(np.random.default_rng(7).standard_normal((4, 3)))


def test_class_histogram_counts_argmax():
    probs = np.eye(4)[[0, 0, 3, 1, 3, 3]] * 0.7 + 0.3 / 4
    assert class_histogram(probs) == [2, 1, 0, 3]


def test_class_balance_chi2_is_pearsons_statistic():
    from scipy.stats import chisquare

    counts = [40, 42, 44, 41, 48, 65, 27, 29, 24, 40]
    assert class_balance_chi2(counts) == pytest.approx(chisquare(counts).statistic, rel=1e-12)
    assert class_balance_chi2([25] * 4) == 0.0
    with pytest.raises(ValueError, match="at least two non-negative counts"):
        class_balance_chi2([0, 0])


def test_precision_recall_known_overlap():
    # reference: clusters A and B; generated: jittered copies of A and a far cluster C
    # → half the generated points are real-looking (precision 1/2), half the reference is covered (recall 1/2)
    rng = np.random.default_rng(8)
    cluster_a, cluster_b = rng.standard_normal((50, 5)), rng.standard_normal((50, 5)) + 100
    reference = np.concatenate([cluster_a, cluster_b])
    generated = np.concatenate([cluster_a + 1e-6 * rng.standard_normal((50, 5)), rng.standard_normal((50, 5)) - 100])
    assert precision_recall(reference, generated, k=3) == (0.5, 0.5)
    assert precision_recall(reference, reference, k=3) == (1.0, 1.0)


def test_precision_recall_matches_brute_force_knn():
    rng = np.random.default_rng(9)
    reference, generated = rng.standard_normal((300, 6)), 1.3 * rng.standard_normal((200, 6)) + 0.5

    def coverage(points, manifold, k):
        radii = NearestNeighbors(n_neighbors=k + 1).fit(manifold).kneighbors(manifold)[0][:, -1]
        dist = np.linalg.norm(points[:, None] - manifold[None], axis=-1)
        return np.mean((dist <= radii).any(axis=1))

    precision, recall = precision_recall(reference, generated, k=5)
    assert precision == pytest.approx(coverage(generated, reference, 5), abs=1e-12)
    assert recall == pytest.approx(coverage(reference, generated, 5), abs=1e-12)
    assert 0.1 < precision < 1.0 and 0.1 < recall < 1.0  # a partial overlap, so the comparison means something
    with pytest.raises(ValueError, match="k must"):
        precision_recall(reference[:3], generated, k=3)


def test_image_batch_conversions():
    from PIL import Image

    grey = np.random.default_rng(10).uniform(size=(4, 8, 8))
    assert as_image_batch(grey, "x").shape == (4, 1, 8, 8)
    as_uint8 = np.rint(grey * 255).astype(np.uint8)
    np.testing.assert_allclose(as_image_batch(as_uint8, "x").numpy()[:, 0], as_uint8 / 255.0, atol=1e-7)
    pil = [Image.fromarray(image) for image in as_uint8]
    np.testing.assert_allclose(as_image_batch(pil, "x").numpy(), as_image_batch(as_uint8, "x").numpy())
    rgb = match_channels(as_image_batch(grey, "x"), 3)
    assert rgb.shape == (4, 3, 8, 8)
    np.testing.assert_allclose(match_channels(rgb, 1).numpy(), as_image_batch(grey, "x").numpy(), atol=1e-6)
    with pytest.raises(ValueError, match=r"generated as float images must lie in \[0, 1\]"):
        as_image_batch(grey * 2 - 1, "generated")
    with pytest.raises(ValueError, match="channels-last"):
        as_image_batch(np.zeros((4, 8, 8, 3)), "reference")
