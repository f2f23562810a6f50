"""Class labels and classifier-free guidance through the pipeline's API: the guidance formula against a hand
computation for every parameterisation, s = 1 as the conditional model and s = 0 as the null label (sampling and
bound), the guided chain's bound against a float64 transcription of its terms, the marginal bound against its
log-sum-exp, and every bad input named by its parameter."""

import math

import numpy as np
import pytest
import torch
from diffusers.utils.torch_utils import randn_tensor
from helpers import CLASS_NAMES, tiny_conditional_pipeline, tiny_unet

from hf_ddpm import DDPMDocPipeline, DDPMDocScheduler
from hf_ddpm.data import uint8_to_model_range
from hf_ddpm.errors import ParameterError
from hf_ddpm.guidance import GuidedModel
from hf_ddpm.likelihood import bits_per_dim, sampling_chain

BETAS = np.linspace(0.01, 0.3, 8)  # large enough that every term is well inside float64's range
NULL = len(CLASS_NAMES)  # the trainer's null label: index K


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(count: int, seed: int = 0) -> torch.Tensor:
    """8-bit grey 8×8 images, [N, 1, 8, 8] in [0, 1]."""
    return torch.randint(0, 256, (count, 1, 8, 8), generator=seeded(seed)).double() / 255


def model_range(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] → the 8-bit grid of [−1, 1] in float32, as the pipeline converts images (hf_ddpm.data's conversion)."""
    return uint8_to_model_range(torch.round(x * 255).to(torch.uint8))


def pipeline(prediction_type="epsilon", variance_type="fixed_small", **config):
    learned = variance_type in ("learned", "learned_range")
    return tiny_conditional_pipeline(out_channels=2 if learned else 1, trained_betas=BETAS.tolist(),
                                     prediction_type=prediction_type, variance_type=variance_type, clip_sample=False,
                                     **config)


def branch(unet, x_t, t, label: int) -> torch.Tensor:
    """One branch of the network alone, in float64: ε_θ(x_t, t, y) (or its x_0 / v prediction, and variance)."""
    labels = torch.full((len(x_t),), label, dtype=torch.long)
    return unet(x_t, t, class_labels=labels).sample.double()


# ---------------------------------------------------------------------------------------------- the guidance formula


def implied_eps(prediction: torch.Tensor, x_t: torch.Tensor, alpha_bar: torch.Tensor, kind: str) -> torch.Tensor:
    """ε implied by a network's prediction at (x_t, t): x_t = √ᾱ x_0 + √(1−ᾱ) ε, v = √ᾱ ε − √(1−ᾱ) x_0."""
    a, b = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
    if kind == "epsilon":
        return prediction
    if kind == "sample":
        return (x_t - a * prediction) / b
    return a * prediction + b * x_t  # v_prediction


@pytest.mark.parametrize("prediction_type, variance_type", [
    ("epsilon", "fixed_small"), ("sample", "fixed_large"), ("v_prediction", "fixed_small"),
    ("epsilon", "learned_range"), ("v_prediction", "learned"), ("sample", "learned_range"),
])
def test_the_guided_step_is_the_hand_guided_eps_with_the_conditional_variance(prediction_type, variance_type):
    """ε̃ = ε_∅ + s·(ε_c − ε_∅) of the two branches' implied ε, formed by hand in float64; p_θ of the guided output
    has x̂_0(ε̃), the posterior mean μ̃(x_t, x̂_0(ε̃)) (Eq. 7) and the conditional branch's variance."""
    pipe = pipeline(prediction_type, variance_type)
    s = 2.5
    t = torch.tensor([0, 1, 3, 5, 7, 2])
    x_t = torch.randn(6, 1, 8, 8, generator=seeded(1))
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    guided = GuidedModel(pipe.unet, s, NULL)(x_t, t, y).double()

    betas = torch.tensor(BETAS)
    alpha_bar = torch.cumprod(1 - betas, 0)
    alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])
    ab, ab_prev, beta = (v[t].view(-1, 1, 1, 1) for v in (alpha_bar, alpha_bar_prev, betas))
    x64 = x_t.double()
    conditional = torch.cat([branch(pipe.unet, x_t[i : i + 1], t[i : i + 1], int(y[i])) for i in range(6)])
    null = torch.cat([branch(pipe.unet, x_t[i : i + 1], t[i : i + 1], NULL) for i in range(6)])
    eps_c, eps_null = (implied_eps(out[:, :1], x64, ab, prediction_type) for out in (conditional, null))
    eps = eps_null + s * (eps_c - eps_null)
    x0 = (x64 - (1 - ab).sqrt() * eps) / ab.sqrt()  # Eq. 15
    mean = (ab_prev.sqrt() * beta / (1 - ab)) * x0 + ((1 - beta).sqrt() * (1 - ab_prev) / (1 - ab)) * x64  # Eq. 7

    p = pipe.scheduler.p_mean_variance(guided, x64, t)
    torch.testing.assert_close(p.pred_original_sample, x0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(p.mean, mean, rtol=1e-5, atol=1e-5)
    # the variance: the conditional branch's, whatever s
    expected_variance = pipe.scheduler.p_mean_variance(conditional, x64, t).log_variance
    torch.testing.assert_close(p.log_variance.expand_as(x64), expected_variance.expand_as(x64), rtol=1e-5, atol=1e-5)
    if variance_type == "learned":  # the network's own log σ², from the conditional branch
        torch.testing.assert_close(p.log_variance, conditional[:, 1:], rtol=1e-5, atol=1e-5)
    # s = 1 calls the conditional branch alone, s = 0 the null branch alone
    torch.testing.assert_close(GuidedModel(pipe.unet, 1.0, NULL)(x_t, t, y).double(), conditional, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(GuidedModel(pipe.unet, 0.0, NULL)(x_t, t, y).double(), null, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------ s = 1 and s = 0: sampling and bound


def hand_chain(pipe, labels: torch.Tensor, s: float, seed: int, steps: int, draw: bool = False) -> torch.Tensor:
    """Algorithm 2 written out with separate network calls per branch: x_T ~ N(0, I) (then, with ``draw``, the labels
    uniformly over the K classes), then scheduler.step with the guided ε (s = 1: the conditional branch only; s = 0:
    the null branch only), from one generator."""
    generator = seeded(seed)
    x = randn_tensor((len(labels), 1, 8, 8), generator=generator, dtype=torch.float32)
    if draw:
        labels = torch.randint(NULL, (len(labels),), generator=generator)
    null = torch.full_like(labels, NULL)
    pipe.scheduler.set_timesteps(steps)
    for t in pipe.scheduler.timesteps.tolist():
        timestep = torch.tensor(t)
        if s == 1.0:
            output = pipe.unet(x, timestep, class_labels=labels).sample
        elif s == 0.0:
            output = pipe.unet(x, timestep, class_labels=null).sample
        else:
            c, u = pipe.unet(x, timestep, class_labels=labels).sample, pipe.unet(x, timestep, class_labels=null).sample
            output = u + s * (c - u)
        x = pipe.scheduler.step(output, t, x, generator=generator).prev_sample
    return (x / 2 + 0.5).clamp(0, 1)


@pytest.mark.parametrize("s", [1.0, 0.0, 3.0])
def test_sampling_at_s_is_the_hand_written_chain(s):
    """s = 1 samples the conditional model, s = 0 the null label's, s = 3 the guided ε — each as a loop that calls
    the branches one by one (the pipeline batches both into one call)."""
    pipe = tiny_conditional_pipeline()
    labels = torch.tensor([2, 0, 1, 1])
    out = pipe(class_labels=["emu", "cat", "dog", 1], guidance_scale=s, num_inference_steps=8, generator=seeded(4),
               output_type="pt")
    assert out.class_labels.tolist() == labels.tolist()
    tolerance = dict(rtol=0, atol=0) if s in (0.0, 1.0) else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.images, hand_chain(pipe, labels, s, 4, 8), **tolerance)
    respaced = pipe(class_labels=labels, guidance_scale=s, num_inference_steps=3, generator=seeded(4), output_type="pt")
    torch.testing.assert_close(respaced.images, hand_chain(pipe, labels, s, 4, 3), **tolerance)


def test_without_labels_they_are_drawn_uniformly_after_x_T_and_returned():
    pipe = tiny_conditional_pipeline()
    out = pipe(batch_size=64, num_inference_steps=2, generator=seeded(7), output_type="pt")
    generator = seeded(7)
    randn_tensor((64, 1, 8, 8), generator=generator)
    assert out.class_labels.tolist() == torch.randint(3, (64,), generator=generator).tolist()
    assert sorted(set(out.class_labels.tolist())) == [0, 1, 2]
    torch.testing.assert_close(out.images, hand_chain(pipe, out.class_labels, 1.0, 7, 2, draw=True), rtol=0, atol=0)


def test_the_bound_at_s_1_is_the_conditional_and_at_s_0_the_null_labels():
    """log_likelihood(class_labels=y) is bits_per_dim of the network with y fixed; guidance_scale=0 that of the network
    with the null label (with or without labels: they are not read)."""
    pipe = pipeline()
    x = images(5)
    eps = torch.randn(5, 1, 8, 8, generator=seeded(2))
    y = torch.tensor([0, 2, 1, 1, 0])
    fixed = lambda label: (lambda x_t, t: pipe.unet(x_t, t, class_labels=label).sample)  # noqa: E731
    conditional = bits_per_dim(fixed(y), pipe.scheduler, model_range(x), noise=eps)
    assert torch.equal(pipe.log_likelihood(x, class_labels=y, noise=eps).total, conditional.total)
    assert torch.equal(pipe.log_likelihood(x, class_labels=["cat", "emu", "dog", "dog", "cat"], noise=eps).total,
                       conditional.total)
    null = bits_per_dim(fixed(torch.full((5,), NULL)), pipe.scheduler, model_range(x), noise=eps)
    assert torch.equal(pipe.log_likelihood(x, guidance_scale=0, noise=eps).total, null.total)
    assert torch.equal(pipe.log_likelihood(x, class_labels=y, guidance_scale=0, noise=eps).total, null.total)
    # bits_per_dim's own labels: the same numbers
    own = bits_per_dim(pipe.unet, pipe.scheduler, model_range(x), noise=eps, class_labels=y)
    assert torch.equal(own.total, conditional.total)


# ---------------------------------------------------------------------------- the guided chain's bound, transcribed


def chain_tables(taus: list[int]) -> dict[str, torch.Tensor]:
    """The chain τ_0 < … < τ_{N−1} as a diffusion process of its own (float64): ᾱ'_k = ᾱ_{τ_k}, β'_k = 1 −
    ᾱ'_k/ᾱ'_{k−1} (ᾱ'_{−1} = 1), β̃'_k = β'_k (1 − ᾱ'_{k−1})/(1 − ᾱ'_k), the decoder's β̃'_0 replaced by β̃'_1."""
    alpha_bar = torch.cumprod(1 - torch.tensor(BETAS), 0)[taus]
    prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])
    beta = 1 - alpha_bar / prev
    beta_tilde = beta * (1 - prev) / (1 - alpha_bar)
    beta_tilde[0] = beta_tilde[1]
    return {"alpha_bar": alpha_bar, "prev": prev, "beta": beta, "beta_tilde": beta_tilde}


