"""The bound estimator: timestep plans, the result derived from the terms and the plan's weights, and the one
chunked evaluation behind ``bits_per_dim``, ``DDPMDocPipeline.log_likelihood``, ``held_out_bound`` and
``hf-ddpm evaluate``. The estimate and its variance estimate are checked exhaustively over every possible subset."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

from hf_ddpm import DDPMDocScheduler, TimestepPlan, VariationalBound, bits_per_dim, estimate_bound
from hf_ddpm.training import held_out_bound
from helpers import tiny_unet

pytestmark = pytest.mark.numerics  # run again under ATEN_CPU_CAPABILITY=default in CI (.ci/run)

# what metrics.json, the card and `hf-ddpm evaluate` read
JSON_KEYS = {"bits_per_dim", "standard_error", "prior", "decoder", "rate", "num_images", "num_timesteps",
             "num_train_timesteps", "chain", "timesteps", "terms"}


@pytest.mark.parametrize("exact", [4, 0], ids=["stratified", "uniform"])
def test_estimate_is_unbiased_and_its_variance_estimate_too(exact):
    """T = 10, ``exact`` smallest timesteps exactly + 3 drawn from the other 10 − exact: over every possible subset
    the estimate averages to the full sum, and the estimated variance (the squared standard error) averages to the
    estimate's true variance. The total is L_T + Σ_exact L_t + (T − exact)/3 · Σ_drawn L_t, written out here."""
    T, drawn = 10, 3
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
        variances.append(bound.standard_error**2)
        summary = bound.to_dict()
        decoder_weight = 1 if exact else (T - exact) / drawn
        parts_sum = summary["prior"] + (summary["decoder"] or 0.0) * decoder_weight + summary["rate"]
        assert abs(parts_sum - summary["bits_per_dim"]) < 1e-12
    estimates = torch.tensor(estimates, dtype=torch.float64)
    assert abs(float(estimates.mean()) - full) < 1e-12
    true_variance = float(((estimates - full) ** 2).mean())
    assert abs(sum(variances) / len(variances) - true_variance) < 1e-12


def test_stratified_plan_layout_and_its_limits():
    plan = TimestepPlan.stratified(1000, 100, seed=3)
    timesteps = plan.timesteps
    assert plan.num_exact == 50 and len(timesteps) == 100 and len(set(timesteps.tolist())) == 100
    assert timesteps[:50].tolist() == list(range(50)) and int(timesteps[50:].min()) >= 50
    assert plan.weights.tolist() == [1.0] * 50 + [950 / 50] * 50
    assert torch.equal(TimestepPlan.stratified(1000, 100, seed=3).timesteps, timesteps)
    assert not torch.equal(TimestepPlan.stratified(1000, 100, seed=4).timesteps, timesteps)
    for every in (None, 1000, 5000):  # the full chain: the bound itself
        full = TimestepPlan.stratified(1000, every, seed=3)
        assert full.is_complete and full.timesteps.tolist() == list(range(1000)) and bool((full.weights == 1).all())
    for bad in (3, 0, 4.0, True, "8"):
        with pytest.raises(ValueError, match=r"num_timesteps must be None \(every timestep\) or an integer ≥ 4"):
            TimestepPlan.stratified(1000, bad, seed=0)


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
    assert "  L_0 (decoder)        not evaluated" in lines and lines[-1].startswith("  largest term: t=2 with 0.7500")


def test_chunks_do_not_change_the_bound():
    """With the noise fixed, evaluating the images in chunks gives exactly the one-chunk bound (the model here is
    elementwise, so its outputs cannot depend on the batch); the full chain's error is the spread over images."""
    scheduler = DDPMDocScheduler(num_train_timesteps=12, beta_end=0.2)
    x0 = torch.randint(0, 256, (5, 1, 4, 4), generator=torch.Generator().manual_seed(0)).float() / 127.5 - 1
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))

    def model(x_t, t):
        return torch.tanh(3 * x_t)

    for plan in (TimestepPlan.full_chain(12), TimestepPlan.stratified(12, 6, seed=2)):
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
