"""The paper's experiments as pipeline methods (progressive generation, shared latents, interpolation,
rate–distortion): properties on a tiny pipeline, and the distortion of a Gaussian toy against its closed form."""

import math

import numpy as np
import pytest
import torch
from diffusers.utils.torch_utils import randn_tensor
from helpers import tiny_unet

from hf_ddpm import DDPMDocPipeline, DDPMDocScheduler
from hf_ddpm.errors import ParameterError
from hf_ddpm.rate_distortion import PIXEL_SCALE, estimate_rate_distortion

T = 20
EPS32 = float(np.finfo(np.float32).eps)
EPS64 = float(np.finfo(np.float64).eps)


@pytest.fixture(scope="module")
def pipe():
    pipeline = DDPMDocPipeline(unet=tiny_unet(), scheduler=DDPMDocScheduler(num_train_timesteps=T))
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(count: int, seed: int = 0) -> torch.Tensor:
    """8-bit grey 8×8 images as [N, 1, 8, 8] in [0, 1]."""
    return torch.randint(0, 256, (count, 1, 8, 8), generator=seeded(seed)).float() / 255


def model_range(x: torch.Tensor) -> torch.Tensor:
    return x * 2 - 1


# -------------------------------------------------------------------------------------------------- rate–distortion


def test_rate_is_the_bound_read_as_a_code(pipe):
    """rate(t) = L_T + Σ_{s>t} L_{s−1}: L_T at t = T, each step down adds that step's term of the bound of the same
    images with the same noise (so it never decreases), and the final rate plus L_0 is that bound."""
    x = images(6)
    noise = torch.randn(6, 1, 8, 8, generator=seeded(1))
    rd = pipe.rate_distortion(x, noise=noise)
    bound = pipe.log_likelihood(x, noise=noise)
    rate = rd.rate
    assert rate.shape == rd.distortion.shape == (6, T) and rd.timesteps.tolist() == list(range(T))
    torch.testing.assert_close(rd.bound.terms, bound.terms, rtol=0, atol=0)  # one evaluation, the same numbers
    assert torch.equal(rate[:, -1], bound.prior)
    assert (bound.terms >= 0).all()
    assert (rate[:, :-1] >= rate[:, 1:]).all()
    # float64 sums of T non-negative terms, in two orders: each partial sum errs by at most T·ε₆₄ times the total
    tolerance = 2 * T * EPS64 * float(bound.total.max())
    torch.testing.assert_close(rate[:, :-1] - rate[:, 1:], bound.terms[:, 1:], rtol=0, atol=tolerance)
    torch.testing.assert_close(rate[:, 0] + rd.bound.terms[:, 0], bound.total, rtol=0, atol=tolerance)
    summary = rd.summary()
    assert summary["rate_bits_per_dim"] + summary["decoder_bits_per_dim"] == pytest.approx(bound.mean(), abs=tolerance)
    assert [row["t"] for row in rd.rows()] == list(range(T, 0, -1))  # the paper's t, in the reverse process's order


def test_rate_distortion_in_chunks_is_the_same_as_chunk_by_chunk(pipe):
    x = images(5, seed=2)
    noise = torch.randn(5, 1, 8, 8, generator=seeded(3))
    chunked = pipe.rate_distortion(x, noise=noise, batch_size=3)
    parts = [pipe.rate_distortion(x[s], noise=noise[s], batch_size=3) for s in (slice(0, 3), slice(3, 5))]
    assert torch.equal(chunked.distortion, torch.cat([p.distortion for p in parts]))
    assert torch.equal(chunked.rate, torch.cat([p.rate for p in parts]))
    # drawn noise: the generator's first draw, in the images' shape
    drawn = pipe.rate_distortion(x, generator=seeded(4))
    assert torch.equal(drawn.rate, pipe.rate_distortion(x, noise=torch.randn(5, 1, 8, 8, generator=seeded(4))).rate)


