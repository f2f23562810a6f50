"""The bound estimator: timestep plans, the result derived from the terms and the plan's weights, and the one
chunked evaluation behind ``bits_per_dim``, ``DDPMDocPipeline.log_likelihood``, ``held_out_bound`` and
``hf-ddpm evaluate``. The estimate and its variance estimate are checked exhaustively over every possible subset."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

import numpy as np
from scipy import stats

from hf_ddpm import DDPMDocScheduler, TimestepPlan, VariationalBound, bits_per_dim, estimate_bound
from hf_ddpm.errors import ParameterError
from hf_ddpm.training import held_out_bound
from hf_ddpm.variational_bound import student_two_sigma
from helpers import tiny_unet

pytestmark = pytest.mark.numerics  # run again under ATEN_CPU_CAPABILITY=default in CI (.ci/run)

# what metrics.json, the card and `hf-ddpm evaluate` read
JSON_KEYS = {"bits_per_dim", "standard_error", "prior", "decoder", "rate", "num_images", "num_timesteps",
             "num_train_timesteps", "chain", "timesteps", "terms", "weights", "warning"}


LN2 = math.log(2.0)


def closed_form_problem():
    """A model whose every term is known in closed form: T = 8 (β linear from 1e-4 to 0.3, fixed_small, no clipping),
    3 images of 2×2 interior 8-bit pixels, one ε used at every t, and ε_θ = ε + f_t η with η fixed, so that
    L_{t−1} = λ_t f_t² mean(η²) (Eq. 12, λ_t = β_t² / (2 β̃_t α_t (1 − ᾱ_t))) and L_0 is the discretised Gaussian of
    Eq. 13 at μ_θ = (x_1 − β_1 / √(1 − ᾱ_1) ε_θ) / √α_1, σ² = β̃ of the second step. Returns the scheduler, the images,
    ε, the model and the exact bound per image [3] (float64, computed here from the equations)."""
    T = 8
    scheduler = DDPMDocScheduler(num_train_timesteps=T, beta_start=1e-4, beta_end=0.3, clip_sample=False)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(1, 255, (3, 1, 2, 2), generator=g).double() / 127.5 - 1
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    eta = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    f = torch.tensor([0.3, 2.0, 1.5, 0.9, 0.5, 0.3, 0.2, 0.1], dtype=torch.float64)  # the terms' shape over t
    alpha_bar = scheduler.alphas_cumprod.double()

    def model(x_t, t):
        k = int(t[0])
        true_eps = (x_t - alpha_bar[k].sqrt() * x0) / (1 - alpha_bar[k]).sqrt()
        return true_eps + f[k] * eta

    b = np.linspace(1e-4, 0.3, T)
    ab = np.cumprod(1 - b)
    exact = 0.5 * (-math.log(1 - ab[-1]) - 1 + (1 - ab[-1]) + ab[-1] * x0**2).mean(dim=(1, 2, 3)) / LN2  # L_T
    eta_sq = (eta**2).mean(dim=(1, 2, 3))
    for t in range(1, T):
        posterior = (1 - ab[t - 1]) / (1 - ab[t]) * b[t]
        exact = exact + b[t] ** 2 / (2 * posterior * (1 - b[t]) * (1 - ab[t])) * f[t] ** 2 * eta_sq / LN2
    x1 = math.sqrt(ab[0]) * x0 + math.sqrt(1 - ab[0]) * eps
    mu = (x1 - b[0] / math.sqrt(1 - ab[0]) * (eps + f[0] * eta)) / math.sqrt(1 - b[0])
    sigma = math.sqrt((1 - ab[0]) / (1 - ab[1]) * b[1])
    mass = stats.norm.cdf(((x0 + 1 / 255 - mu) / sigma).numpy()) - stats.norm.cdf(((x0 - 1 / 255 - mu) / sigma).numpy())
    exact = exact - torch.from_numpy(np.log(mass)).mean(dim=(1, 2, 3)) / LN2
    return scheduler, x0, eps, model, exact


def draw_pieces(plan_q: torch.Tensor, num_draws: int, stratum_of_draw: torch.Tensor):
    """For each draw, the pieces of its uniform U ∈ [0, 1) on which it picks one step: (midpoint, probability)
    pairs, from the breakpoints Q_k of q's cumulative sum inside its stratum (strata of widths r_h / n)."""
    cdf = plan_q.cumsum(0).tolist()[:-1]
    sizes = torch.bincount(stratum_of_draw).tolist()
    starts = [sum(sizes[:h]) / num_draws for h in range(len(sizes))]
    pieces = []
    for h in stratum_of_draw.tolist():
        start, width = starts[h], sizes[h] / num_draws
        cuts = [0.0] + sorted((c - start) / width for c in cdf if start < c < start + width) + [1.0]
        pieces.append([((a + b) / 2, b - a) for a, b in zip(cuts, cuts[1:]) if b > a])
    return pieces


