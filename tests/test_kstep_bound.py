"""The bound of the K-step sampler (issue 13 §2): against an independent float64 transcription of the respaced chain
for every variance type, clipped and not, on chains with each spacing subtlety; K = T is today's bound exactly; a
drawn subset of a chain's steps; the pipeline's ``log_likelihood`` and ``hf-ddpm evaluate --num-inference-steps``.
"""

import itertools
import json
import math

import mpmath
import numpy as np
import pytest
import torch
from helpers import tiny_unet

from hf_ddpm import DDPMDocPipeline, DDPMDocScheduler, TimestepPlan, VariationalBound, bits_per_dim, estimate_bound
from hf_ddpm.cli import main
from hf_ddpm.errors import ParameterError
from hf_ddpm.likelihood import sampling_chain
from hf_ddpm.timestep_proposal import learned_proposal
from hf_ddpm.training import held_out_bound

pytestmark = pytest.mark.numerics  # run again under ATEN_CPU_CAPABILITY=default in CI (.ci/run)

U = 2.0**-53  # float64's unit roundoff
LN2 = math.log(2.0)
T = 1000
BETAS = np.linspace(1e-4, 0.02, T)  # the paper's schedule, the scheduler's default


def _exact_alpha_bar() -> np.ndarray:
    """ᾱ_t = Π_{s≤t} (1 − β_s) at 40 digits, rounded once to float64."""
    product, out = mpmath.mpf(1), []
    with mpmath.workdps(40):
        for beta in BETAS.tolist():
            product *= 1 - mpmath.mpf(beta)
            out.append(float(product))
    return np.array(out)


ALPHA_BAR = _exact_alpha_bar()


def toy_model(x_t, t):
    """An elementwise network of (x_t, t) in the inputs' dtype: ε̂ in its first channel and, for the learned
    variance types, a second channel (v ∈ (−1, 1) for learned_range; read as log σ² ∈ (−8, −4) for learned, set in
    ``TwoChannels``). Far from the true ε, so x̂_0 leaves [−1, 1] at large t and clipping matters."""
    s = t.to(x_t.dtype).view(-1, 1, 1, 1) / T
    return torch.tanh(1.3 * x_t - 0.4 * s)


class TwoChannels:
    def __init__(self, variance_type):
        self.learned = variance_type == "learned"

    def __call__(self, x_t, t):
        s = t.to(x_t.dtype).view(-1, 1, 1, 1) / T
        v = torch.tanh(0.7 * x_t + s - 0.5)
        return torch.cat([toy_model(x_t, t), 2 * v - 6 if self.learned else v], dim=1)


def model_for(variance_type):
    return TwoChannels(variance_type) if variance_type.startswith("learned") else toy_model


# ----------------------------------------------------------------------------------------------------------------
# The transcription: the K-step chain τ_0 < … < τ_{K−1} written from the equations, in float64 torch so that the
# first-order effect of every rounding on each term can be read off by autograd (the tolerance).


class ErrorBudget:
    """Σ_v |∂L/∂v| δv over the quantities v of one term L, each with the float64 error δv that either computation
    may make in it (first-order propagation; read after ``backward``)."""

    def __init__(self):
        self.sources = []
        self.own = 0.0  # the term formula's own rounding, added directly

    def __call__(self, value: torch.Tensor, delta) -> torch.Tensor:
        if not value.is_leaf:
            value.retain_grad()
        self.sources.append((value, torch.as_tensor(delta, dtype=torch.float64).detach()))
        return value

    def bound(self) -> float:
        return self.own + sum(float((v.grad.abs() * d).sum()) for v, d in self.sources if v.grad is not None)


def alpha_bar_error(tau: np.ndarray) -> np.ndarray:
    """Relative float64 error of ᾱ_τ as the tables form it, exp(Σ_{s≤τ} log1p(−β_s)): the sum of τ + 1 terms of one
    sign errs by ≤ (τ + 1) u |log ᾱ_τ| (plus u per log1p), the exp adds u; the transcription's 40-digit ᾱ one u.
    Twice that, with 8 u for the few roundings of each column formed from it."""
    return 2 * ((tau + 2) * np.abs(np.log(ALPHA_BAR[tau])) + 8) * U


