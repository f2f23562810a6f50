"""A converted openai checkpoint's pipeline against guided-diffusion's own diffusion: the bound (``calc_bpd_loop`` on a
respaced chain, ``_vb_terms_bpd`` at timesteps of the full chain), seeded ancestral samples (``p_sample_loop``,
``p_sample``) and the timesteps the network sees (``rescale_timesteps``), over the grid of diffusion flags.

The grid: the 8 rows of an orthogonal array of strength 2 over seven two-level flags (learn_sigma, class_cond, the
linear/cosine schedule, rescale_timesteps, T = 1000/4000, predict_xstart, clip_denoised), so every pair of levels of
every two flags occurs. Each row builds guided-diffusion's model and diffusion with ``create_model_and_diffusion``
from the same flags the converter gets.

Precision. openai's table lookup (``_extract_into_tensor``) rounds every coefficient to float32, which alone puts its
prior L_T about 5e-5 relative off the exact value (measured on these models); the reference runs with a float64
lookup (``float64_lookup``; its model is called in float32, the network's own precision), and ours as users run it,
in float32.

The decoder term L_0 differs in two ways, both openai's. Its tanh approximation of the normal CDF Φ: the reference
runs with the exact Φ in its place (``exact_cdf``), and then its L_0 equals ours like every other term, so this is
the only difference; its size is measured per pixel in ``test_decoder_differs_by_the_tanh_cdf_approximation`` and,
with openai's own Φ, was 2e-4 to 2e-3 bits/dim on the respaced chains' L_0 here and 6e-4 to 1.3e-2 bits/dim on the
full chains' (whose decoder variance is smaller). And a floor of 1e-12 on each pixel's probability, which caps a
pixel at log₂ 1e12 ≈ 39.9 bits where the exact tail goes on: random x_0-predicting networks put pixels there, so for
them openai's L_0 is only checked not to exceed ours.
"""

import itertools
from unittest import mock

import pytest
import torch
from convert_support import TINY, openai_model_and_diffusion
from guided_diffusion import gaussian_diffusion, losses

from hf_ddpm.convert import from_guided_diffusion, respaced_timesteps

pytestmark = pytest.mark.numerics

FLAGS = dict(TINY, num_head_channels=16)
NUM_IMAGES = 2
RTOL = 1e-5  # every term, relative
SAMPLE_TOL = 1e-4  # samples, relative to max(1, their largest value)
RESPACING = "4,3,3"  # 10 kept timesteps in three sections (openai's respacing string)


def _orthogonal_array() -> list[tuple[bool, ...]]:
    """OA(8, 2^7) of strength 2: the columns a, b, a⊕b, c, a⊕c, b⊕c, a⊕b⊕c of the 2^3 factorial."""
    return [(a, b, a ^ b, c, a ^ c, b ^ c, a ^ b ^ c) for a, b, c in itertools.product([False, True], repeat=3)]


GRID = [dict(learn_sigma=row[0], class_cond=row[1], noise_schedule="cosine" if row[2] else "linear",
             rescale_timesteps=row[3], diffusion_steps=4000 if row[4] else 1000, predict_xstart=row[5],
             clip_denoised=row[6]) for row in _orthogonal_array()]
IDS = ["-".join(f"{k}={v}" for k, v in case.items()) for case in GRID]


def float64_lookup(table, timesteps, broadcast_shape):
    """openai's table lookup without its cast to float32: the entries at ``timesteps``, broadcast to the shape."""
    values = torch.from_numpy(table)[timesteps.cpu()]
    return values.view(-1, *[1] * (len(broadcast_shape) - 1)).expand(broadcast_shape)


def _setup(case, respacing=""):
    """(openai model, its diffusion, our pipeline, images in [0, 1], x_0, ε, labels or None, openai's model kwargs)."""
    diffusion_flags = {k: v for k, v in case.items() if k != "clip_denoised"}
    model, diffusion = openai_model_and_diffusion(**FLAGS, **diffusion_flags, timestep_respacing=respacing)
    pipe = from_guided_diffusion(model.state_dict(), **FLAGS, **case)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(1)
    pixels = torch.randint(256, (NUM_IMAGES, 3, 8, 8), generator=generator)
    eps = torch.randn(NUM_IMAGES, 3, 8, 8, generator=generator)
    labels = torch.randint(1000, (NUM_IMAGES,), generator=generator) if case["class_cond"] else None
    return model, diffusion, pipe, pixels / 255.0, pixels / 127.5 - 1.0, eps, labels, \
        ({} if labels is None else {"y": labels})


