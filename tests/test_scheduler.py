"""DDPMDocScheduler: compatibility with diffusers' DDPMScheduler, the paper's identities, validation."""

import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from hf_ddpm import DDPMDocScheduler
from hf_ddpm.options import PREDICTION_TYPES, VARIANCE_TYPES
from hf_ddpm.schedules import make_betas

pytestmark = pytest.mark.numerics  # run again under ATEN_CPU_CAPABILITY=default in CI (.ci/run)

SHAPE = (2, 3, 8, 8)


def toy_model(x, t, channels_out):
    """A deterministic, smooth stand-in for a network: bounded outputs that depend on x_t and t."""
    t = float(t) if not torch.is_tensor(t) or t.numel() == 1 else t.float().view(-1, 1, 1, 1)
    out = torch.tanh(0.6 * x + 0.001 * t)
    return out.repeat(1, channels_out // x.shape[1], 1, 1) * torch.linspace(0.9, -0.9, channels_out).view(1, -1, 1, 1)


def run_chain(scheduler, steps=None, timesteps=None, generator_list=False, transform_output=None):
    g = [torch.Generator().manual_seed(i) for i in range(SHAPE[0])] if generator_list else torch.Generator().manual_seed(0)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(42))
    scheduler.set_timesteps(num_inference_steps=steps, timesteps=timesteps)
    channels_out = SHAPE[1] * (2 if scheduler.config.variance_type.startswith("learned") else 1)
    for t in scheduler.timesteps:
        out = toy_model(x, t, channels_out)
        if transform_output is not None:
            out = transform_output(out)
        x = scheduler.step(out, t, x, generator=g).prev_sample
    return x


CONFIGS = [
    dict(),
    dict(clip_sample=False),
    dict(variance_type="fixed_small_log"),
    dict(variance_type="fixed_large"),
    dict(variance_type="fixed_large", clip_sample=False),
    dict(variance_type="learned_range", clip_sample=False),
    dict(variance_type="learned_range", prediction_type="v_prediction"),
    dict(prediction_type="v_prediction"),
    dict(prediction_type="v_prediction", clip_sample=False),
    dict(prediction_type="sample"),
    dict(prediction_type="sample", variance_type="fixed_large", clip_sample_range=0.5),
    dict(thresholding=True, sample_max_value=1.5),
    dict(thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=2.0, variance_type="fixed_large"),
    dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
    dict(beta_schedule="squaredcos_cap_v2"),
    dict(beta_schedule="sigmoid"),
    dict(num_train_timesteps=200, beta_end=0.05),
    dict(trained_betas=np.linspace(1e-4, 0.03, 1000).tolist(), variance_type="fixed_large"),
    dict(timestep_spacing="linspace"),
    dict(timestep_spacing="leading", steps_offset=1),
    dict(timestep_spacing="trailing"),  # last timestep > 0: diffusers adds σ≈1e-10 noise there with fixed_small
    dict(rescale_betas_zero_snr=True, prediction_type="v_prediction"),
]


def assert_same_samples(ours, theirs, tolerance=1e-4):
    """Equal within float32 rounding: diffusers keeps its tables in float32 (β_t recomputed from ᾱ in float32 has
    up to 1e-3 relative error at small t) while ours are float64, so we allow 1e-4 of the samples' scale.
    (The cosine schedule's 1000-step chain, where 1/√ᾱ_t reaches 2e4, carries diffusers' float32 error to 3e-4:
    its float32 recomputation of β_t, see ``test_step_closer_to_float64_than_diffusers``; that error is
    IEEE float32 arithmetic, the same on every machine: 3.0e-4 from the float64 chain under ATEN_CPU_CAPABILITY
    default, avx2 and avx512 alike.)"""
    scale = max(1.0, float(theirs.abs().max()))
    torch.testing.assert_close(ours, theirs, rtol=0, atol=tolerance * scale)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items() if k != "trained_betas") or "default")
@pytest.mark.parametrize("steps", [None, 50, 7])
def test_seeded_chain_reproduces_diffusers(config, steps):
    T = config.get("num_train_timesteps", 1000)
    steps = T if steps is None else steps
    if config.get("steps_offset") and steps == T:  # timesteps 1 … T: beyond the schedule (diffusers: IndexError)
        with pytest.raises(ValueError, match="steps_offset=1"):
            DDPMDocScheduler(**config).set_timesteps(steps)
        return
    ours = run_chain(DDPMDocScheduler(**config), steps)
    theirs = run_chain(DDPMScheduler(**config), steps)
    assert torch.isfinite(ours).all()
    cosine_full_chain = config.get("beta_schedule") == "squaredcos_cap_v2" and steps == T
    assert_same_samples(ours, theirs, tolerance=5e-4 if cosine_full_chain else 1e-4)