def decoder_nll(x0, mean, log_variance, budget):
    """−log of the N(mean, e^log_variance) mass of x_0's 8-bit bin (edge bins open-ended), per pixel: the value
    exact (40-digit mpmath, each tail computed on its own side), carried as value + ∂/∂mean · (mean − mean₀) +
    ∂/∂log σ² · (log σ² − log σ²₀) so that autograd sees its exact derivatives."""
    half_bin = mpmath.mpf(1) / 255
    means = mean.detach().flatten().tolist()
    log_vars = log_variance.detach().expand_as(mean).flatten().tolist()
    value, d_mean, d_log_var, own = (np.empty(len(means)) for _ in range(4))
    with mpmath.workdps(40):
        for j, (x, m, lv) in enumerate(zip(x0.flatten().tolist(), means, log_vars)):
            sigma = mpmath.exp(mpmath.mpf(lv) / 2)
            lo = -mpmath.inf if x == -1 else (x - half_bin - m) / sigma
            hi = mpmath.inf if x == 1 else (x + half_bin - m) / sigma
            mass = mpmath.ncdf(-lo) - mpmath.ncdf(-hi) if lo > 0 else mpmath.ncdf(hi) - mpmath.ncdf(lo)
            pdf = [0 if mpmath.isinf(z) else mpmath.npdf(z) for z in (lo, hi)]
            z_pdf = [0 if mpmath.isinf(z) else z * mpmath.npdf(z) for z in (lo, hi)]
            value[j] = float(-mpmath.log(mass))
            d_mean[j] = float((pdf[1] - pdf[0]) / (sigma * mass))  # ∂(−log m)/∂μ = (φ(z_hi) − φ(z_lo)) / (σ m)
            d_log_var[j] = float((z_pdf[1] - z_pdf[0]) / (2 * mass))  # ∂(−log m)/∂log σ², ∂z/∂log σ² = −z/2
            # the implementation forms z = (x ± 1/255 − μ) e^{−log σ} (a few roundings each) and log m in log space
            z_max = max(float(abs(z)) for z in (lo, hi) if not mpmath.isinf(z))
            own[j] = 8 * U * (abs(value[j]) + (z_max + 1) ** 2)
    budget.own += float(own.mean()) / LN2
    as_tensor = lambda a: torch.from_numpy(a).view_as(mean)  # noqa: E731
    return (as_tensor(value) + as_tensor(d_mean) * (mean - mean.detach())
            + as_tensor(d_log_var) * (log_variance - log_variance.detach()).expand_as(mean))