def _in_float32(model):
    """openai's network called in float32 on float64 inputs (its own precision), output back in float64."""
    return lambda x, t, **kwargs: model(x.float(), t, **kwargs).double()


def _assert_terms(ours, their_terms, their_prior, floored_decoder):
    """Every term and the prior within RTOL relative; where openai's 1e-12 floor may bind (``floored_decoder``), its
    decoder (column 0) only not above ours."""
    ours_terms, their_terms = ours.terms.double(), their_terms.double()
    torch.testing.assert_close(ours.prior.double(), their_prior.double(), rtol=RTOL, atol=0)
    torch.testing.assert_close(ours_terms[:, 1:], their_terms[:, 1:], rtol=RTOL, atol=0)
    if floored_decoder:
        assert (their_terms[:, 0] <= ours_terms[:, 0] * (1 + RTOL)).all()
    else:
        torch.testing.assert_close(ours_terms[:, 0], their_terms[:, 0], rtol=RTOL, atol=0)


def _reference_precision():
    """openai's diffusion with the float64 table lookup and the exact Φ (see the module docstring)."""
    return (mock.patch.object(gaussian_diffusion, "_extract_into_tensor", float64_lookup),
            mock.patch.object(losses, "approx_standard_normal_cdf", torch.special.ndtr))


@pytest.mark.parametrize("case", GRID, ids=IDS)
def test_respaced_chain_bound_is_calc_bpd_loops(case):
    """``log_likelihood(inference_timesteps=respaced_timesteps(T, "4,3,3"), noise=ε)`` against ``calc_bpd_loop`` of
    the ``SpacedDiffusion`` for the same respacing, their ε drawn by ``th.randn_like`` made ε at every step. Their
    per-step columns come in descending t: flipped."""
    model, diffusion, pipe, images, x0, eps, labels, kwargs = _setup(case, RESPACING)
    kept = respaced_timesteps(case["diffusion_steps"], RESPACING)
    lookup, cdf = _reference_precision()
    with mock.patch.object(gaussian_diffusion.th, "randn_like", lambda x: eps.to(x.dtype)), lookup, cdf, \
            torch.no_grad():
        theirs = diffusion.calc_bpd_loop(_in_float32(model), x0.double(), clip_denoised=case["clip_denoised"],
                                         model_kwargs=kwargs)
    ours = pipe.log_likelihood(images, inference_timesteps=kept, noise=eps, class_labels=labels)
    assert ours.plan.chain.tolist() == sorted(kept)
    _assert_terms(ours, theirs["vb"].flip(1), theirs["prior_bpd"], floored_decoder=case["predict_xstart"])


FULL_CHAIN_STEPS = 12


@pytest.mark.parametrize("case", GRID, ids=IDS)
def test_full_chain_terms_are_vb_terms_bpds(case):
    """Terms of the full T-step chain at 12 timesteps (0, 1, T − 1 and nine spread between) and its prior, against
    openai's ``_vb_terms_bpd`` at x_t = ``q_sample(x_0, t, noise=ε)`` and ``_prior_bpd`` (what ``calc_bpd_loop``
    computes at each t, without the other T − 12 network calls)."""
    model, diffusion, pipe, images, x0, eps, labels, kwargs = _setup(case)
    T = case["diffusion_steps"]
    steps = sorted({0, 1, T - 1, *torch.linspace(2, T - 2, FULL_CHAIN_STEPS - 3).round().long().tolist()})
    ours = pipe.log_likelihood(images, timesteps=steps, noise=eps, class_labels=labels)
    assert ours.timesteps.tolist() == steps
    columns = []
    lookup, cdf = _reference_precision()
    with lookup, cdf, torch.no_grad():
        for t in steps:
            t_batch = torch.full((NUM_IMAGES,), t)
            x_t = diffusion.q_sample(x0.double(), t_batch, noise=eps.double())
            columns.append(diffusion._vb_terms_bpd(_in_float32(model), x0.double(), x_t, t_batch,
                                                   clip_denoised=case["clip_denoised"], model_kwargs=kwargs)["output"])
        prior = diffusion._prior_bpd(x0.double())
    _assert_terms(ours, torch.stack(columns, dim=1), prior, floored_decoder=case["predict_xstart"])


def _recording(model, seen):
    def network(x, t, **kwargs):
        seen.append(t.tolist())
        return model(x, t, **kwargs)
    return network


