"""DDPMDocScheduler: compatibility with diffusers' DDPMScheduler, the paper's identities, validation."""

import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from diffusers.utils.torch_utils import randn_tensor

from hf_ddpm import DDPMDocScheduler
from hf_ddpm.options import describe_beta_schedule
from hf_ddpm.scheduler import BETA_SCHEDULES, LEARNED_VARIANCE_TYPES, PREDICTION_TYPES, TIMESTEP_SPACINGS, VARIANCE_TYPES
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
        (dict(num_train_timesteps=1), "num_train_timesteps must be an integer"),
        (dict(rescale_betas_zero_snr=True), "v_prediction"),
        (dict(thresholding=True, sample_max_value=0.5), "sample_max_value"),
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


CHAIN_CONFIGS = [
    dict(),
    dict(clip_sample=False, variance_type="fixed_large"),
    dict(variance_type="learned_range", prediction_type="v_prediction"),
    dict(variance_type="learned", clip_sample=False),
    dict(prediction_type="sample", thresholding=True, sample_max_value=1.5),
]


@pytest.mark.parametrize("config", CHAIN_CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default")
@pytest.mark.parametrize("spacing", [dict(num_inference_steps=None), dict(num_inference_steps=50), dict(num_inference_steps=7),
                                     dict(timesteps=[999, 640, 3, 2, 0])], ids=["train", "50", "7", "custom"])
def test_chain_gives_the_distribution_step_samples_from(config, spacing):
    """``p_mean_variance(..., chain=s.chain(K))`` is p_θ of the step ``set_timesteps(K)`` + ``step`` takes: the same
    mean and σ² (step adds √σ² z with z from the same seed), at one timestep and per sample; ``chain`` installs
    nothing. Inputs are float64 and both read the same tables: the means agree bit for bit, and the sample
    within one float64 rounding of mean + σz (whether the step fuses the multiply-add or not)."""
    s = DDPMDocScheduler(**config)
    chain = s.chain(**spacing)
    assert s.timesteps.tolist() == list(range(999, -1, -1))  # still the training chain: chain() installs nothing
    if any(v is not None for v in spacing.values()):
        s.set_timesteps(**spacing)
    assert chain.timesteps.flip(0).tolist() == s.timesteps.tolist()
    channels = SHAPE[1] * (2 if s.config.variance_type.startswith("learned") else 1)
    x_t = torch.randn(SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out = torch.randn(SHAPE[0], channels, *SHAPE[2:], dtype=torch.float64, generator=torch.Generator().manual_seed(2)).tanh()
    per_sample = s.timesteps[[0, -1]]  # first and last step of the chain, one per sample
    for t in [int(s.timesteps[0]), int(s.timesteps[len(s.timesteps) // 2]), int(s.timesteps[-1]), per_sample]:
        p = s.p_mean_variance(out, x_t, t, chain=chain)
        step = s.step(out, t, x_t, generator=torch.Generator().manual_seed(3))
        k = torch.as_tensor(chain.timesteps.tolist().index(int(t)) if isinstance(t, int) else [len(chain) - 1, 0])
        noise = randn_tensor(SHAPE, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        draws = (k > 0).view(-1, 1, 1, 1).expand(SHAPE[0], 1, 1, 1).double()  # an int timestep: not at the last step
        added = draws * p.variance.sqrt() * noise
        rounding = 2.0**-52 * (p.mean.abs() + added.abs())  # one rounding of the sum, plus one of σ·z
        torch.testing.assert_close(step.prev_sample, p.mean + added, rtol=0, atol=float(rounding.max()))
        if not draws.all():  # the samples at their last step get the mean itself
            last = ~draws.bool().view(-1)
            assert torch.equal(step.prev_sample[last], p.mean[last])
        assert torch.equal(step.pred_original_sample, p.pred_original_sample)


@pytest.mark.parametrize("timesteps", [[999, 640, 3, 2, 0], [500, 499, 100]])
def test_respaced_posterior_against_float64_transcription(timesteps):
    """q(x_{τ_{k−1}} | x_{τ_k}, x_0) of a respaced chain: Eq. 7 with β'_k = 1 − ᾱ_{τ_k}/ᾱ_{τ_{k−1}}, by hand."""
    s = DDPMDocScheduler(beta_schedule="squaredcos_cap_v2")
    chain = s.chain(timesteps=timesteps)
    alpha_bar = np.cumprod(1 - make_betas(1000, 1e-4, 0.02, "squaredcos_cap_v2"))
    ascending = timesteps[::-1]
    x0, x_t = torch.randn(len(ascending), 1, 2, 2, dtype=torch.float64), torch.randn(len(ascending), 1, 2, 2, dtype=torch.float64)
    q = s.q_posterior(x0, x_t, torch.tensor(ascending), chain=chain)
    for i, t in enumerate(ascending):
        ab, ab_prev = alpha_bar[t], (alpha_bar[ascending[i - 1]] if i > 0 else 1.0)
        beta = 1 - ab / ab_prev
        variance = (1 - ab_prev) / (1 - ab) * beta
        x0_coef, xt_coef = math.sqrt(ab_prev) * beta / (1 - ab), math.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab)
        # This transcription's own float64 error (u = 2⁻⁵³): np.cumprod's ᾱ_t is off by up to (t + 1)u relative, and
        # the differences 1 − ᾱ_{τ_k}/ᾱ_{τ_{k−1}}, 1 − ᾱ_{τ_k}, 1 − ᾱ_{τ_{k−1}} turn that into relative errors
        # magnified by 1/β', 1/(1 − ᾱ_{τ_k}), 1/(1 − ᾱ_{τ_{k−1}}) (the tables avoid these cancellations: −expm1).
        u = 2.0**-53
        relative = 4 * (t + 2) * u * (1 / beta + 1 / (1 - ab) + (1 / (1 - ab_prev) if i > 0 else 0.0))
        torch.testing.assert_close(q.mean[i], x0_coef * x0[i] + xt_coef * x_t[i], rtol=0,
                                   atol=relative * float((x0_coef * x0[i].abs() + xt_coef * x_t[i].abs()).max()))
        assert float(q.variance[i]) == pytest.approx(variance, rel=relative, abs=0)
    assert torch.equal(q.pred_original_sample, x0)
    train = s.q_posterior(x0, x_t, torch.tensor(ascending))  # the default is the training chain: β_t, not β'_k
    assert not torch.allclose(train.variance, q.variance)
    with pytest.raises(ValueError, match="not in the current schedule"):
        s.q_posterior(x0[:1], x_t[:1], 1, chain=chain)


def test_chain_validates_as_set_timesteps():
    s = DDPMDocScheduler()
    for kwargs, match in [(dict(num_inference_steps=1001), "num_inference_steps must be an integer in"),
                          (dict(timesteps=[10, 20]), "strictly descending"),
                          (dict(num_inference_steps=10, timesteps=[5, 1]), "at most one"),
                          (dict(timesteps=[1000, 5]), r"must lie in \[0, 1000\)")]:
        with pytest.raises(ValueError, match=match):
            s.chain(**kwargs)
    assert s.chain() is s.train_tables and s.chain(1000) is s.train_tables


SAVED_CONFIGS = [
    dict(variance_type="learned_range", trained_betas=np.linspace(1e-4, 0.02, 1000).tolist()),
    dict(beta_schedule="squaredcos_cap_v2", variance_type="fixed_large", prediction_type="v_prediction", clip_sample=False),
    dict(num_train_timesteps=50, beta_schedule="scaled_linear", timestep_spacing="trailing", thresholding=True),
    dict(prediction_type="sample", timestep_spacing="leading", steps_offset=1, variance_type="learned"),
]


@pytest.mark.parametrize("config", SAVED_CONFIGS, ids=range(len(SAVED_CONFIGS)))
def test_save_and_reload_steps_alike(tmp_path, config):
    """As diffusers' ``check_over_configs``: a saved and reloaded scheduler takes bit-identical steps."""
    s = DDPMDocScheduler(**config)
    s.save_pretrained(tmp_path)
    loaded = DDPMDocScheduler.from_pretrained(tmp_path)
    channels = SHAPE[1] * (2 if s.config.variance_type.startswith("learned") else 1)
    x = torch.randn(SHAPE)
    out = toy_model(x, 0, channels)
    for scheduler in (s, loaded):
        scheduler.set_timesteps(10)
    for t in [s.timesteps[0], s.timesteps[5], s.timesteps[-1], s.timesteps[[2, 9]]]:
        ours, theirs = (sch.step(out, t, x, generator=torch.Generator().manual_seed(0)) for sch in (s, loaded))
        assert torch.equal(ours.prev_sample, theirs.prev_sample)
        assert torch.equal(ours.pred_original_sample, theirs.pred_original_sample)


def test_option_tables_serve_membership_choices_and_descriptions():
    """The option tables are what the scheduler accepts, argparse offers them as ``choices=``, and each carries
    its texts (a description template with bad fields would fail here, not on the model card)."""
    import argparse

    for name, table in [("variance_type", VARIANCE_TYPES), ("prediction_type", PREDICTION_TYPES),
                        ("beta_schedule", BETA_SCHEDULES), ("timestep_spacing", TIMESTEP_SPACINGS)]:
        for option in table:
            DDPMDocScheduler(**{name: option})
        parser = argparse.ArgumentParser(exit_on_error=False)
        parser.add_argument("--x", choices=table)
        assert parser.parse_args(["--x", next(iter(table))]).x == next(iter(table))
        with pytest.raises(argparse.ArgumentError, match=", ".join(repr(o) for o in table)):
            parser.parse_args(["--x", "unknown"])
    assert set(LEARNED_VARIANCE_TYPES) == {n for n in VARIANCE_TYPES if n.startswith("learned")}
    assert {p.target for p in PREDICTION_TYPES.values()} == {"ε", "x_0", "v"}
    for schedule in BETA_SCHEDULES:
        assert describe_beta_schedule(schedule, 1e-4, 0.02)
    assert describe_beta_schedule("linear", 1e-4, 0.02).startswith("linear, β_1 = 0.0001 → β_T = 0.02")
