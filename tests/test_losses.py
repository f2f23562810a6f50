"""Training objectives and timestep samplers."""

import math

import numpy as np
import pytest
import torch

from hf_ddpm import DDPMDocScheduler, ImportanceSampler, UniformSampler, bits_per_dim, training_loss
from hf_ddpm.likelihood import bound_term
from hf_ddpm.losses import check_objective, make_timestep_sampler
from helpers import tiny_unet

pytestmark = pytest.mark.numerics  # run again under ATEN_CPU_CAPABILITY=default in CI (.ci/run)


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_simple_loss_is_the_mse_to_the_prediction_target(prediction_type):
    s = DDPMDocScheduler(prediction_type=prediction_type)
    x0, noise = torch.rand(4, 1, 8, 8) * 2 - 1, torch.randn(4, 1, 8, 8)
    t = torch.tensor([0, 10, 500, 999])
    out = torch.randn(4, 1, 8, 8)
    ab = s.alphas_cumprod[t].float().view(-1, 1, 1, 1)
    target = {"epsilon": noise, "sample": x0, "v_prediction": ab.sqrt() * noise - (1 - ab).sqrt() * x0}[prediction_type]
    loss = training_loss(s, out, x0, s.add_noise(x0, noise, t), noise, t, "simple").per_example
    torch.testing.assert_close(loss, ((out - target) ** 2).mean(dim=(1, 2, 3)))


@pytest.mark.parametrize("variance_type", ["fixed_large", "learned_range"])
def test_vlb_loss_averages_to_the_bound(variance_type):
    """E_t[T · L_t] over uniform t (with the same ε) is the bound minus L_T: the loss is the bound's estimator."""
    T = 20
    s = DDPMDocScheduler(num_train_timesteps=T, beta_end=0.3, variance_type=variance_type)
    unet = tiny_unet(out_channels=2 if variance_type == "learned_range" else 1)
    x0 = (torch.randint(0, 256, (1, 1, 8, 8)).float() / 127.5 - 1).repeat(T, 1, 1, 1)
    noise = torch.randn(1, 1, 8, 8).repeat(T, 1, 1, 1)
    t = torch.arange(T)
    x_t = s.add_noise(x0, noise, t)
    with torch.no_grad():
        loss, terms = training_loss(s, unet(x_t, t).sample, x0, x_t, noise, t, "vlb")
        bound = bits_per_dim(lambda x, tt: unet(x.float(), tt).sample, s, x0[:1], noise=noise[:1])
    assert float(loss.mean()) == pytest.approx(float(bound.total - bound.prior), rel=1e-4)
    torch.testing.assert_close(terms, loss / T)  # the importance sampler's input, computed once


@pytest.mark.parametrize("loss_type, variance_type", [("simple", "fixed_small"), ("hybrid", "learned_range")])
def test_every_objective_returns_the_bound_terms_the_sampler_needs(loss_type, variance_type):
    """The terms L_t returned beside the loss equal bound_term of the same output: the trainer feeds them to the
    importance sampler without computing the bound again."""
    s = DDPMDocScheduler(num_train_timesteps=20, variance_type=variance_type)
    x0, noise = torch.rand(3, 1, 4, 4) * 2 - 1, torch.randn(3, 1, 4, 4)
    t = torch.tensor([0, 5, 19])
    x_t = s.add_noise(x0, noise, t)
    out = torch.randn(3, 2 if variance_type == "learned_range" else 1, 4, 4)
    result = training_loss(s, out, x0, x_t, noise, t, loss_type, bound_terms=True)
    torch.testing.assert_close(result.bound_terms, bound_term(s, out, x0, x_t, t))
    if loss_type == "simple":
        assert training_loss(s, out, x0, x_t, noise, t, loss_type).bound_terms is None  # not computed unless asked