FLOAT32_UNIT_ROUNDOFF = 2.0**-24  # u: float32 rounds any real to within u of it, relative


def posterior_step_float64(betas, t, x, model_output, z, clip):
    """One step of Algorithm 2 at code timestep t (σ_t² = β̃_t; Eqs. 15 then 7) in float64 from float64 tables, from
    the same float32 x_t, ε_θ and z as the schedulers get; and the magnitude m of the terms a float32 evaluation of
    that step combines (Σ|coefficient·operand| along its path: x̂_0 then μ̃ with clipping, or Eq. 11 without)."""
    alpha_bar = np.cumprod(1 - betas)
    prev = alpha_bar[t - 1] if t > 0 else 1.0
    beta = 1 - alpha_bar[t] / prev
    x, eps, z = x.double(), model_output.double(), z.double()
    sqrt_recip, sqrt_recipm1 = 1 / math.sqrt(alpha_bar[t]), math.sqrt(1 / alpha_bar[t] - 1)
    x0 = sqrt_recip * x - sqrt_recipm1 * eps
    x0 = x0.clamp(-1, 1) if clip else x0
    x0_coef = math.sqrt(prev) * beta / (1 - alpha_bar[t])
    xt_coef = math.sqrt(1 - beta) * (1 - prev) / (1 - alpha_bar[t])
    sigma = math.sqrt((1 - prev) / (1 - alpha_bar[t]) * beta) if t > 0 else 0.0
    if clip:
        magnitude = x0_coef * (sqrt_recip * x.abs() + sqrt_recipm1 * eps.abs()) + xt_coef * x.abs()
    else:
        recip_sqrt_alpha = 1 / math.sqrt(1 - beta)
        magnitude = recip_sqrt_alpha * (x.abs() + beta / math.sqrt(1 - alpha_bar[t]) * eps.abs())
    return x0_coef * x0 + xt_coef * x + sigma * z, magnitude + sigma * z.abs()


@pytest.mark.parametrize("clip", [True, False])
@pytest.mark.parametrize("schedule", ["squaredcos_cap_v2", "linear"])
def test_step_closer_to_float64_than_diffusers(schedule, clip):
    """Float64 tables beat per-step float32 recomputation where it matters: the first 20 steps (β_t ≤ 4e-4).

    Every scheduler gets the same float32 x_t (on the data's scale), model output and noise z, and is compared with
    the step evaluated in float64. Ours only rounds: each float32 operation on its path (the coefficient, each
    product, each sum, with or without fused multiply-add) is off by at most u relative to the terms it combines, and
    no path has more than six, so 8u·m bounds our error on any machine and any vector ISA. diffusers forms
    β_t = 1 − ᾱ_t/ᾱ_{t−1} in float32 inside the step: the quotient's rounding (up to u/2 absolute) becomes a relative
    error of up to u/(2β_t), 1e-4 … 1e-3 at these t, in coefficients near ½ — hundreds of times 8u·m. Its arithmetic
    is elementwise IEEE float32 (correctly rounded everywhere), so that error is the same on every machine."""
    betas = make_betas(1000, 1e-4, 0.02, schedule)
    ours, theirs = DDPMDocScheduler(beta_schedule=schedule, clip_sample=clip), DDPMScheduler(beta_schedule=schedule, clip_sample=clip)
    alpha_bar = np.cumprod(1 - betas)
    largest_bound, largest_diffusers_error = 0.0, 0.0
    for t in range(20):
        g = torch.Generator().manual_seed(t)
        x0, noise, model_output = torch.rand(SHAPE, generator=g) * 2 - 1, torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)
        x = (math.sqrt(alpha_bar[t]) * x0.double() + math.sqrt(1 - alpha_bar[t]) * noise.double()).float()
        z = torch.randn(SHAPE, generator=torch.Generator().manual_seed(100 + t))  # what step draws from that seed
        reference, magnitude = posterior_step_float64(betas, t, x, model_output, z, clip)

        def error(scheduler):
            step = scheduler.step(model_output, t, x, generator=torch.Generator().manual_seed(100 + t))
            return (step.prev_sample.double() - reference).abs()

        bound = 8 * FLOAT32_UNIT_ROUNDOFF * magnitude
        assert (error(ours) <= bound).all(), f"t={t}: ours exceeds float32 rounding"
        largest_bound = max(largest_bound, float(bound.max()))
        largest_diffusers_error = max(largest_diffusers_error, float(error(theirs).max()))
    assert largest_diffusers_error > 20 * largest_bound


