"""The chains of DDPMDocScheduler as values: ``chain()`` and ``chain=`` against ``set_timesteps`` + ``step`` and a
float64 transcription of the respaced process; save → reload; the option tables."""

import math

import numpy as np
import pytest
import torch
from diffusers.utils.torch_utils import randn_tensor

from hf_ddpm import DDPMDocScheduler
from hf_ddpm.options import describe_beta_schedule
from hf_ddpm.scheduler import BETA_SCHEDULES, LEARNED_VARIANCE_TYPES, PREDICTION_TYPES, TIMESTEP_SPACINGS, VARIANCE_TYPES
from hf_ddpm.schedules import make_betas
from test_scheduler import SHAPE, toy_model

pytestmark = pytest.mark.numerics  # run again under ATEN_CPU_CAPABILITY=default in CI (.ci/run)

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