def test_distortion_of_the_bayes_optimal_denoiser_of_gaussian_data_is_its_closed_form():
    """x_0 ~ N(0, s² I): E[x_0 | x_t] = c_t x_t with c_t = √ᾱ_t s² / (ᾱ_t s² + 1 − ᾱ_t), and the model that
    predicts ε exactly from it (ε_θ = (x_t − √ᾱ_t c_t x_t) / √(1 − ᾱ_t)) has x̂_0 = c_t x_t. The distortion at each t
    is then 127.5 · RMS(x_0 − c_t x_t) per image, to float64 rounding; and since x_0 − c_t x_t ~ N(0, v_t) with
    v_t = s² (1 − ᾱ_t) / (ᾱ_t s² + 1 − ᾱ_t), its mean over the images is 127.5 √v_t within sampling error."""
    steps, s = 50, 0.25
    scheduler = DDPMDocScheduler(num_train_timesteps=steps, beta_end=0.2, clip_sample=False)
    alpha_bar = torch.from_numpy(np.cumprod(1 - np.linspace(1e-4, 0.2, steps)))  # independent of the scheduler's

    def coefficient(t):
        a = alpha_bar[t]
        return a.sqrt() * s**2 / (a * s**2 + 1 - a)

    def exact_eps(x_t, t):
        a, c = alpha_bar[t].view(-1, 1, 1, 1), coefficient(t).view(-1, 1, 1, 1)
        return (x_t - a.sqrt() * c * x_t) / (1 - a).sqrt()

    n, d = 64, 1024
    g = seeded(5)
    x0 = s * torch.randn(n, 1, 32, 32, generator=g, dtype=torch.float64)
    # on the 8-bit grid the bound takes: rounding adds (1/127.5)²/12 to the variance and clipping at ±1 = 4s removes
    # less, each < 1e-4 of s²; the first check is exact for any x_0
    x0 = torch.round((x0.clamp(-1, 1) + 1) * 127.5) / 127.5 - 1
    eps = torch.randn(n, 1, 32, 32, generator=g, dtype=torch.float64)
    rd = estimate_rate_distortion(exact_eps, scheduler, x0, eps, batch_size=40)
    for t in range(steps):
        a, c = alpha_bar[t], coefficient(t)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
        expected = PIXEL_SCALE * ((x0 - c * x_t) ** 2).mean(dim=(1, 2, 3)).sqrt()
        # x̂_0 = (x_t − √(1−ᾱ) ε_θ)/√ᾱ cancels terms of size |x_t|/√ᾱ; ᾱ itself (a product of t factors) differs
        # from the scheduler's by ~t ε₆₄: the RMSE moves by at most the largest pixel error
        tolerance = PIXEL_SCALE * (steps + 16) * EPS64 * float(x_t.abs().max() + x0.abs().max()) / float(a.sqrt())
        torch.testing.assert_close(rd.distortion[:, t], expected, rtol=0, atol=tolerance)
        # E RMSE_i = 127.5 √v (1 − 1/(4d) + …), each with standard deviation 127.5 √v / √(2d): 5 σ of the mean
        closed_form = PIXEL_SCALE * math.sqrt(s**2 * (1 - a) / (a * s**2 + 1 - a))
        assert float(rd.mean_distortion[t]) == pytest.approx(closed_form, rel=5 / math.sqrt(2 * d * n) + 1 / (4 * d))


# -------------------------------------------------------------------------------------------------- interpolation


def test_interpolation_ends_are_the_decodings_of_the_two_latents(pipe):
    """λ = 0 and λ = 1 are exactly x_t and x'_t, encoded with one ε, and decode exactly as the two latents do with
    the pair's noise."""
    a, b, t = images(2, seed=6), images(2, seed=7), 9
    result = pipe.interpolate(a, b, timestep=t, lambdas=[0.0, 1.0], generator=seeded(8))
    assert torch.equal(result.latents[:, 0], pipe.scheduler.add_noise(model_range(a), result.noise, t))
    assert torch.equal(result.latents[:, 1], pipe.scheduler.add_noise(model_range(b), result.noise, t))
    generators = [seeded(int(seed)) for seed in result.seeds for _ in range(2)]
    direct = pipe.decode(result.latents.flatten(0, 1), t, generator=generators)
    assert torch.equal(result.decoded.flatten(0, 1), direct)
    assert result.seeds[0] != result.seeds[1]  # each pair its own noise


def test_interpolation_uses_the_same_noise_for_every_lambda(pipe):
    """Interpolating an image with itself gives the same latent for every λ, so the same decoding when the noise
    is the same; the default λ are 0, 0.1, …, 1 at t = T/2."""
    a = images(2, seed=9)
    result = pipe.interpolate(a, a, generator=seeded(10))
    assert result.timestep == T // 2 - 1 and result.lambdas.tolist() == pytest.approx([i / 10 for i in range(11)])
    assert torch.equal(result.decoded, result.decoded[:, :1].expand_as(result.decoded))
    assert not torch.equal(result.decoded[0, 0], result.decoded[1, 0])


def test_decodings_at_the_first_step_are_close_to_the_inputs(pipe):
    """From x_1 the reverse process takes one noiseless step to x̂_0 (Eq. 15), clipped to [−1, 1] like x_0:
    |x̂_0 − x_0| = √((1 − ᾱ_1)/ᾱ_1) |ε − ε_θ(x_1)| ≤ √(β_1/(1 − β_1)) |ε − ε_θ|, plus float32 rounding."""
    a, b = images(3, seed=11), images(3, seed=12)
    result = pipe.interpolate(a, b, timestep=0, lambdas=[0.0, 1.0], generator=seeded(13))
    beta_1 = 1e-4
    for column, x in ((0, a), (1, b)):
        x_1 = result.latents[:, column]
        eps_theta = pipe.unet(x_1, 0).sample
        error = math.sqrt(beta_1 / (1 - beta_1)) * (result.noise - eps_theta).abs() / 2  # in [0, 1] units
        rounding = 8 * EPS32 * (x_1.abs() + math.sqrt(beta_1) * eps_theta.abs() + 1)
        assert ((result.decoded[:, column] - x).abs() <= error + rounding).all()