def transcribed_bound(pipe, x0: torch.Tensor, eps: torch.Tensor, labels: torch.Tensor, s: float, taus: list[int],
                      prediction_type: str, variance_type: str) -> torch.Tensor:
    """L_T + Σ_k KL(q(x_{τ_{k−1}} | x_{τ_k}, x_0) ‖ p_s(x_{τ_{k−1}} | x_{τ_k}, y)) + (−log p_s(x_0 | x_{τ_0}, y)) per
    image in bits/dim, every term written from its equation in float64, the two branches called one by one."""
    c = chain_tables(taus)
    D = x0[0].numel()
    total = 0.5 * (-(1 - c["alpha_bar"][-1]).log() - 1 + (1 - c["alpha_bar"][-1])
                   + c["alpha_bar"][-1] * x0**2).flatten(1).sum(1)  # L_T = KL(N(√ᾱ x_0, 1 − ᾱ) ‖ N(0, 1))
    for k, tau in enumerate(taus):
        ab, prev, beta, beta_tilde = (c[name][k] for name in ("alpha_bar", "prev", "beta", "beta_tilde"))
        x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps  # Eq. 4
        t = torch.full((len(x0),), tau)
        conditional = pipe.unet(x_t.float(), t, class_labels=labels).sample.double()
        null = pipe.unet(x_t.float(), t, class_labels=torch.full_like(labels, NULL)).sample.double()
        eps_hat = [implied_eps(out[:, :1], x_t, ab, prediction_type) for out in (conditional, null)]
        guided = eps_hat[1] + s * (eps_hat[0] - eps_hat[1])
        x0_hat = (x_t - (1 - ab).sqrt() * guided) / ab.sqrt()
        mean_coef_x0, mean_coef_xt = prev.sqrt() * beta / (1 - ab), (1 - beta).sqrt() * (1 - prev) / (1 - ab)
        mean = mean_coef_x0 * x0_hat + mean_coef_xt * x_t  # μ̃(x_t, x̂_0(ε̃)), Eq. 7
        if variance_type == "fixed_small":
            log_var = beta_tilde.log().expand_as(x0)
        else:  # learned_range, from the conditional branch: log σ² = f log β' + (1 − f) log β̃'
            f = (conditional[:, 1:] + 1) / 2
            log_var = f * beta.log() + (1 - f) * beta_tilde.log()
        if k == 0:  # the discretised Gaussian decoder (Eq. 13) over the bins [x − 1/255, x + 1/255]
            sigma = (0.5 * log_var).exp()
            upper = torch.special.ndtr((x0 + 1 / 255 - mean) / sigma)
            lower = torch.special.ndtr((x0 - 1 / 255 - mean) / sigma)
            mass = torch.where(x0 < -0.999, upper, torch.where(x0 > 0.999, 1 - lower, upper - lower))
            term = -mass.log()
        else:  # KL(N(μ̃, β̃') ‖ N(μ, σ²)) with μ̃ = μ̃(x_t, x_0)
            q_mean = mean_coef_x0 * x0 + mean_coef_xt * x_t
            term = 0.5 * (log_var - beta_tilde.log() - 1 + beta_tilde / log_var.exp() + (q_mean - mean) ** 2
                          / log_var.exp())
        total = total + term.flatten(1).sum(1)
    return total / (D * math.log(2.0))