def test_seeded_chain_with_per_image_generators_and_custom_timesteps():
    custom = [999, 800, 500, 200, 20, 0]
    assert_same_samples(
        run_chain(DDPMDocScheduler(), timesteps=custom, generator_list=True),
        run_chain(DDPMScheduler(), timesteps=custom, generator_list=True),
    )


def test_learned_variance_is_a_log_variance():
    """Our "learned" reads log σ²; diffusers' reads σ². Feeding diffusers exp(ours) gives the same chain."""
    def as_variance(out):
        return torch.cat([out[:, :3], out[:, 3:].exp()], dim=1)

    ours = run_chain(DDPMDocScheduler(variance_type="learned", clip_sample=False), 50, transform_output=lambda o: o - 6.0 * (o > -10))
    theirs = run_chain(
        DDPMScheduler(variance_type="learned", clip_sample=False), 50, transform_output=lambda o: as_variance(o - 6.0 * (o > -10))
    )
    assert_same_samples(ours, theirs)


def test_fixed_large_log_samples_like_fixed_large():
    """diffusers' fixed_large_log takes √(log β) and produces NaN; ours samples with σ = √β."""
    assert torch.equal(run_chain(DDPMDocScheduler(variance_type="fixed_large_log"), 20), run_chain(DDPMDocScheduler(variance_type="fixed_large"), 20))
    assert torch.isnan(run_chain(DDPMScheduler(variance_type="fixed_large_log"), 20)).any()


def test_last_step_adds_no_noise():
    """Algorithm 2: x_0 = μ_θ(x_1, 1). With trailing spacing the last timestep is 99 > 0; still no noise."""
    s = DDPMDocScheduler(variance_type="fixed_large", timestep_spacing="trailing", clip_sample=False)
    s.set_timesteps(10)
    last = int(s.timesteps[-1])
    x = torch.randn(SHAPE)
    eps = toy_model(x, last, 3)
    out = s.step(eps, last, x, generator=torch.Generator().manual_seed(0))
    alpha_bar = float(s.alphas_cumprod[last])
    torch.testing.assert_close(out.prev_sample, (x - math.sqrt(1 - alpha_bar) * eps) / math.sqrt(alpha_bar), rtol=1e-5, atol=1e-5)


def test_per_sample_timesteps_equal_separate_steps():
    s = DDPMDocScheduler(variance_type="fixed_large")
    x = torch.randn(4, 3, 8, 8)
    t = torch.tensor([999, 500, 1, 0])
    eps = toy_model(x, 7, 3)
    batched = s.step(eps, t, x, generator=[torch.Generator().manual_seed(i) for i in range(4)]).prev_sample
    for i in range(4):
        single = s.step(eps[i : i + 1], int(t[i]), x[i : i + 1], generator=torch.Generator().manual_seed(i)).prev_sample
        torch.testing.assert_close(batched[i : i + 1], single, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("variance_type", ["fixed_small", "learned_range"])
def test_eps_form_mean_equals_posterior_mean_of_x0_hat(variance_type):
    """Eq. 11 equals μ̃_t(x_t, x̂_0) with x̂_0 from Eq. 15 (no clipping)."""
    s = DDPMDocScheduler(clip_sample=False, variance_type=variance_type)
    x_t = torch.randn(5, 3, 8, 8, dtype=torch.float64)
    out = torch.randn(5, 6 if variance_type == "learned_range" else 3, 8, 8, dtype=torch.float64).tanh()
    t = torch.tensor([1, 10, 100, 500, 999])
    p = s.p_mean_variance(out, x_t, t)
    via_x0 = s.q_posterior(p.pred_original_sample, x_t, t).mean
    torch.testing.assert_close(p.mean, via_x0, rtol=1e-10, atol=1e-12)
    # and x̂_0 of Eq. 15 by hand
    ab = s.alphas_cumprod[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(p.pred_original_sample, (x_t - (1 - ab).sqrt() * out[:, :3]) / ab.sqrt())


def test_add_noise_get_velocity_and_posterior_by_hand():
    s = DDPMDocScheduler()
    x0, eps = torch.randn(3, 1, 4, 4, dtype=torch.float64), torch.randn(3, 1, 4, 4, dtype=torch.float64)
    t = torch.tensor([0, 17, 999])
    b = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    ab = torch.cumprod(1 - b, 0)
    a_t = ab[t].view(-1, 1, 1, 1)
    x_t = s.add_noise(x0, eps, t)
    torch.testing.assert_close(x_t, a_t.sqrt() * x0 + (1 - a_t).sqrt() * eps)
    torch.testing.assert_close(s.get_velocity(x0, eps, t), a_t.sqrt() * eps - (1 - a_t).sqrt() * x0)
    q = s.q_posterior(x0, x_t, t)
    ab_prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])[t].view(-1, 1, 1, 1)
    beta = b[t].view(-1, 1, 1, 1)
    expected_mean = ab_prev.sqrt() * beta / (1 - a_t) * x0 + (1 - beta).sqrt() * (1 - ab_prev) / (1 - a_t) * x_t
    torch.testing.assert_close(q.mean, expected_mean)
    torch.testing.assert_close(q.variance, (1 - ab_prev) / (1 - a_t) * beta)
    # diffusers agrees on add_noise (float32 tables)
    torch.testing.assert_close(DDPMScheduler().add_noise(x0.float(), eps.float(), t), x_t.float(), rtol=1e-5, atol=1e-5)


