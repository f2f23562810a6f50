"""The variational bound: its pieces against independent float64 computations, and the seed's identities."""

import math

import mpmath
import numpy as np
import pytest
import torch
from scipy import stats

from hf_ddpm import DDPMDocScheduler, bits_per_dim
from hf_ddpm.likelihood import bound_term, discretized_gaussian_log_likelihood, normal_kl, prior_bpd
from helpers import tiny_unet_model

pytestmark = pytest.mark.numerics  # run again under ATEN_CPU_CAPABILITY=default in CI (.ci/run)


def test_normal_kl_matches_torch_distributions():
    m1, m2 = torch.randn(100, dtype=torch.float64), torch.randn(100, dtype=torch.float64)
    lv1, lv2 = torch.randn(100, dtype=torch.float64), torch.randn(100, dtype=torch.float64)
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(m1, (0.5 * lv1).exp()), torch.distributions.Normal(m2, (0.5 * lv2).exp())
    )
    torch.testing.assert_close(normal_kl(m1, lv1, m2, lv2), expected)


def grid(n=256):
    return torch.arange(n, dtype=torch.float64) / 127.5 - 1.0


@pytest.mark.parametrize("mean, scale", [(0.0, 0.5), (0.3, 0.004), (-0.99, 0.01), (0.9, 3.0), (-0.2, 1e-4)])
def test_decoder_matches_scipy_and_sums_to_one(mean, scale):
    x = grid()
    log_p = discretized_gaussian_log_likelihood(
        x, means=torch.full_like(x, mean), log_scales=torch.full_like(x, math.log(scale))
    )
    edges = np.concatenate([[-np.inf], (x[:-1].numpy() + x[1:].numpy()) / 2, [np.inf]])
    # mass of each bin, taken from the tail it lies in (cdf differences left of the mean, sf differences right)
    left = np.diff(stats.norm.cdf(edges, loc=mean, scale=scale))
    right = -np.diff(stats.norm.sf(edges, loc=mean, scale=scale))
    expected = np.where(x.numpy() > mean, right, left)
    mask = expected > 1e-300
    np.testing.assert_allclose(log_p.numpy()[mask], np.log(expected[mask]), rtol=1e-6, atol=1e-9)
    assert float(torch.logsumexp(log_p, 0)) == pytest.approx(0.0, abs=1e-9)


def test_decoder_is_finite_far_in_the_tails():
    """30 standard deviations out, naive log(Φ(b) − Φ(a)) is log 0; the log-space form stays exact."""
    x = torch.tensor([0.5, -0.5, 1.0, -1.0], dtype=torch.float64)
    means = torch.tensor([0.5 - 30 * 0.01, -0.5 + 30 * 0.01, 0.5, -0.5], dtype=torch.float64)
    log_p = discretized_gaussian_log_likelihood(x, means=means, log_scales=math.log(0.01))
    assert torch.isfinite(log_p).all()
    a = (0.3 - 1 / 255) / 0.01
    expected = stats.norm.logsf(a) + math.log(-math.expm1(stats.norm.logsf(a + 2 / 255 / 0.01) - stats.norm.logsf(a)))
    assert float(log_p[0]) == pytest.approx(expected, rel=1e-6)
    assert float(log_p[1]) == pytest.approx(expected, rel=1e-6)