@pytest.mark.parametrize("proposal", ["random", "reversed"])
def test_importance_estimate_is_exactly_unbiased_with_any_proposal(proposal):
    """Every possible draw of K = 7 timesteps (L_0 exactly, 6 draws in 2 strata of 3) from a random proposal and
    from one shaped against the terms, enumerated with its probability: the estimate averages to the closed-form
    bound of :func:`closed_form_problem` and the unbiased variance estimate to the estimate's variance. The strata
    are independent and both the estimate and the variance estimate are sums over strata, so each stratum's draws are
    enumerated in full with the other's held at one point (E = Σ_h E_h − (H − 1)·base, Var = Σ_h Var_h). The plan's
    evaluation is checked once against the full chain's columns."""
    scheduler, x0, eps, model, exact = closed_form_problem()
    full = estimate_bound(model, scheduler, x0, TimestepPlan.full_chain(8), noise=eps)
    torch.testing.assert_close(full.total, exact, rtol=1e-10, atol=0)
    q = torch.rand(8, generator=torch.Generator().manual_seed(1), dtype=torch.float64) + 0.05
    if proposal == "reversed":
        q = torch.linspace(0.01, 1.0, 8, dtype=torch.float64)  # largest where the terms are smallest
    base_uniforms = torch.full((6,), 0.3, dtype=torch.float64)
    base = TimestepPlan.importance(8, 7, q, num_exact=1, uniforms=base_uniforms)
    evaluated = estimate_bound(model, scheduler, x0, base, noise=eps)
    assert torch.equal(evaluated.terms, full.terms[:, base.timesteps]) and torch.equal(evaluated.prior, full.prior)
    assert base.strata.tolist() == [0, 0, 0, 1, 1, 1] and base.num_exact == 1 and base.timesteps[0] == 0

    def estimate(uniforms):
        plan = TimestepPlan.importance(8, 7, q, num_exact=1, uniforms=uniforms)
        torch.testing.assert_close(plan.draw_weights, 1 / (6 * normalised[plan.draws - 1]), rtol=1e-15, atol=0)
        bound = VariationalBound(plan, full.prior, full.terms[:, plan.timesteps])
        return bound.bits_per_dim, bound.timestep_variance

    normalised = q[1:] / q[1:].sum()
    pieces = draw_pieces(normalised, 6, base.strata)
    base_estimate, base_variance = estimate(base_uniforms)
    expectation, variance, expected_variance = base_estimate, 0.0, base_variance
    for stratum in (0, 1):
        draws = [j for j in range(6) if int(base.strata[j]) == stratum]
        mean = square = mean_variance = total_probability = 0.0
        for choice in itertools.product(*(pieces[j] for j in draws)):
            uniforms = base_uniforms.clone()
            uniforms[draws] = torch.tensor([u for u, _ in choice], dtype=torch.float64)
            probability = math.prod(p for _, p in choice)
            value, estimated_variance = estimate(uniforms)
            total_probability += probability
            mean, square = mean + probability * value, square + probability * value**2
            mean_variance += probability * estimated_variance
        assert total_probability == pytest.approx(1.0, abs=1e-12)
        expectation += mean - base_estimate
        variance += square - mean**2
        expected_variance += mean_variance - base_variance
    truth = float(exact.mean())
    assert abs(expectation - truth) < 1e-11 * truth
    assert abs(expected_variance - variance) < 1e-9 * variance