def test_hybrid_loss_stops_the_mean_gradient_of_the_bound():
    s = DDPMDocScheduler(variance_type="learned_range")
    x0, noise = torch.rand(2, 1, 4, 4) * 2 - 1, torch.randn(2, 1, 4, 4)
    t = torch.tensor([3, 700])
    x_t = s.add_noise(x0, noise, t)
    out = torch.randn(2, 2, 4, 4, requires_grad=True)
    hybrid = training_loss(s, out, x0, x_t, noise, t, "hybrid").per_example.sum()
    (grad_hybrid,) = torch.autograd.grad(hybrid, out)
    mse = ((out[:, :1] - noise) ** 2).mean(dim=(1, 2, 3)).sum()
    (grad_mse,) = torch.autograd.grad(mse, out)
    torch.testing.assert_close(grad_hybrid[:, :1], grad_mse[:, :1])  # the mean learns from L_simple only
    assert grad_hybrid[:, 1:].abs().sum() > 0  # the variance learns from λ·L_vlb


@pytest.mark.parametrize("variance_type", ["fixed_small", "learned_range"])
def test_vlb_simple_is_the_bound_term_plus_c_times_the_mean_squared_error(variance_type):
    """T·L_t + c·‖ε − ε_θ‖²/D: the bound term of the same output, plus c times the squared error of the prediction
    channels computed here in float64; the mean learns from both terms (nothing is stopped)."""
    T, c = 1000, 12.5
    s = DDPMDocScheduler(variance_type=variance_type)
    x0, noise = torch.rand(4, 1, 4, 4) * 2 - 1, torch.randn(4, 1, 4, 4)
    t = torch.tensor([0, 3, 400, 999])
    x_t = s.add_noise(x0, noise, t)
    out = torch.randn(4, 2 if variance_type == "learned_range" else 1, 4, 4, requires_grad=True)
    result = training_loss(s, out, x0, x_t, noise, t, "vlb_simple", simple_weight=c)
    mse = ((out[:, :1].detach().double() - noise.double()) ** 2).mean(dim=(1, 2, 3))
    bound = bound_term(s, out.detach(), x0, x_t, t)
    # float32 rounding, 2^-24 relative per operation: the squared error's D = 16 squares of differences summed
    # (≤ D + 2 roundings of it), then T·L_t, c·mse and their sum (≤ 3 roundings of the total)
    expected = T * bound.double() + c * mse
    tolerance = (c * mse * (16 + 2) + expected.abs() * 3) * 2.0**-24
    assert ((result.per_example.detach().double() - expected).abs() <= tolerance).all()
    torch.testing.assert_close(result.bound_terms, bound)
    (grad,) = torch.autograd.grad(result.per_example.sum(), out)
    (grad_vlb,) = torch.autograd.grad(training_loss(s, out, x0, x_t, noise, t, "vlb").per_example.sum(), out)
    # ∂/∂ε_θ of c·mean((ε_θ − ε)²) = 2c(ε_θ − ε)/D; the variance channel's gradient is the bound's alone
    torch.testing.assert_close(grad - grad_vlb, torch.cat([2 * c * (out[:, :1].detach() - noise) / 16,
                                                           torch.zeros_like(out[:, 1:])], dim=1))


@pytest.mark.parametrize(
    "variance_type, loss_type, match",
    [("learned", "simple", "does not train the variance"), ("fixed_small", "hybrid", "is fixed"), ("fixed_small", "l2", "loss_type must be one of")],
)
def test_contradictory_objectives_are_rejected(variance_type, loss_type, match):
    with pytest.raises(ValueError, match=match):
        check_objective(variance_type, loss_type)


def test_uniform_sampler_weights_are_one():
    t, w = UniformSampler(100).sample(1000, generator=torch.Generator().manual_seed(0))
    assert t.min() >= 0 and t.max() < 100 and torch.equal(w, torch.ones(1000))