def test_prior_term_is_the_kl_to_the_standard_normal():
    """L_T = KL(N(√ᾱ x_0, 1 − ᾱ) ‖ N(0, 1)) per pixel, in bits, with ᾱ of the given chain's last step: against the
    closed form written out by hand from the paper's β in float64. The O(1) parts of the KL cancel to ~ᾱ²/2, so
    float64 rounding leaves an absolute error of a few 1e-16 against values ≥ ᾱ_T · mean(x_0²) / 2 ln 2 ≈ 1e-5 at
    the last step: relative 1e-9 is four orders above it."""
    s = DDPMDocScheduler()
    alphas_cumprod = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
    typical = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
    black = -torch.ones(1, 3, 32, 32, dtype=torch.float64)
    for timestep in (999, 499):
        ab = alphas_cumprod[timestep]
        for x0 in (typical, black):
            by_hand = 0.5 * (-math.log(1 - ab) - 1 + (1 - ab) + ab * x0**2).mean() / math.log(2)
            assert float(prior_bpd(s, x0, timestep)) == pytest.approx(float(by_hand), rel=1e-9)


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
def test_fixed_variance_term_is_lambda_times_squared_epsilon_error(variance_type):
    """Eq. 12: with σ_t² fixed, L_{t−1} = λ_t ‖ε − ε_θ‖² + C_t, λ_t = β_t² / (2σ_t² α_t (1 − ᾱ_t)), where C_t is the
    KL between the two variances, 0.5 (log σ² − log β̃ − 1 + β̃/σ²)."""
    s = DDPMDocScheduler(variance_type=variance_type, clip_sample=False)
    b = np.linspace(1e-4, 0.02, 1000)
    ab = np.cumprod(1 - b)
    x0 = torch.rand(4, 1, 8, 8, dtype=torch.float64) * 2 - 1
    eps = torch.randn_like(x0)
    eps_theta = eps + 0.1 * torch.randn_like(x0)
    for t in [1, 7, 300, 999]:
        x_t = s.add_noise(x0, eps, t)
        term_bits = bound_term(s, eps_theta, x0, x_t, t)
        post_var = (1 - ab[t - 1]) / (1 - ab[t]) * b[t]
        sigma2 = post_var if variance_type == "fixed_small" else b[t]
        lam = b[t] ** 2 / (2 * sigma2 * (1 - b[t]) * (1 - ab[t]))
        c = 0.5 * (math.log(sigma2) - math.log(post_var) - 1 + post_var / sigma2)
        by_hand = (lam * ((eps - eps_theta) ** 2).mean(dim=(1, 2, 3)) + c) / math.log(2)
        torch.testing.assert_close(term_bits, by_hand, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
def test_decoder_term_keeps_the_exact_sigma_in_float64(variance_type):
    """L_0 = −log p_θ(x_0 | x_1) (Eq. 13) against bin masses computed at 40 significant digits (mpmath) from the
    paper's β: σ_1² = β̃ of the second step, β_1 β_2 / (1 − (1 − β_1)(1 − β_2)), for both fixed types (the paper's
    code clips the decoder's variance there) and μ_θ = (x_1 − √β_1 ε_θ)/√(1 − β_1) (Eq. 11 at t = 1).

    Tolerance, from float64 rounding: μ_θ is formed with a few roundings, |δμ| ≤ 4 ε₆₄ (|x_1| + √β_1 |ε_θ|)/√α_1;
    a bin's log-mass moves by |∂ log m / ∂μ| = |E[z | bin]|/σ ≤ (max(|z_lo|, |z_hi|) + 1)/σ per unit of μ; the
    average over pixels adds a few ε₆₄ · L_0. Rounding σ_1 to float32 on the way (as before) errs by ~2e-7."""
    s = DDPMDocScheduler(variance_type=variance_type, clip_sample=False)
    b1, b2 = np.linspace(1e-4, 0.02, 1000)[:2]
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, 256, (4, 1, 4, 4), generator=g).double() / 127.5 - 1
    x0[0, 0, 0, :2] = torch.tensor([-1.0, 1.0])  # the two open-ended edge bins
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    eps_theta = eps + 0.5 * torch.randn(x0.shape, generator=g, dtype=torch.float64)
    x1 = s.add_noise(x0, eps, 0)
    term = bound_term(s, eps_theta, x0, x1, 0)
    per_sample = bound_term(s, eps_theta, x0, x1, torch.zeros(len(x0), dtype=torch.long))  # σ_1 as a [B] tensor
    assert term.dtype == per_sample.dtype == torch.float64

    eps64 = np.finfo(np.float64).eps
    with mpmath.workdps(40):
        sigma = mpmath.sqrt(mpmath.mpf(b1) * b2 / (1 - (1 - mpmath.mpf(b1)) * (1 - b2)))
        half_bin = mpmath.mpf(1) / 255
        for i in range(len(x0)):
            nll, tolerance = mpmath.mpf(0), 0.0
            for x, xt, e in zip(x0[i].flatten().tolist(), x1[i].flatten().tolist(), eps_theta[i].flatten().tolist()):
                mu = (xt - mpmath.sqrt(b1) * e) / mpmath.sqrt(1 - mpmath.mpf(b1))
                z_lo, z_hi = (x - half_bin - mu) / sigma, (x + half_bin - mu) / sigma
                upper = 1 if x == 1 else mpmath.ncdf(z_hi)
                lower = 0 if x == -1 else mpmath.ncdf(z_lo)
                nll -= mpmath.log(upper - lower)
                delta_mu = 4 * eps64 * (abs(xt) + math.sqrt(b1) * abs(e)) / math.sqrt(1 - b1)
                tolerance += float((max(abs(z_lo), abs(z_hi)) + 1) / sigma) * delta_mu
            reference = float(nll / x0[i].numel() / mpmath.log(2))
            tolerance = tolerance / x0[i].numel() / math.log(2) + 16 * eps64 * reference
            for value in (float(term[i]), float(per_sample[i])):
                assert abs(value - reference) <= tolerance, (value, reference, tolerance)
            assert tolerance < 1e-12