def reference_term(k, tau, x0, eps, model, variance_type, clip):
    """(L_k in bits/dim, its error budget) for one image: the decoder at k = 0, KL(q ‖ p_θ) of the chain otherwise."""
    budget = ErrorBudget()
    ab = budget(torch.tensor(ALPHA_BAR[tau], requires_grad=True), alpha_bar_error(tau) * ALPHA_BAR[tau])
    r = lambda v: budget(v, 8 * U * v.detach().abs())  # noqa: E731  a column entry: a few roundings
    ab_prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
    beta = 1 - ab / ab_prev  # β'_k = 1 − ᾱ_{τ_k}/ᾱ_{τ_{k−1}}
    beta_tilde = (1 - ab_prev) / (1 - ab) * beta  # β̃'_k (Eq. 7), 0 at k = 0
    beta_k, beta_tilde_k, first = r(beta[k]), r(beta_tilde[k]), r(beta_tilde[1])
    # the decoder's variance: β̃' of the chain's second step, for both fixed types and the clipped log β̃'
    beta_tilde_clipped = first if k == 0 else beta_tilde_k
    sqrt_ab, sqrt_1mab = r(ab[k].sqrt()), r((1 - ab[k]).sqrt())

    x_t = budget(sqrt_ab * x0 + sqrt_1mab * eps, 4 * U * (sqrt_ab * x0.abs() + sqrt_1mab * eps.abs()).detach())  # Eq. 4
    out = model(x_t, torch.tensor([int(tau[k])]))
    out = budget(out, 8 * U * (out.detach().abs() + 1))
    eps_hat, v = out[:, :1], out[:, 1:]
    x0_hat = (x_t - sqrt_1mab * eps_hat) / sqrt_ab  # Eq. 15
    x0_hat = budget(x0_hat, 4 * U * ((x_t.abs() + sqrt_1mab * eps_hat.abs()) / sqrt_ab).detach())
    x0_used = x0_hat.clamp(-1, 1) if clip else x0_hat
    a = r(ab_prev[k].sqrt() * beta_k / (1 - ab[k]))  # Eq. 7's coefficients
    b = r((1 - beta_k).sqrt() * (1 - ab_prev[k]) / (1 - ab[k]))
    # the implementation may form μ_θ by Eq. 11 (1/√α' = a/√ᾱ + b): the scale of both routes
    mean_p = budget(a * x0_used + b * x_t, 8 * U * (a * (x_t.abs() / sqrt_ab + (1 - ab[k]).sqrt() / sqrt_ab
                                                         * eps_hat.abs()) + b * x_t.abs()).detach())
    log_beta = budget(beta_k.log(), 2 * U * beta_k.detach().log().abs())
    log_beta_tilde = budget(beta_tilde_clipped.log(), 2 * U * beta_tilde_clipped.detach().log().abs())
    if variance_type == "fixed_small":
        log_var_p = log_beta_tilde
    elif variance_type == "fixed_large":
        log_var_p = log_beta_tilde if k == 0 else log_beta
    elif variance_type == "learned":
        log_var_p = v
    else:  # learned_range: (v + 1)/2 · log β' + (1 − v)/2 · log β̃' (improved DDPM, Eq. 15)
        frac = (v + 1) / 2
        log_var_p = frac * log_beta + (1 - frac) * log_beta_tilde
        log_var_p = budget(log_var_p, 8 * U * (frac * log_beta.abs() + (1 - frac) * log_beta_tilde.abs()).detach())

    if k == 0:
        term = decoder_nll(x0, mean_p, log_var_p, budget).mean() / LN2
        return term, budget
    mean_q = budget(a * x0 + b * x_t, 8 * U * (a * x0.abs() + b * x_t.abs()).detach())
    log_var_q = log_beta_tilde
    ratio = torch.exp(log_var_q - log_var_p)
    mahalanobis = (mean_q - mean_p) ** 2 * torch.exp(-log_var_p)
    kl = 0.5 * (log_var_p - log_var_q - 1 + ratio + mahalanobis)  # KL of two Gaussians, per pixel
    lv = (log_var_p.abs() + log_var_q.abs()).detach()
    budget.own += float((8 * U * (lv + 1 + ratio.detach() * (1 + lv) + mahalanobis.detach() * (1 + lv))).mean()) / LN2
    return kl.mean() / LN2, budget


def reference_prior(tau, x0):
    """L_T = KL(N(√ᾱ x_0, 1 − ᾱ) ‖ N(0, 1)) at the chain's last timestep, bits/dim, with its error budget."""
    budget = ErrorBudget()
    t = tau[-1:]
    ab = budget(torch.tensor(ALPHA_BAR[t], requires_grad=True), alpha_bar_error(t) * ALPHA_BAR[t])[0]
    per_pixel = 0.5 * (-torch.log1p(-ab) - 1 + (1 - ab) + ab * x0**2)
    budget.own += float((8 * U * (2 + ab.detach() * x0**2)).mean()) / LN2
    return per_pixel.mean() / LN2, budget