def test_previous_timestep_and_len():
    s = DDPMDocScheduler()
    assert len(s) == 1000 and s.previous_timestep(10) == 9 and s.previous_timestep(0) == -1
    s.set_timesteps(10)
    assert s.timesteps.tolist() == [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
    assert s.previous_timestep(500) == 400 and s.previous_timestep(0) == -1
    assert s.previous_timestep(torch.tensor([900, 0])).tolist() == [800, -1]
    theirs = DDPMScheduler()
    theirs.set_timesteps(10)
    assert int(theirs.previous_timestep(500)) == 400


@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
@pytest.mark.parametrize("steps", [1, 3, 7, 10, 333, 1000])
def test_spacing_matches_diffusers(spacing, steps):
    ours, theirs = DDPMDocScheduler(timestep_spacing=spacing), DDPMScheduler(timestep_spacing=spacing)
    ours.set_timesteps(steps)
    theirs.set_timesteps(steps)
    assert ours.timesteps.tolist() == theirs.timesteps.tolist()[:steps]
    assert len(ours.timesteps) == steps


def test_respaced_fixed_large_uses_the_respaced_beta():
    """A 10-step chain's σ_t² for fixed_large is β'_k = 1 − ᾱ_{τ_k}/ᾱ_{τ_{k−1}}, not the 1000-step β."""
    s = DDPMDocScheduler(variance_type="fixed_large", clip_sample=False)
    s.set_timesteps(10)
    x, eps = torch.zeros(1, 1, 64, 64), torch.zeros(1, 1, 64, 64)
    z = s.step(eps, 500, x, generator=torch.Generator().manual_seed(0)).prev_sample
    ab = s.alphas_cumprod
    expected_std = math.sqrt(1 - float(ab[500] / ab[400]))
    assert float(z.std()) == pytest.approx(expected_std, rel=0.05)


def test_config_round_trips_with_diffusers():
    ours = DDPMDocScheduler(beta_schedule="squaredcos_cap_v2", variance_type="fixed_large", prediction_type="v_prediction")
    theirs = DDPMScheduler.from_config(ours.config)
    back = DDPMDocScheduler.from_config(theirs.config)
    for key in DDPMScheduler().config:
        if not key.startswith("_"):
            assert theirs.config[key] == ours.config[key] == back.config[key], key
    assert DDPMDocScheduler().config.keys() - {"_class_name", "_diffusers_version"} >= {
        k for k in DDPMScheduler().config if not k.startswith("_")
    }
    ddim = DDIMScheduler.from_config(ours.config)
    assert isinstance(ddim, DDIMScheduler) and ddim.config.beta_schedule == "squaredcos_cap_v2"
    assert "DDIMScheduler" in [c.__name__ for c in ours.compatibles]


def test_save_and_load(tmp_path):
    s = DDPMDocScheduler(variance_type="learned_range", trained_betas=np.linspace(1e-4, 0.02, 1000))
    s.save_pretrained(tmp_path)
    loaded = DDPMDocScheduler.from_pretrained(tmp_path)
    assert torch.equal(loaded.betas, s.betas) and loaded.config.variance_type == "learned_range"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(beta_schedule="cosine"), "beta_schedule must be one of"),
        (dict(variance_type="fixed"), "variance_type must be one of"),
        (dict(prediction_type="eps"), "prediction_type must be one of"),
        (dict(timestep_spacing="uniform"), "timestep_spacing must be one of"),
        (dict(beta_end=1.5), r"betas must lie in \(0, 1\)"),
        (dict(beta_start=0.0), r"betas must lie in \(0, 1\)"),
        (dict(trained_betas=[0.1] * 999), "trained_betas has 999 values"),
        (dict(num_train_timesteps=0), "num_train_timesteps must be an integer ≥ 1"),
        (dict(num_train_timesteps=1, rescale_betas_zero_snr=True), "needs num_train_timesteps ≥ 2"),
        (dict(thresholding=True, sample_max_value=0.0), "sample_max_value must be > 0"),
    ],
)
def test_invalid_configuration_is_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DDPMDocScheduler(**kwargs)