@pytest.mark.parametrize("prediction_type, variance_type", [("epsilon", "fixed_small"), ("v_prediction", "learned_range")])
@pytest.mark.parametrize("steps", [None, 4])
def test_the_guided_chains_bound_is_its_float64_transcription(prediction_type, variance_type, steps):
    pipe = pipeline(prediction_type, variance_type)
    x = images(4, seed=3)
    eps = torch.randn(4, 1, 8, 8, generator=seeded(5), dtype=torch.float64)
    y = torch.tensor([1, 0, 2, 1])
    s = 2.5
    taus = sampling_chain(pipe.scheduler, steps).tolist()
    assert taus == (list(range(8)) if steps is None else [0, 2, 4, 6])  # 'leading' spacing
    bound = pipe.log_likelihood(x, class_labels=y, guidance_scale=s, num_inference_steps=steps, noise=eps.float())
    expected = transcribed_bound(pipe, model_range(x).double(), eps.float().double(), y, s, taus, prediction_type,
                                 variance_type)
    # the network runs in float32 (x_t and the batched call rounded there): agreement to ~1e-6 of the bound
    torch.testing.assert_close(bound.total, expected, rtol=1e-5, atol=0)


# ---------------------------------------------------------------------------------------------- the marginal bound


def test_the_marginal_bound_is_the_log_sum_exp_of_the_class_bounds():
    """−log₂ Σ_y π(y) 2^(−D·L_y) / D, with π the saved frequencies (not uniform here), from per-class bounds under
    the same ε and timesteps; its classifier is argmin_y L_y."""
    pi = [0.5, 0.3, 0.2]
    pipe = pipeline(class_frequencies=pi)
    x = images(6, seed=1)
    eps = torch.randn(6, 1, 8, 8, generator=seeded(8))
    for timesteps in (None, [0, 3, 6]):
        marginal = pipe.log_likelihood(x, noise=eps, timesteps=timesteps)
        per_class = torch.stack([pipe.log_likelihood(x, class_labels=[y] * 6, noise=eps, timesteps=timesteps).total
                                 for y in range(3)], dim=1)
        torch.testing.assert_close(marginal.class_totals, per_class, rtol=1e-12, atol=0)
        D = 64
        nats = per_class.numpy() * D * math.log(2)
        weighted = np.log(np.array(pi)) - nats
        top = weighted.max(axis=1, keepdims=True)
        expected = -(top[:, 0] + np.log(np.exp(weighted - top).sum(axis=1))) / (D * math.log(2))
        np.testing.assert_allclose(marginal.total.numpy(), expected, rtol=1e-12)
        assert marginal.bits_per_dim == pytest.approx(expected.mean(), rel=1e-12)
        # within [min_y L_y, min_y L_y + log₂(1/π(y*))/D]
        best = per_class.min(dim=1)
        assert (marginal.total >= best.values - 1e-12).all()
        assert (marginal.total <= best.values - torch.tensor(pi).log2()[best.indices] / D + 1e-12).all()
        assert marginal.predicted_labels.tolist() == best.indices.tolist()
        truth = torch.tensor([0, 1, 2, 0, 1, 2])
        assert marginal.accuracy(truth) == pytest.approx((best.indices == truth).double().mean().item())