def reference_bound(tau, x0, noise, variance_type, clip):
    """(prior [B], terms [B, K], prior tolerance [B], term tolerances [B, K]): the transcription and, per value,
    twice its first-order error budget (both computations round)."""
    model = model_for(variance_type)
    priors, terms, prior_tol, term_tol = [], [], [], []
    for i in range(len(x0)):
        row = [reference_term(k, tau, x0[i : i + 1], noise[i : i + 1], model, variance_type, clip)
               for k in range(len(tau))]
        prior = reference_prior(tau, x0[i : i + 1])
        (prior[0] + sum(term for term, _ in row)).backward()
        priors.append(prior[0].item())
        prior_tol.append(2 * prior[1].bound())
        terms.append([term.item() for term, _ in row])
        term_tol.append([2 * budget.bound() for _, budget in row])
    return (torch.tensor(priors, dtype=torch.float64), torch.tensor(terms, dtype=torch.float64),
            torch.tensor(prior_tol), torch.tensor(term_tol))


# ----------------------------------------------------------------------------------------------------------------

PIXELS = torch.tensor([[-1.0, 1.0, 50 / 127.5 - 1, 200 / 127.5 - 1], [128 / 127.5 - 1, 1 / 127.5 - 1, 254 / 127.5 - 1, 1.0]],
                      dtype=torch.float64).view(2, 1, 2, 2)  # the 8-bit grid of [−1, 1], both open-ended edge bins

# (scheduler config, how the chain is asked for, the chain it must be: ascending)
CHAINS = [
    (dict(), dict(num_inference_steps=50), list(range(0, 1000, 20))),  # leading: ends at 980, where the prior sits
    (dict(timestep_spacing="trailing"), dict(num_inference_steps=10), list(range(99, 1000, 100))),  # decoder at 99
    (dict(steps_offset=1), dict(num_inference_steps=20), list(range(1, 1000, 50))),  # decoder at 1, prior at 951
    (dict(), dict(inference_timesteps=[999, 640, 3, 2, 0]), [0, 2, 3, 640, 999]),  # as set_timesteps takes them
]