def test_invalid_inputs_are_named():
    s = DDPMDocScheduler(variance_type="learned")
    with pytest.raises(ValueError, match="num_inference_steps must be an integer in"):
        s.set_timesteps(1001)
    with pytest.raises(ValueError, match="strictly descending"):
        s.set_timesteps(timesteps=[10, 20])
    with pytest.raises(ValueError, match="exactly one"):
        s.set_timesteps(10, timesteps=[5, 1])
    with pytest.raises(ValueError, match=r"must lie in \[0, 1000\)"):
        s.set_timesteps(timesteps=[1000, 5])
    x = torch.zeros(1, 3, 8, 8)
    with pytest.raises(ValueError, match="needs twice the sample's channels"):
        s.step(torch.zeros(1, 3, 8, 8), 10, x)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1000\)"):
        s.add_noise(x, x, torch.tensor([1000]))
    s.set_timesteps(10)
    with pytest.raises(ValueError, match="not in the current schedule"):
        s.step(torch.zeros(1, 6, 8, 8), 55, x)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1000\)"):
        s.previous_timestep(torch.tensor([-1, 500]))
    with pytest.raises(ValueError, match="leading-spaced"):
        DDPMDocScheduler(steps_offset=999).set_timesteps(2)


@pytest.mark.parametrize("variance_type", list(VARIANCE_TYPES))
@pytest.mark.parametrize("prediction_type", list(PREDICTION_TYPES))
def test_one_step_process_samples_as_diffusers_and_decodes_with_beta_1(variance_type, prediction_type):
    """T = 1: the chain is the decoder alone. It samples as diffusers does (no noise at the last step), and its
    decoder variance is β_1 for every fixed type and at both ends of learned_range (no second step's β̃ exists)."""
    config = dict(num_train_timesteps=1, beta_start=0.3, variance_type=variance_type, prediction_type=prediction_type)
    ours = DDPMDocScheduler(**config)
    theirs = DDPMScheduler(**config)
    learned = variance_type.startswith("learned")
    transform = (lambda o: torch.cat([o[:, :3], o[:, 3:].exp()], dim=1)) if variance_type == "learned" else None
    assert_same_samples(run_chain(ours, 1), run_chain(theirs, 1, transform_output=transform))
    assert ours.timesteps.tolist() == [0] and ours.chain(1) is ours.chain() is ours.train_tables
    x_t = torch.randn(SHAPE, dtype=torch.float64)
    out = torch.cat([torch.randn(SHAPE, dtype=torch.float64), torch.full(SHAPE, 0.3, dtype=torch.float64)], 1) if learned else torch.randn(SHAPE, dtype=torch.float64)
    p = ours.p_mean_variance(out, x_t, 0)
    if variance_type != "learned":
        torch.testing.assert_close(p.log_variance.expand(SHAPE), torch.full(SHAPE, math.log(0.3), dtype=torch.float64), rtol=1e-15, atol=0)
    q = ours.q_posterior(p.pred_original_sample, x_t, 0)
    assert float(q.variance) == 0.0 and torch.equal(q.mean, p.pred_original_sample)  # x_0 itself: a point mass