def bayes_optimal_eps(points, scheduler):
    """E[ε | x_t] for data uniform over ``points``: the best possible ε_θ, in closed form (Gaussian mixture)."""
    def model(x_t, t):
        ab = scheduler.alphas_cumprod[t].view(-1, 1).to(x_t.dtype)
        flat = x_t.reshape(len(x_t), -1)
        d2 = ((flat[:, None, :] - ab.sqrt()[:, None] * points[None].reshape(1, len(points), -1)) ** 2).sum(-1)
        w = torch.softmax(-d2 / (2 * (1 - ab)), dim=1)
        x0_hat = w @ points.reshape(len(points), -1)
        return ((flat - ab.sqrt() * x0_hat) / (1 - ab).sqrt()).reshape(x_t.shape)

    return model


def test_bayes_optimal_model_attains_the_data_entropy():
    """Data uniform over 8 random 2×2 8-bit images has entropy 3 bits / 4 dims = 0.75 bits/dim. The ideal ε_θ's
    bound sits just above it (a bound can't go below the entropy; a tiny β_1 makes the decoder's L_0 ≈ 0)."""
    g = torch.Generator().manual_seed(0)
    points = (torch.randint(0, 256, (8, 1, 2, 2), generator=g).double() / 127.5) - 1
    s = DDPMDocScheduler(beta_start=1e-6, beta_end=0.02, clip_sample=False)
    x0 = points.repeat(32, 1, 1, 1)
    bound = bits_per_dim(bayes_optimal_eps(points, s), s, x0, generator=g)
    assert 0.75 - 0.02 < bound.mean() < 0.75 + 0.05
    assert float(bound.terms[:, 0].mean()) < 0.01  # L_0 ≈ 0
    # a useless model (ε_θ = 0) pays far more
    assert bits_per_dim(lambda x, t: torch.zeros_like(x), s, x0[:8], generator=g).mean() > 3.0


def test_subset_of_timesteps_is_an_unbiased_estimate():
    s = DDPMDocScheduler(num_train_timesteps=50, beta_end=0.2)
    model = tiny_unet_model()
    x0 = torch.randint(0, 256, (3, 1, 8, 8)) / 127.5 - 1  # the 8-bit grid the bound scores
    noise = torch.randn_like(x0)
    full = bits_per_dim(model, s, x0, noise=noise)
    assert full.terms.shape == (3, 50) and full.timesteps.tolist() == list(range(50))
    assert full.prior.dtype == full.terms.dtype == full.total.dtype == torch.float64  # from a float32 model
    torch.testing.assert_close(full.total, full.prior + full.terms.sum(1))
    subset = [3, 17, 40]
    part = bits_per_dim(model, s, x0, noise=noise, timesteps=subset)
    torch.testing.assert_close(part.terms, full.terms[:, subset])
    torch.testing.assert_close(part.total, full.prior + full.terms[:, subset].sum(1) * 50 / 3)
    # averaging the estimate over every 5-subset partition of the timesteps recovers the full bound exactly
    folds = [bits_per_dim(model, s, x0, noise=noise, timesteps=list(range(k, 50, 10))).total for k in range(10)]
    torch.testing.assert_close(torch.stack(folds).mean(0), full.total)


def test_bound_accepts_every_variance_and_prediction_type():
    x0 = torch.randint(0, 256, (2, 1, 8, 8)) / 127.5 - 1
    for variance_type in ["fixed_small", "fixed_large", "learned", "learned_range"]:
        for prediction_type in ["epsilon", "sample", "v_prediction"]:
            s = DDPMDocScheduler(num_train_timesteps=20, variance_type=variance_type, prediction_type=prediction_type)
            channels = 2 if variance_type.startswith("learned") else 1
            model = tiny_unet_model(out_channels=channels)
            bound = bits_per_dim(model, s, x0, generator=torch.Generator().manual_seed(0))
            assert torch.isfinite(bound.total).all() and (bound.terms >= -1e-9).all()


def test_bound_input_errors():
    s = DDPMDocScheduler(num_train_timesteps=10)
    x0 = torch.full((1, 1, 8, 8), -1.0)
    with pytest.raises(ValueError, match="distinct"):
        bits_per_dim(tiny_unet_model(), s, x0, timesteps=[1, 1])
    with pytest.raises(ValueError, match=r"timesteps \[10\] are not steps of the chain 0 … 9"):
        bits_per_dim(tiny_unet_model(), s, x0, timesteps=[10])
    with pytest.raises(ValueError, match="noise has shape"):
        bits_per_dim(tiny_unet_model(), s, x0, noise=torch.zeros(2, 1, 8, 8))