@pytest.mark.parametrize("clip", [True, False], ids=["clipped", "unclipped"])
@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large", "learned_range", "learned"])
@pytest.mark.parametrize("config, ask, expected", CHAINS, ids=["leading50", "trailing10", "offset1", "custom"])
def test_k_step_bound_is_the_respaced_chains_bound(config, ask, expected, variance_type, clip):
    """bits_per_dim(…, num_inference_steps=K) (or inference_timesteps=…) is, term by term, the bound of the K-step
    chain transcribed from the equations: β'_k = 1 − ᾱ_{τ_k}/ᾱ_{τ_{k−1}}, its own β̃'_k, the decoder at its first
    step τ_0 (whatever that timestep), learned_range between log β'_k and log β̃'_k, the prior at τ_{K−1}, the
    network called at the original τ_k. The tolerance is each value's first-order float64 error budget (above),
    at most 7e-10 of the term (the errors found are at most 10 % of it), far below the gap to the training chain's terms at the
    same timesteps (what bits_per_dim gave for every K before)."""
    s = DDPMDocScheduler(variance_type=variance_type, clip_sample=clip, **config)
    assert sampling_chain(s, **ask).tolist() == expected
    noise = torch.randn(PIXELS.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    model = model_for(variance_type)
    bound = bits_per_dim(model, s, PIXELS, noise=noise, **ask)
    tau = np.array(expected)
    prior, terms, prior_tol, term_tol = reference_bound(tau, PIXELS, noise, variance_type, clip)
    assert bound.timesteps.tolist() == expected and bound.plan.prior_timestep == expected[-1]
    assert ((bound.prior - prior).abs() <= prior_tol).all(), (bound.prior, prior, prior_tol)
    error = (bound.terms - terms).abs()
    excess = error - term_tol
    assert (excess <= 0).all(), f"worst excess {float(excess.max())} at {divmod(int(excess.argmax()), len(tau))}"
    total_tol = float(prior_tol.max() + term_tol.sum(1).max())
    torch.testing.assert_close(bound.total, prior + terms.sum(1), rtol=0, atol=total_tol)
    # the training chain's terms at the same timesteps (what the bound was before) are far outside the tolerance
    training = bits_per_dim(model, s, PIXELS, noise=noise, timesteps=expected)
    assert float((training.terms - terms).abs().max()) > 1e3 * float(term_tol.max())


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_k_equal_t_is_todays_bound_exactly(spacing):
    """num_inference_steps = T is the full chain whatever the spacing: the same terms, bit for bit, as the default."""
    s = DDPMDocScheduler(num_train_timesteps=30, beta_end=0.2, variance_type="learned_range", timestep_spacing=spacing)
    x0 = torch.randint(0, 256, (3, 1, 8, 8), generator=torch.Generator().manual_seed(0)).float() / 127.5 - 1
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    unet = tiny_unet(out_channels=2)
    full = bits_per_dim(unet, s, x0, noise=noise)
    k_step = bits_per_dim(unet, s, x0, noise=noise, num_inference_steps=30)
    assert torch.equal(k_step.terms, full.terms) and torch.equal(k_step.prior, full.prior)
    assert k_step.plan.is_training_chain and k_step.to_dict() == full.to_dict()
    pipe = DDPMDocPipeline(unet=unet, scheduler=s)
    images = (x0 + 1) / 2
    seeded = lambda: torch.Generator().manual_seed(2)  # noqa: E731
    assert torch.equal(pipe.log_likelihood(images, num_inference_steps=30, generator=seeded()).terms,
                       pipe.log_likelihood(images, generator=seeded()).terms)


def test_drawn_subset_of_a_k_step_chain():
    """A large K with a drawn subset of its steps: the chain's first two steps exactly, 8 draws from its other steps by
    importance from a proposal over training timesteps mapped onto the chain; the estimate's terms are the full
    K-step bound's at those steps, weighted by the plan (each draw 1/(n q))."""
    s = DDPMDocScheduler()
    chain = sampling_chain(s, 250)
    scale = 1.0 / (torch.arange(T, dtype=torch.float64) + 1)
    plan = TimestepPlan.importance(T, 10, learned_proposal(scale, chain), chain=chain,
                                   generator=torch.Generator().manual_seed(4))
    assert plan.timesteps[:2].tolist() == chain[:2].tolist() == [0, 4] and plan.prior_timestep == 996
    assert len(plan.draws) == 8 and set(plan.timesteps[2:].tolist()) <= set(chain[2:].tolist())
    x0 = PIXELS.float()
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3))
    full = bits_per_dim(toy_model, s, x0, noise=noise, num_inference_steps=250)
    estimate = estimate_bound(toy_model, s, x0, plan, noise=noise)
    columns = [chain.tolist().index(t) for t in plan.timesteps.tolist()]
    assert torch.equal(estimate.terms, full.terms[:, columns]) and torch.equal(estimate.prior, full.prior)
    draws = [chain.tolist().index(t) for t in plan.draws.tolist()]
    by_hand = full.prior + full.terms[:, :2].sum(1) + (full.terms[:, draws] * plan.draw_weights).sum(1)
    torch.testing.assert_close(estimate.total, by_hand, rtol=1e-14, atol=0)
    # held_out_bound draws the same plan from its seed, on the chain of num_inference_steps
    held_out = held_out_bound(toy_model, s, x0, num_timesteps=10, seed=4, num_inference_steps=250,
                              bound_proposal=scale)
    assert torch.equal(held_out.plan.draws, plan.draws) and torch.equal(held_out.plan.chain, chain)
    assert held_out_bound(toy_model, s, x0, num_timesteps=500, seed=4, num_inference_steps=250).plan.is_complete