def test_one_step_bound_is_prior_plus_decoder():
    """The bound of T = 1 is L_T + L_0, L_0 the discretised Gaussian of Eq. 13 with σ² = β_1 around x̂_0, here
    against scipy's normal CDF in float64."""
    from scipy import stats

    from hf_ddpm import bits_per_dim

    s = DDPMDocScheduler(num_train_timesteps=1, beta_start=0.01, clip_sample=False)
    x0 = torch.tensor([-1.0, -0.2, 0.0, 0.6, 1.0], dtype=torch.float64).view(1, 1, 1, 5).round(decimals=2)
    x0 = torch.round((x0 + 1) * 127.5) / 127.5 - 1
    eps = torch.randn(x0.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    model = lambda x, t: 0.9 * eps  # noqa: E731 (a fixed imperfect ε_θ)
    bound = bits_per_dim(model, s, x0, noise=eps)
    ab = 1 - 0.01
    x1 = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * eps
    mean = ((x1 - math.sqrt(1 - ab) * 0.9 * eps) / math.sqrt(ab)).numpy().ravel()
    x, sigma = x0.numpy().ravel(), math.sqrt(0.01)
    upper = np.where(x > 0.999, np.inf, (x + 1 / 255 - mean) / sigma)
    lower = np.where(x < -0.999, -np.inf, (x - 1 / 255 - mean) / sigma)
    decoder = -np.mean(np.log(stats.norm.cdf(upper) - stats.norm.cdf(lower))) / math.log(2)
    prior = np.mean(0.5 * (-math.log(1 - ab) - 1 + (1 - ab) + ab * x**2)) / math.log(2)
    assert bound.terms.shape == (1, 1)
    assert float(bound.terms[0, 0]) == pytest.approx(decoder, rel=1e-9)
    assert float(bound.total[0]) == pytest.approx(prior + decoder, rel=1e-9)


def test_thresholding_below_one_thresholds_at_sample_max_value():
    """diffusers clamps the dynamic threshold s to [1, sample_max_value]; below 1 that is sample_max_value itself."""
    s = DDPMDocScheduler(thresholding=True, sample_max_value=0.5, prediction_type="sample", clip_sample=False)
    x0 = torch.linspace(-3, 3, 2 * 3 * 8 * 8).view(SHAPE)
    p = s.p_mean_variance(x0, torch.zeros(SHAPE), 500)
    assert torch.equal(p.pred_original_sample, x0.clamp(-0.5, 0.5) / 0.5)


def test_zero_snr_epsilon_refuses_only_where_alpha_bar_is_zero():
    """ε-prediction under zero terminal SNR: only timestep T−1 (ᾱ = 0) has no x̂_0. Chains that skip it sample as
    diffusers does; a step, loss or bound term there raises, naming the timestep and the fix (on the host for a
    host timestep, from the device check for per-sample tensors)."""
    from hf_ddpm.losses import training_loss

    config = dict(rescale_betas_zero_snr=True, prediction_type="epsilon")
    s = DDPMDocScheduler(**config)
    s.set_timesteps(50)  # leading: 980 … 0
    assert int(s.timesteps[0]) == 980
    assert_same_samples(run_chain(DDPMDocScheduler(**config), 50), run_chain(DDPMScheduler(**config), 50))
    x0, noise = torch.rand(SHAPE) * 2 - 1, torch.randn(SHAPE)
    t = torch.tensor([999, 3])
    x_t = s.add_noise(x0, noise, t)  # the forward process is defined everywhere
    assert torch.isfinite(training_loss(s, noise, x0, x_t, noise, t, "simple").per_example).all()  # the ε target needs no x̂_0
    message = r"cannot recover x̂_0 at timestep 999, where ᾱ = 0.*v_prediction"
    with pytest.raises(ValueError, match=message):
        s.p_mean_variance(noise, x_t, 999)
    with pytest.raises(RuntimeError, match=message):
        s.p_mean_variance(noise, x_t, t)
    with pytest.raises(RuntimeError, match=message):
        training_loss(s, noise, x0, x_t, noise, t, "vlb")
    assert torch.isfinite(s.p_mean_variance(noise, x_t, torch.tensor([998, 3])).mean).all()
    trailing = DDPMDocScheduler(**config, timestep_spacing="trailing")
    trailing.set_timesteps(10)
    with pytest.raises(ValueError, match=message):
        trailing.step(noise, trailing.timesteps[0], x_t)