# ------------------------------------------------------------------------------------------------------ bad input


def unconditional():
    pipe = DDPMDocPipeline(unet=tiny_unet(), scheduler=DDPMDocScheduler(num_train_timesteps=8))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("make, call, parameter, message", [
    (unconditional, lambda p: p(class_labels=[0], num_inference_steps=1), "class_labels", "is for class-conditional"),
    (unconditional, lambda p: p(guidance_scale=2.0, num_inference_steps=1), "guidance_scale", "takes no labels"),
    (unconditional, lambda p: p.log_likelihood(images(1), class_labels=[0]), "class_labels", "is for class-cond"),
    (unconditional, lambda p: p.get_label_ids(["cat"]), "label", "is for class-conditional"),
    (tiny_conditional_pipeline, lambda p: p(class_labels=[3], num_inference_steps=1), "class_labels",
     "holds 3, which is not a class id"),
    (tiny_conditional_pipeline, lambda p: p(class_labels=[-1], num_inference_steps=1), "class_labels",
     "holds -1, which is not a class id"),
    (tiny_conditional_pipeline, lambda p: p(class_labels=["cow"], num_inference_steps=1), "class_labels",
     "unknown class name 'cow'"),
    (tiny_conditional_pipeline, lambda p: p(class_labels=torch.tensor([0.0]), num_inference_steps=1), "class_labels",
     "1-D integer tensor"),
    (tiny_conditional_pipeline, lambda p: p(class_labels=torch.zeros(2, 1, dtype=torch.long), num_inference_steps=1),
     "class_labels", "1-D integer tensor"),
    (tiny_conditional_pipeline, lambda p: p(class_labels=[], num_inference_steps=1), "class_labels", "is empty"),
    (tiny_conditional_pipeline, lambda p: p(batch_size=3, class_labels=[0, 1], num_inference_steps=1),
     "class_labels", "has 2 labels for batch_size=3"),
    (tiny_conditional_pipeline, lambda p: p.log_likelihood(images(3), class_labels=[0, 1]), "class_labels",
     "has 2 labels for 3 images"),
    (tiny_conditional_pipeline, lambda p: p(class_labels=[0], guidance_scale=float("nan")), "guidance_scale",
     "must be a finite number ≥ 0"),
    (tiny_conditional_pipeline, lambda p: p(class_labels=[0], guidance_scale=float("inf")), "guidance_scale",
     "must be a finite number ≥ 0"),
    (tiny_conditional_pipeline, lambda p: p(class_labels=[0], guidance_scale=-0.5), "guidance_scale",
     "must be a finite number ≥ 0"),
    (tiny_conditional_pipeline, lambda p: p(class_labels=[0], guidance_scale=True), "guidance_scale",
     "must be a finite number ≥ 0"),
    (tiny_conditional_pipeline, lambda p: p.log_likelihood(images(1), guidance_scale=2.0), "guidance_scale",
     "needs class_labels"),
    (lambda: tiny_conditional_pipeline(null=False), lambda p: p(class_labels=[0], guidance_scale=2.0),
     "guidance_scale", "it has no null label"),
    (lambda: tiny_conditional_pipeline(null=False), lambda p: p.log_likelihood(images(1), class_labels=[0],
                                                                             guidance_scale=0.0),
     "guidance_scale", "it has no null label"),
    (lambda: tiny_conditional_pipeline(null=False), lambda p: p.rate_distortion(images(1)), "class_labels",
     r"has none \(null_class_label is None\)"),
    (tiny_conditional_pipeline, lambda p: p.rate_distortion(images(2), guidance_scale=2.0), "guidance_scale",
     "guidance needs class_labels"),
    (tiny_conditional_pipeline, lambda p: p.shared_latents(images(2), class_labels=[0], num_samples=1),
     "class_labels", "has 1 labels for 2 images"),
    (tiny_conditional_pipeline, lambda p: p.interpolate(images(2), images(2), class_labels=["cow", "cat"]),
     "class_labels", "unknown class name 'cow'"),
])
def test_bad_input_is_refused_before_any_work_naming_the_parameter(make, call, parameter, message):
    pipe = make()
    calls = []
    original = pipe.unet.forward
    pipe.unet.forward = lambda *args, **kwargs: calls.append(1) or original(*args, **kwargs)
    with pytest.raises(ParameterError, match=message) as error:
        call(pipe)
    assert error.value.parameter == parameter
    assert calls == []  # refused before the network ran once