def test_drawn_subsets_of_a_chain_are_unbiased():
    """Over every subset of 3 of the 6 other steps of an 8-step chain (2 exact), the estimate averages to the
    chain's bound (the weights use the chain's N, not T) and its variance estimate, that of draws with replacement, to
    M/(M − n) = 2 times the estimate's variance."""
    chain = torch.tensor([1, 6, 11, 16, 21, 26, 31, 36])
    terms = torch.rand(1, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 0.1
    prior = torch.tensor([2e-3], dtype=torch.float64)
    estimates, variances = [], []
    for subset in itertools.combinations(range(2, 8), 3):
        columns = [0, 1, *subset]
        bound = VariationalBound(TimestepPlan(40, chain, chain[columns], num_exact=2), prior, terms[:, columns])
        estimates.append(bound.bits_per_dim)
        variances.append(bound.timestep_variance)
    estimates = torch.tensor(estimates, dtype=torch.float64)
    full = float(prior + terms.sum())
    assert abs(float(estimates.mean()) - full) < 1e-12
    assert abs(sum(variances) / len(variances) / 2 - float(((estimates - full) ** 2).mean())) < 1e-12


def test_zero_snr_epsilon_bound_of_a_chain_that_stops_short_of_the_last_timestep():
    """With zero terminal SNR and ε-prediction x̂_0 is undefined only at timestep T − 1: the leading 50-step chain
    (prior at 980, ᾱ > 0 there) has a finite bound, the full chain's bound names the timestep."""
    s = DDPMDocScheduler(rescale_betas_zero_snr=True, clip_sample=False)
    x0 = PIXELS.float()
    bound = bits_per_dim(toy_model, s, x0, generator=torch.Generator().manual_seed(0), num_inference_steps=50)
    assert torch.isfinite(bound.total).all() and bound.plan.prior_timestep == 980
    with pytest.raises(ValueError, match="cannot recover x̂_0 at timestep 999"):
        bits_per_dim(toy_model, s, x0, generator=torch.Generator().manual_seed(0))


def test_the_chain_is_named_and_checked():
    s = DDPMDocScheduler()
    x0 = PIXELS.float()
    bound = bits_per_dim(toy_model, s, x0, generator=torch.Generator().manual_seed(0), num_inference_steps=50)
    lines = bound.describe().splitlines()
    assert lines[1] == "  of the 50-step sampling chain 0, 20, 40, …, 980 (decoder at t=0, prior at t=980)"
    summary = bound.to_dict()
    assert summary["chain"] == list(range(0, 1000, 20)) and summary["num_timesteps"] == 50
    assert bound.plan.describe() == "full bound of the 50-step chain"
    with pytest.raises(ValueError, match="at most one of num_inference_steps or inference_timesteps"):
        bits_per_dim(toy_model, s, x0, num_inference_steps=5, inference_timesteps=[5, 0])
    with pytest.raises(ParameterError, match="inference_timesteps is not a chain set_timesteps accepts: .*descending"):
        bits_per_dim(toy_model, s, x0, inference_timesteps=[0, 5])
    with pytest.raises(ValueError, match=r"num_inference_steps must be an integer in \[1, 1000\]"):
        bits_per_dim(toy_model, s, x0, num_inference_steps=1001)
    with pytest.raises(ValueError, match=r"timesteps \[3\] are not steps of the chain"):
        bits_per_dim(toy_model, s, x0, num_inference_steps=50, timesteps=[0, 3])


def test_log_likelihood_is_the_bound_of_what_the_pipeline_samples_with_k_steps():
    """pipe.log_likelihood(images, num_inference_steps=K) is the bound on the very chain pipe(num_inference_steps=K)
    samples on (its scheduler's timesteps after the call), equal to bits_per_dim with the same ε stream."""
    s = DDPMDocScheduler(num_train_timesteps=40, beta_end=0.1, timestep_spacing="trailing", variance_type="fixed_large")
    pipe = DDPMDocPipeline(unet=tiny_unet(), scheduler=s)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=3, num_inference_steps=7, generator=torch.Generator().manual_seed(0),
                  output_type="pt").images
    sampled_on = pipe.scheduler.timesteps.flip(0).tolist()
    bound = pipe.log_likelihood(images, num_inference_steps=7, generator=torch.Generator().manual_seed(1))
    assert bound.plan.chain.tolist() == sampled_on and sampled_on[0] > 0  # trailing: the decoder at τ_0 > 0
    x0 = torch.round(images * 255) / 127.5 - 1
    direct = bits_per_dim(pipe.unet, s, x0, generator=torch.Generator().manual_seed(1), num_inference_steps=7)
    torch.testing.assert_close(bound.total, direct.total, rtol=0, atol=0)
    custom = pipe.log_likelihood(images, inference_timesteps=sampled_on[::-1],
                                 generator=torch.Generator().manual_seed(1))
    assert torch.equal(custom.terms, bound.terms)


