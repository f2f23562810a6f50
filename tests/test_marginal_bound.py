"""The marginal bound of a class-conditional model from its per-class bounds: the log-sum-exp identity, its
bracket [min_y L_y, min_y L_y + log₂(1/π(y*))/D], the same ε for every class, and the anchoring of an estimate on a
full conditional bound (a control variate that keeps every difference between classes)."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import UNet2DModel

from hf_ddpm import DDPMDocScheduler, TimestepPlan, estimate_bound
from hf_ddpm.marginal_bound import MarginalBound, class_bounds
from helpers import TINY_UNET

pytestmark = pytest.mark.numerics

T, K, N = 20, 3, 5


@pytest.fixture(scope="module")
def setting():
    torch.manual_seed(0)
    unet = UNet2DModel.from_config({**TINY_UNET, "out_channels": 2, "num_class_embeds": K + 1}).eval()
    scheduler = DDPMDocScheduler(num_train_timesteps=T, variance_type="learned_range")
    x0 = torch.randint(0, 256, (N, 1, 8, 8)).float() / 127.5 - 1
    return unet, scheduler, x0


def test_the_marginal_is_the_log_sum_exp_of_the_class_bounds_and_lies_in_its_bracket(setting):
    unet, scheduler, x0 = setting
    plan = TimestepPlan.full_chain(T)
    with torch.no_grad():
        per_class = class_bounds(unet, scheduler, x0, plan, torch.arange(K), seed=4)
    pi = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    marginal = MarginalBound.from_class_bounds(per_class, pi, torch.arange(K), num_dims=64)
    L = torch.stack([b.total for b in per_class], dim=1).double()  # [N, K] bits/dim
    expected = [-math.log2(sum(float(pi[y]) * 2 ** (-64 * float(L[n, y])) for y in range(K))) / 64 for n in range(N)]
    torch.testing.assert_close(marginal.total, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    best, best_class = L.min(dim=1)
    assert (marginal.total >= best - 1e-12).all()
    assert (marginal.total <= best + torch.log2(1 / pi[best_class]) / 64 + 1e-12).all()
    assert torch.equal(marginal.predicted_labels, best_class)
    assert marginal.standard_error == pytest.approx(float(marginal.total.std()) / math.sqrt(N))  # no timestep error


def test_every_class_sees_the_same_noise(setting):
    """class_bounds replays one seeded ε for every class: each class's bound equals estimate_bound with that seed."""
    unet, scheduler, x0 = setting
    plan = TimestepPlan.importance(T, 6, torch.ones(T), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        per_class = class_bounds(unet, scheduler, x0, plan, torch.tensor([2, 0]), seed=9)
        for label, bound in zip((2, 0), per_class):
            alone = estimate_bound(unet, scheduler, x0, plan, generator=torch.Generator().manual_seed(9),
                                   class_labels=torch.full((N,), label))
            assert torch.equal(alone.terms, bound.terms)


def test_anchoring_keeps_the_differences_and_puts_the_true_class_on_the_anchor(setting):
    unet, scheduler, x0 = setting
    labels = torch.tensor([0, 1, 2, 1, 0])
    with torch.no_grad():
        estimate = class_bounds(unet, scheduler, x0, TimestepPlan.importance(
            T, 6, torch.ones(T), generator=torch.Generator().manual_seed(2)), torch.arange(K), seed=3)
        full = estimate_bound(unet, scheduler, x0, TimestepPlan.full_chain(T),
                              generator=torch.Generator().manual_seed(5), class_labels=labels)
        exact = class_bounds(unet, scheduler, x0, TimestepPlan.full_chain(T), torch.arange(K), seed=3)
    pi = torch.full((K,), 1 / K, dtype=torch.float64)
    plain = MarginalBound.from_class_bounds(estimate, pi, torch.arange(K), 64)
    anchored = MarginalBound.from_class_bounds(estimate, pi, torch.arange(K), 64, anchor=full, labels=labels)
    torch.testing.assert_close(anchored.class_totals[torch.arange(N), labels], full.total.double())
    differences = lambda m: m.class_totals - m.class_totals[:, :1]  # noqa: E731
    torch.testing.assert_close(differences(anchored), differences(plain), rtol=0, atol=1e-12)
    assert torch.equal(anchored.predicted_labels, plain.predicted_labels)
    # anchoring a complete plan on the same complete bound changes nothing
    same = MarginalBound.from_class_bounds(exact, pi, torch.arange(K), 64, anchor=exact[1], labels=torch.ones(N).long())
    torch.testing.assert_close(same.class_totals, MarginalBound.from_class_bounds(exact, pi, torch.arange(K),
                                                                                  64).class_totals)
    assert same.timestep_variance == pytest.approx(0.0, abs=1e-15)  # complete: only rounding is left


def test_the_timestep_error_follows_each_class_by_its_posterior_weight(setting):
    """The delta method: with one class the marginal's timestep error is that class's bound's own; with K classes it
    is the error of the terms Σ_y w_y(x) L_y,t(x), the weights computed independently in float64 from L_y and π;
    anchored where the posterior sits on the true class, the drawn timesteps cost nothing."""
    unet, scheduler, x0 = setting
    plan = TimestepPlan.importance(T, 6, torch.ones(T), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        per_class = class_bounds(unet, scheduler, x0, plan, torch.arange(K), seed=8)
    alone = MarginalBound.from_class_bounds(per_class[1:2], torch.ones(1, dtype=torch.float64), torch.tensor([1]), 64)
    own = per_class[1].standard_error ** 2 - float(per_class[1].total.double().var()) / N
    assert alone.timestep_variance == pytest.approx(own, rel=1e-9) and own > 0
    pi = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    marginal = MarginalBound.from_class_bounds(per_class, pi, torch.arange(K), 64)
    L = torch.stack([b.total for b in per_class], dim=1).double()
    joint = torch.log(pi) - 64 * math.log(2) * L
    weights = torch.exp(joint - joint.max(dim=1, keepdim=True).values)
    weights = weights / weights.sum(dim=1, keepdim=True)
    torch.testing.assert_close(marginal.class_posterior, weights, rtol=1e-12, atol=1e-12)
    mixed = sum(weights[:, y, None] * per_class[y].terms.double() for y in range(K))
    mixed_bound = type(per_class[0])(plan, torch.zeros(N, dtype=torch.float64), mixed)
    expected = mixed_bound.standard_error ** 2 - float(mixed_bound.total.var()) / N
    assert marginal.timestep_variance == pytest.approx(expected, rel=1e-9)
    assert 0 < marginal.timestep_variance <= max(b.standard_error ** 2 for b in per_class)
    # a posterior on the true class (π puts everything there): anchored, nothing is left to the drawn timesteps
    certain = torch.tensor([1.0, 1e-300, 1e-300], dtype=torch.float64)
    full = estimate_bound(unet, scheduler, x0, TimestepPlan.full_chain(T), generator=torch.Generator().manual_seed(5),
                          class_labels=torch.zeros(N, dtype=torch.long))
    anchored = MarginalBound.from_class_bounds(per_class, certain, torch.arange(K), 64, anchor=full,
                                               labels=torch.zeros(N, dtype=torch.long))
    assert anchored.timestep_variance == pytest.approx(0.0, abs=1e-20)