def test_given_subsets_are_unbiased_and_their_variance_errs_by_the_finite_population_factor():
    """``TimestepPlan.uniform`` / the constructor: T = 10, 4 exact, every 3 of the other 6 as a given subset: the
    estimate (written out here) averages to the full sum; the variance estimate, that of draws with replacement,
    averages to M/(M − n) times the subset's true variance."""
    T, drawn, exact = 10, 3, 4
    generator = torch.Generator().manual_seed(0)
    all_terms = torch.rand(1, T, generator=generator, dtype=torch.float64) * torch.linspace(3, 0.1, T)
    prior = torch.tensor([1e-3], dtype=torch.float64)
    full = float(prior + all_terms.sum())
    estimates, variances = [], []
    for subset in itertools.combinations(range(exact, T), drawn):
        timesteps = torch.tensor(list(range(exact)) + list(subset))
        bound = VariationalBound(TimestepPlan(T, torch.arange(T), timesteps, num_exact=exact), prior,
                                 all_terms[:, timesteps])
        by_hand = prior + all_terms[:, :exact].sum(1) + (T - exact) / drawn * all_terms[:, list(subset)].sum(1)
        torch.testing.assert_close(bound.total, by_hand, rtol=1e-15, atol=0)
        estimates.append(bound.bits_per_dim)
        variances.append(bound.timestep_variance)
        summary = bound.to_dict()
        parts_sum = summary["prior"] + summary["decoder"] + summary["rate"]
        assert abs(parts_sum - summary["bits_per_dim"]) < 1e-12
    estimates = torch.tensor(estimates, dtype=torch.float64)
    assert abs(float(estimates.mean()) - full) < 1e-12
    true_variance = float(((estimates - full) ** 2).mean())
    population = T - exact
    expected = sum(variances) / len(variances)
    assert abs(expected * (population - drawn) / population - true_variance) < 1e-12


@pytest.mark.parametrize("dof", [1, 2, 3, 4, 7, 10, 40])
def test_the_widening_is_students_t(dof):
    """±t SE with t from :func:`student_two_sigma` holds the mean of normal draws as often as ±2σ (95.45 %): scipy's
    Student quantile."""
    assert student_two_sigma(dof) == pytest.approx(stats.t.ppf(0.5 + math.erf(math.sqrt(2)) / 2, dof), rel=1e-10)


def test_importance_plan_layout_and_its_limits():
    q = torch.linspace(2, 0.1, 1000, dtype=torch.float64)
    plan = TimestepPlan.importance(1000, 21, q, generator=torch.Generator().manual_seed(3), description="a line")
    assert plan.num_exact == 2 and plan.timesteps[:2].tolist() == [0, 1] and len(plan.draws) == 19
    assert plan.strata.tolist() == [h for h in range(5) for _ in range(3)] + [5] * 4  # threes, the last takes the rest
    assert set(plan.draws.tolist()) == set(plan.timesteps[2:].tolist()) and int(plan.draws.min()) >= 2
    normalised = q[2:] / q[2:].sum()
    torch.testing.assert_close(plan.draw_weights, 1 / (19 * normalised[plan.draws - 2]), rtol=1e-14, atol=0)
    summed = torch.zeros(1000, dtype=torch.float64).index_add(0, plan.draws, plan.draw_weights)
    assert plan.weights[:2].tolist() == [1, 1] and torch.equal(plan.weights[2:], summed[plan.timesteps[2:]])
    again = TimestepPlan.importance(1000, 21, q, generator=torch.Generator().manual_seed(3))
    other = TimestepPlan.importance(1000, 21, q, generator=torch.Generator().manual_seed(4))
    assert torch.equal(again.draws, plan.draws) and not torch.equal(other.draws, plan.draws)
    assert f"{len(plan.timesteps)} timesteps" in plan.describe() and "19 drawn" in plan.describe()
    assert "proposal a line" in plan.describe()
    for every in (None, 1000, 5000):  # the full chain: the bound itself
        full = TimestepPlan.importance(1000, every, q, generator=torch.Generator())
        assert full.is_complete and full.timesteps.tolist() == list(range(1000)) and bool((full.weights == 1).all())
    for bad in (3, 0, 4.0, True, "8"):
        with pytest.raises(ParameterError, match=r"num_timesteps must be None \(every timestep\) or an integer ≥ 4"):
            TimestepPlan.importance(1000, bad, q)
    with pytest.raises(ValueError, match="proposal must hold a finite weight per step"):
        TimestepPlan.importance(1000, 10, torch.zeros(1000))


def test_plan_checks_its_fields_once():
    with pytest.raises(ValueError, match="distinct"):
        TimestepPlan.uniform(10, [1, 1])
    with pytest.raises(ValueError, match=r"must lie in \[0, 10\)"):
        TimestepPlan.uniform(10, [10])
    with pytest.raises(ValueError, match="num_exact=2"):
        TimestepPlan(10, torch.arange(10), torch.tensor([0, 5]), num_exact=2)
    with pytest.raises(ValueError, match=r"timesteps \[3\] are not steps of the chain"):
        TimestepPlan(10, torch.tensor([0, 5, 9]), torch.tensor([0, 3]), num_exact=1)
    with pytest.raises(ValueError, match="chain must be ascending"):
        TimestepPlan(10, torch.tensor([5, 0, 9]), torch.tensor([5]), num_exact=0)
    # a chain other than the training chain: its decoder sits at its first step, its prior at its last
    short = TimestepPlan(10, torch.tensor([2, 5, 9]), torch.tensor([2, 5, 9]), num_exact=3)
    assert short.decoder_mask.tolist() == [True, False, False] and short.prior_timestep == 9 and short.is_complete