# -------------------------------------------------------------------------------------------------- shared latents


def test_samples_sharing_x_t_are_identical_at_t_0_and_differ_above(pipe):
    x = images(3, seed=14)
    result = pipe.shared_latents(x, timesteps=[0, T - 1], num_samples=4, generator=seeded(15))
    assert result.samples.shape == (3, 2, 4, 1, 8, 8)
    for column, t in enumerate([0, T - 1]):
        assert torch.equal(result.latents[:, column], pipe.scheduler.add_noise(model_range(x), result.noise, t))
    at_zero, at_top = result.samples[:, 0], result.samples[:, 1]
    assert torch.equal(at_zero, at_zero[:, :1].expand_as(at_zero))  # one step from x_1 adds no noise
    assert all(not torch.equal(at_top[i, 0], at_top[i, 1]) for i in range(3))
    defaults = pipe.shared_latents(x[:1], num_samples=1, generator=seeded(15))
    assert defaults.timesteps.tolist() == [T - 1, 3 * T // 4 - 1, T // 2 - 1, T // 4 - 1]  # t = T, 3T/4, T/2, T/4


# -------------------------------------------------------------------------------------------------- progressive


def test_progressive_columns_are_the_chains_x0_predictions_and_then_its_samples(pipe):
    result = pipe.progressive(3, num_columns=5, num_inference_steps=T, generator=seeded(16))
    samples = pipe(3, generator=seeded(16), num_inference_steps=T, output_type="pt").images
    assert result.images.shape == (3, 5, 1, 8, 8)
    assert torch.equal(result.images[:, -1], samples)
    assert result.timesteps.tolist() == [19, 14, 9, 5]  # steps 0, 5, 10, 14 of the 20: evenly spaced
    # the first column: x̂_0 = x_T/√ᾱ_T − √(1/ᾱ_T − 1) ε_θ(x_T) (Eq. 15), clipped, in float32
    x_T = randn_tensor((3, 1, 8, 8), generator=seeded(16))
    eps_theta = pipe.unet(x_T, T - 1).sample
    alpha_bar = float(np.cumprod(1 - np.linspace(1e-4, 0.02, T))[-1])
    x0_hat = ((x_T - math.sqrt(1 - alpha_bar) * eps_theta) / math.sqrt(alpha_bar)).clamp(-1, 1)
    rounding = 8 * EPS32 * (x_T.abs() + eps_theta.abs()) / math.sqrt(alpha_bar)
    assert ((result.images[:, 0] - (x0_hat / 2 + 0.5)).abs() <= rounding).all()


# -------------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("call, parameter", [
    (lambda p, x: p.decode(torch.zeros(1, 1, 8, 8), T), "timestep"),
    (lambda p, x: p.decode(torch.zeros(1, 1, 8, 8), -1), "timestep"),
    (lambda p, x: p.decode(torch.zeros(2, 1, 4, 4), 3), "latents"),
    (lambda p, x: p.interpolate(x, x, timestep=T), "timestep"),
    (lambda p, x: p.interpolate(x, x, timestep=2.5), "timestep"),
    (lambda p, x: p.shared_latents(x, timesteps=[3, T]), "timesteps"),
    (lambda p, x: p.shared_latents(x, timesteps=[]), "timesteps"),
    (lambda p, x: p.interpolate(x, x, lambdas=[0.0, 1.5]), "lambdas"),
    (lambda p, x: p.interpolate(x, x, lambdas=[-0.1]), "lambdas"),
    (lambda p, x: p.interpolate(x, x[:1]), "other_images"),
    (lambda p, x: p.interpolate(x, torch.rand(2, 3, 8, 8)), "other_images"),
    (lambda p, x: p.rate_distortion(torch.rand(2, 1, 16, 16)), "images"),
    (lambda p, x: p.rate_distortion(torch.rand(2, 3, 8, 8)), "images"),
    (lambda p, x: p.shared_latents(torch.rand(2, 1, 8, 8) * 2), "images"),
    (lambda p, x: p.rate_distortion(x, noise=torch.zeros(1, 1, 8, 8)), "noise"),
    (lambda p, x: p.progressive(2, num_columns=1), "num_columns"),
    (lambda p, x: p.progressive(2, num_columns=T + 1, num_inference_steps=T), "num_columns"),
])
def test_bad_arguments_are_named(pipe, call, parameter):
    with pytest.raises(ParameterError) as error:
        call(pipe, images(2))
    assert error.value.parameter == parameter