@pytest.mark.parametrize("case", GRID, ids=IDS)
def test_seeded_samples_and_timesteps_are_p_sample_loops(case):
    """The respaced chain from the same x_T with the same per-step noise (their ``th.randn_like`` from the global
    generator, ours from a ``torch.Generator`` of the same seed, drawn in the same order: none after the last step):
    the same x_0 within 1e-4, and the network sees the same timesteps at every step (openai's ``_WrappedModel``:
    mapped to the original timesteps, times 1000/T with rescale_timesteps)."""
    model, diffusion, pipe, _, _, _, labels, kwargs = _setup(case, RESPACING)
    x_T = torch.randn(NUM_IMAGES, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    seen_theirs, seen_ours = [], []
    torch.manual_seed(3)
    with torch.no_grad():
        theirs = diffusion.p_sample_loop(_recording(model, seen_theirs), x_T.shape, noise=x_T,
                                         clip_denoised=case["clip_denoised"], model_kwargs=kwargs, device="cpu")
    final = {}
    hook = pipe.unet.register_forward_pre_hook(lambda module, args: seen_ours.append(
        args[1].expand(NUM_IMAGES).tolist()))
    try:
        pipe(batch_size=NUM_IMAGES, latents=x_T, class_labels=labels, output_type="pt",
             timesteps=respaced_timesteps(case["diffusion_steps"], RESPACING),
             generator=torch.Generator().manual_seed(3),
             callback_on_step_end=lambda p, i, t, tensors: final.update(tensors))
    finally:
        hook.remove()
    assert seen_ours == seen_theirs
    scale = max(1.0, float(theirs.abs().max()))
    assert float((final["image"] - theirs).abs().max()) <= SAMPLE_TOL * scale


@pytest.mark.parametrize("case", [GRID[3], GRID[6]], ids=[IDS[3], IDS[6]])
def test_last_steps_of_the_full_chain_are_p_samples(case):
    """Ancestral steps t = 9 … 0 of the full chain (the pipeline with ``latents`` x_9 and ``timesteps`` 9 … 0, whose
    chain tables are the full chain's first ten) against openai's ``p_sample`` at the same t under the same noise."""
    model, diffusion, pipe, _, _, _, labels, kwargs = _setup(case)
    x = x_9 = torch.randn(NUM_IMAGES, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(3)
    with torch.no_grad():
        for t in range(9, -1, -1):
            x = diffusion.p_sample(model, x, torch.full((NUM_IMAGES,), t), clip_denoised=case["clip_denoised"],
                                   model_kwargs=kwargs)["sample"]
    final = {}
    pipe(batch_size=NUM_IMAGES, latents=x_9, class_labels=labels, timesteps=list(range(9, -1, -1)),
         generator=torch.Generator().manual_seed(3), output_type="pt",
         callback_on_step_end=lambda p, i, t, tensors: final.update(tensors))
    assert float((final["image"] - x).abs().max()) <= SAMPLE_TOL * max(1.0, float(x.abs().max()))


def test_decoder_differs_by_the_tanh_cdf_approximation():
    """Per pixel, on the 256 bins of [−1, 1], means around them and decoder scales e^−6.9 … 1: openai's
    ``discretized_gaussian_log_likelihood`` against ours (exact Φ, float64). Their Φ is off by up to 1.8e-4, so a
    bin's probability by up to twice that: measured 3.4e-4 at most, which is 1.4e-3 nats for bins of mass ≥ 0.1 and
    8e-3 nats for mass ≥ 0.01 (the error of log p grows as 1/p in the tails)."""
    from guided_diffusion.losses import discretized_gaussian_log_likelihood as theirs

    from hf_ddpm.likelihood import discretized_gaussian_log_likelihood as ours

    x = (torch.arange(256, dtype=torch.float64) / 127.5 - 1.0).view(-1, 1, 1)
    means = x + torch.linspace(-0.05, 0.05, 21, dtype=torch.float64).view(1, -1, 1)
    log_scales = torch.linspace(-6.9, 0.0, 12, dtype=torch.float64).view(1, 1, -1)
    x, means, log_scales = torch.broadcast_tensors(x, means, log_scales)
    reference = theirs(x, means=means, log_scales=log_scales)
    exact = ours(x, means=means, log_scales=log_scales)
    assert (reference.exp() - exact.exp()).abs().max() <= 4e-4
    likely = exact > torch.log(torch.tensor(0.1, dtype=torch.float64))
    assert (reference - exact)[likely].abs().max() <= 2e-3