@pytest.mark.parametrize("fields, parameter", [
    (dict(null_class_label=4), "null_class_label"),  # num_class_embeds = 4: indices 0 … 3
    (dict(null_class_label=3, class_names=["a", "b"]), "class_names"),
    (dict(null_class_label=3, class_names=["a", "a", "b"]), "class_names"),
    (dict(null_class_label=3, class_frequencies=[0.5, 0.5, 0.5]), "class_frequencies"),
    (dict(null_class_label=3, class_frequencies=[1.2, -0.1, -0.1]), "class_frequencies"),
])
def test_label_fields_that_do_not_fit_the_unet_are_refused_at_construction(fields, parameter):
    with pytest.raises(ParameterError) as error:
        DDPMDocPipeline(unet=tiny_unet(num_class_embeds=4), scheduler=DDPMDocScheduler(num_train_timesteps=8), **fields)
    assert error.value.parameter == parameter
    with pytest.raises(ParameterError) as error:  # label fields on an unconditional UNet
        DDPMDocPipeline(unet=tiny_unet(), scheduler=DDPMDocScheduler(num_train_timesteps=8), class_names=["a"])
    assert error.value.parameter == "class_names"


def test_the_label_fields_round_trip_through_save_pretrained(tmp_path):
    pipe = tiny_conditional_pipeline(class_frequencies=[0.5, 0.25, 0.25])
    pipe.save_pretrained(tmp_path)
    loaded = DDPMDocPipeline.from_pretrained(tmp_path)
    assert loaded.conditioning == pipe.conditioning
    assert (loaded.num_classes, loaded.is_class_conditional) == (3, True)
    assert loaded.get_label_ids(["emu", "cat"]) == [2, 0]