def test_importance_sampler_is_uniform_until_warm_then_unbiased():
    T = 5
    sampler = ImportanceSampler(T, history=3, uniform_mix=0.01)
    np.testing.assert_allclose(sampler.probabilities(), 1 / T)
    per_t_loss = np.array([10.0, 1.0, 1.0, 0.1, 0.1])
    for _ in range(3):
        sampler.update(torch.arange(T), torch.tensor(per_t_loss))
    p = sampler.probabilities()
    expected = 0.99 * per_t_loss / per_t_loss.sum() + 0.01 / T
    np.testing.assert_allclose(p, expected)
    # the weighted estimate of Σ_t L_t / T is unbiased: E_p[w_t L_t] = mean_t L_t
    t, w = sampler.sample(200_000, generator=torch.Generator().manual_seed(0))
    estimate = float((w.double() * torch.tensor(per_t_loss)[t]).mean())
    assert estimate == pytest.approx(per_t_loss.mean(), rel=0.02)
    torch.testing.assert_close(w, (1 / (T * torch.tensor(p)[t])).float())


def test_uniform_mix_bounds_every_weight():
    """make_timestep_sampler hands the mix to the importance sampler: p_t ≥ mix / T, so each weight ≤ 1 / mix."""
    T, mix = 4, 0.25
    sampler = make_timestep_sampler("importance", T, uniform_mix=mix)
    sampler._counts[:] = 10  # a full history where t = 3 never lost anything
    sampler._losses[:] = np.array([1.0, 2.0, 3.0, 0.0])[:, None]
    np.testing.assert_allclose(sampler.probabilities(), (1 - mix) * np.array([1, 2, 3, 0]) / 6 + mix / T)
    _, weights = sampler.sample(1000, generator=torch.Generator().manual_seed(0))
    assert float(weights.max()) == pytest.approx(1 / mix)


def test_importance_sampler_state_round_trips():
    a = ImportanceSampler(4, history=2)
    for _ in range(3):
        a.update(torch.tensor([0, 1, 2, 3]), torch.rand(4))
    b = make_timestep_sampler("importance", 4)
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(a.probabilities(), b.probabilities())
    assert math.isclose(b.probabilities().sum(), 1.0)
    with pytest.raises(ValueError, match="timestep_sampler must be one of"):
        make_timestep_sampler("stratified", 4)


def test_importance_sampler_history_is_the_same_at_every_read_as_if_recorded_at_once():
    """update() only starts copying the losses to the host; they enter the history at the next read, oldest first.
    Every read (probabilities, state_dict) sees exactly the history of the rule written out here — each t keeps its
    last `history` losses in the order they came — whether reads happen after every update or after several; a
    checkpoint taken between an update and the next sample holds that update (exact resume); and the copy is a
    snapshot (the caller's tensor may change afterwards)."""
    T, history = 6, 3
    rng = np.random.default_rng(0)
    updates = [(torch.from_numpy(rng.integers(0, T, 8)), torch.from_numpy(rng.random(8)).float()) for _ in range(12)]
    kept = {t: [] for t in range(T)}  # the rule, transcribed independently

    def expected_probabilities():
        if any(len(v) < history for v in kept.values()):
            return np.full(T, 1 / T)
        p = np.array([np.sqrt(np.mean(np.square(kept[t]))) for t in range(T)])
        return 0.999 * p / p.sum() + 0.001 / T

    every, batched = ImportanceSampler(T, history), ImportanceSampler(T, history)
    for i, (t, loss) in enumerate(updates):
        for step, value in zip(t.tolist(), loss.double().tolist()):
            kept[step] = (kept[step] + [value])[-history:]
        every.update(t, loss)
        batched.update(t, loss.clone())
        loss.fill_(1e6)  # the sampler copied the values when it was given them
        np.testing.assert_allclose(every.probabilities(), expected_probabilities(), rtol=1e-12)
        if i % 4 == 3:  # three updates arrive at this read
            resumed = ImportanceSampler(T, history)
            resumed.load_state_dict(batched.state_dict())
            np.testing.assert_array_equal(resumed.probabilities(), every.probabilities())
            np.testing.assert_array_equal(batched.probabilities(), every.probabilities())
    assert not np.allclose(every.probabilities(), 1 / T)  # warm by the end: the history was compared, not the default