def test_result_derives_everything_from_prior_terms_and_plan():
    plan = TimestepPlan.uniform(10, [2, 7, 4])
    with pytest.raises(ValueError, match=r"terms must be \[images, 3\]"):
        VariationalBound(plan, torch.zeros(2), torch.zeros(2, 4))
    terms = torch.tensor([[0.5, 0.25, 0.125], [1.0, 0.5, 0.25]], dtype=torch.float64)
    bound = VariationalBound(plan, torch.tensor([1e-3, 2e-3], dtype=torch.float64), terms)
    assert bound.timesteps.tolist() == [2, 4, 7]
    torch.testing.assert_close(bound.total, bound.prior + terms.sum(1) * 10 / 3, rtol=1e-15, atol=0)
    summary = bound.to_dict()
    assert set(summary) == JSON_KEYS and json.loads(json.dumps(summary)) == summary
    assert summary["decoder"] is None and summary["terms"] == [0.75, 0.375, 0.1875]
    assert (summary["num_images"], summary["num_timesteps"], summary["num_train_timesteps"]) == (2, 3, 10)
    lines = bound.describe().splitlines()
    assert lines[0].startswith(f"bound: {bound.mean():.4f} ± {bound.standard_error:.4f} bits/dim on 2 images")
    assert lines[0].endswith("(unbiased estimate from 3 of 10 timesteps)")
    assert "  L_0 (decoder)        not evaluated" in lines and lines[-2].startswith("  largest term: t=2 with 0.7500")
    assert lines[-1] == f"  warning: this estimate is {bound.warning}" and "only 3 drawn timesteps" in bound.warning


def test_chunks_do_not_change_the_bound():
    """With the noise fixed, evaluating the images in chunks gives exactly the one-chunk bound (the model here is
    elementwise, so its outputs cannot depend on the batch); the full chain's error is the spread over images."""
    scheduler = DDPMDocScheduler(num_train_timesteps=12, beta_end=0.2)
    x0 = torch.randint(0, 256, (5, 1, 4, 4), generator=torch.Generator().manual_seed(0)).float() / 127.5 - 1
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))

    def model(x_t, t):
        return torch.tanh(3 * x_t)

    drawn = TimestepPlan.importance(12, 6, torch.ones(12), generator=torch.Generator().manual_seed(2))
    for plan in (TimestepPlan.full_chain(12), drawn):
        whole = estimate_bound(model, scheduler, x0, plan, noise=noise)
        chunked = estimate_bound(model, scheduler, x0, plan, noise=noise, batch_size=2)
        assert torch.equal(chunked.terms, whole.terms) and torch.equal(chunked.prior, whole.prior)
    full = bits_per_dim(model, scheduler, x0, noise=noise)
    assert full.standard_error == pytest.approx(float(full.total.std() / math.sqrt(5)), rel=1e-12)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        estimate_bound(model, scheduler, x0, TimestepPlan.full_chain(12), batch_size=0)
    with pytest.raises(ValueError, match=r"plan must be for the scheduler's num_train_timesteps=12, got a plan for "
                                         r"num_train_timesteps=10"):
        estimate_bound(model, scheduler, x0, TimestepPlan.full_chain(10))


def test_held_out_bound_is_bits_per_dim_chunk_by_chunk():
    """K = T: the plain full bound of ``bits_per_dim``, the same whether the images go through in one chunk or
    several (the noise stream is drawn per chunk, so compare against bits_per_dim chunk by chunk)."""
    unet = tiny_unet(out_channels=2)
    scheduler = DDPMDocScheduler(num_train_timesteps=12, variance_type="learned_range", beta_start=1e-5)
    images = torch.randint(0, 17, (6, 1, 8, 8)).float() * (255 / 16)
    images = images.round() / 127.5 - 1
    bound = held_out_bound(unet, scheduler, images, num_timesteps=None, seed=5, batch_size=4)
    generator = torch.Generator().manual_seed(5)
    reference = torch.cat([bits_per_dim(unet, scheduler, chunk, generator=generator).total
                           for chunk in images.split(4)])
    assert abs(bound.bits_per_dim - float(reference.double().mean())) < 1e-9
    assert bound.num_timesteps == 12 and bound.num_images == 6 and bound.plan.is_complete