def test_evaluate_reports_the_k_step_bound_beside_its_samples(tmp_path, capsys):
    """`hf-ddpm evaluate --num-inference-steps 5`: the bound of the 5-step chain (recomputed here with bits_per_dim),
    the samples drawn with 5 steps, and the record and the printout saying which chain; without the flag, the full
    chain as before; more steps than the model's T is one error line naming the flag."""
    from test_cli import _digits_test_x0

    from hf_ddpm.data.dataset import spread_indices
    from hf_ddpm.image_seeds import BOUND, image_generators

    model = tmp_path / "model"
    DDPMDocPipeline(unet=tiny_unet(), scheduler=DDPMDocScheduler(num_train_timesteps=20)).save_pretrained(model)
    out = tmp_path / "bound.json"
    main(["evaluate", "--model", str(model), "--num-inference-steps", "5", "--seed", "1", "--num-images", "40",
          "--num-samples", "16", "--json", str(out)])
    record = json.loads(out.read_text())
    assert (record["num_inference_steps"], record["timestep_spacing"], record["steps_offset"]) == (5, "leading", 0)
    assert record["bound_of"] == "the 5-step sampling chain 0, 4, 8, 12, 16 (decoder at t=0, prior at t=16)"
    assert record["bound"]["chain"] == [0, 4, 8, 12, 16] and record["sample_quality"]["num_inference_steps"] == 5
    pipe = DDPMDocPipeline.from_pretrained(model)
    x0 = _digits_test_x0()[spread_indices(359, 40)]
    direct = bits_per_dim(pipe.unet, pipe.scheduler, x0, generator=image_generators(1, range(40), BOUND),
                          num_inference_steps=5)
    assert record["bound"]["bits_per_dim"] == pytest.approx(direct.mean(), rel=1e-6)
    printed = capsys.readouterr().out
    assert "16 samples (5 steps, seed 1)" in printed and "of the 5-step sampling chain 0, 4, 8, 12, 16" in printed
    main(["evaluate", "--model", str(model), "--num-images", "40", "--json", str(out)])
    record = json.loads(out.read_text())
    assert record["num_inference_steps"] == 20 and record["bound"]["chain"] == list(range(20))
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--model", str(model), "--num-inference-steps", "21"])
    assert exit_info.value.code == 2
    assert "hf-ddpm evaluate: error: --num-inference-steps must be at most the model's num_train_timesteps=20, got 21" \
        in capsys.readouterr().err


def test_bound_term_on_a_chain_reads_nothing_back():
    """bound_term on a sampling chain, per-sample timesteps (CPU stand-ins for device tensors) and a host timestep:
    the decoder's place is found by the chain index where the timesteps live, 0 host reads (tests/host_syncs.py)."""
    from host_syncs import HostSyncCounter

    from hf_ddpm.likelihood import bound_term

    for variance_type in ("fixed_small", "learned_range"):
        s = DDPMDocScheduler(variance_type=variance_type, timestep_spacing="trailing")
        chain = s.chain(10)
        x0 = PIXELS.float()
        x_t = s.add_noise(x0, torch.randn(x0.shape), torch.tensor([99, 999]))
        out = model_for(variance_type)(x_t, torch.tensor([99, 999]))
        with HostSyncCounter() as syncs:
            per_sample = bound_term(s, out, x0, x_t, torch.tensor([99, 999]), chain=chain)
            decoder = bound_term(s, out[:1], x0[:1], x_t[:1], 99, chain=chain)
            bound_term(s, out, x0, x_t, torch.tensor([0, 999]))
        assert syncs.count == 0, syncs.report()
        assert torch.equal(per_sample[:1], decoder)  # t = 99 is this chain's first step: the decoder
