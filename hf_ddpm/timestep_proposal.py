"""The proposal q over a chain's steps from which the bound's estimate draws its timesteps (``hf_ddpm.timestep_plan``).

The estimate's error is small when q has the shape of the terms L_{τ_k}; on the digits they peak near t = 12 and fall
by four orders of magnitude by t = 1000 (``docs/guides/bound-estimates.md``). Two sources of that shape:

* **Learned in training** (:func:`learned_proposal`): the importance sampler's √E[L_t²] of every training timestep t
  (improved DDPM, Sec. 3.3; :meth:`hf_ddpm.losses.ImportanceSampler.term_scale`), which the trainer saves with the
  pipeline (``bound_proposal`` in ``model_index.json``). A step τ_k of a sampling chain stands for the training
  timesteps (τ_{k−1}, τ_k] (its first step for [0, τ_0]): its weight is their sum.
* **A pilot pass** (:func:`pilot_timesteps`, :func:`pilot_proposal`), for a model without one (imported, or trained
  with uniform t): the terms at :data:`PILOT_TIMESTEPS` log-spaced steps of the chain, on :data:`PILOT_IMAGES` of the
  images, interpolated linearly in log L against log t (as density per training timestep, so uneven chains are
  weighed by their gaps). On the digits it gives a smaller error than the learned proposal for the cost of about
  1.5 timesteps of the 359 test images, while a fixed log-spaced proposal, q ∝ 1/(t + 1), is off by more than 10 %
  in half of the estimates from 10 timesteps (measured in ``benchmarks/bound_estimates.py``): the terms' shape at
  small t depends on the model (its variance, its decoder) more than any fixed curve can follow.

Either is mixed with :data:`UNIFORM_SHARE` of the uniform distribution, so that every step keeps q_k > 0 (the
estimate is unbiased for any such q; a larger share only spends draws where the terms are negligible).
"""

from __future__ import annotations

import torch

from .errors import ParameterError

PILOT_TIMESTEPS = 16  # log-spaced steps of the pilot pass
PILOT_IMAGES = 32  # images of the pilot pass (all of them when there are fewer)
UNIFORM_SHARE = 1e-3  # of q, spread evenly over the chain's steps


def _with_uniform_share(weights: torch.Tensor) -> torch.Tensor:
    """[N] float64: ``weights`` normalised, mixed with :data:`UNIFORM_SHARE` of the uniform distribution."""
    weights = weights.double().clamp(min=0)
    return (1 - UNIFORM_SHARE) * weights / weights.sum() + UNIFORM_SHARE / len(weights)


def _gaps(chain: torch.Tensor) -> torch.Tensor:
    """[N] float64: how many training timesteps each chain step stands for, τ_k − τ_{k−1} (τ_0 + 1 for the first)."""
    return torch.diff(chain.double(), prepend=torch.tensor([-1.0], dtype=torch.float64))


def check_bound_proposal(bound_proposal, num_train_timesteps: int) -> torch.Tensor | None:
    """``bound_proposal`` (√E[L_t²] of every training timestep) as a [T] float64 tensor (None stays None); a
    ParameterError unless it holds T finite non-negative numbers with a positive sum."""
    if bound_proposal is None:
        return None
    scale = torch.as_tensor(bound_proposal, dtype=torch.float64).flatten().cpu()
    if len(scale) != num_train_timesteps or not bool(torch.isfinite(scale).all()) or bool((scale < 0).any()) \
            or not float(scale.sum()) > 0:
        raise ParameterError("bound_proposal", f"must hold {num_train_timesteps} finite non-negative numbers (one per "
                                               f"training timestep) with a positive sum, got {len(scale)} values")
    return scale


def learned_proposal(bound_proposal: torch.Tensor, chain: torch.Tensor) -> torch.Tensor:
    """[N] float64: q over the steps of ``chain`` (ascending training timesteps) from ``bound_proposal`` [T]
    (√E[L_t²] of every training timestep t, as :func:`check_bound_proposal` returns it): step k weighs the sum over
    t ∈ (τ_{k−1}, τ_k]."""
    cumulative = torch.cat([torch.zeros(1, dtype=torch.float64), bound_proposal.double().cumsum(0)])
    upper = cumulative[chain + 1]
    return _with_uniform_share(upper - torch.cat([torch.zeros(1, dtype=torch.float64), upper[:-1]]))


def pilot_timesteps(chain: torch.Tensor, num_exact: int) -> torch.Tensor:
    """The ascending steps of ``chain`` the pilot pass evaluates: :data:`PILOT_TIMESTEPS` of those after the first
    ``num_exact``, log-spaced in t + 1 from the first to the last (each snapped to the nearest step in log t + 1)."""
    steps = chain[num_exact:]
    log_steps = torch.log1p(steps.double())
    targets = torch.linspace(float(log_steps[0]), float(log_steps[-1]), PILOT_TIMESTEPS, dtype=torch.float64)
    nearest = (log_steps[None, :] - targets[:, None]).abs().argmin(dim=1)
    return steps[nearest.unique()]


def pilot_proposal(chain: torch.Tensor, timesteps: torch.Tensor, term_means: torch.Tensor) -> torch.Tensor:
    """[N] float64: q over the steps of ``chain`` from the pilot's mean terms ``term_means`` at its ``timesteps``
    (:func:`pilot_timesteps`): each term divided by its step's gap (:func:`_gaps`) is a density per training timestep,
    interpolated linearly in log density against log(t + 1) (constant beyond the pilot's first and last step), and
    multiplied back by every step's gap."""
    gaps = _gaps(chain)
    at = torch.searchsorted(chain, timesteps)
    density = term_means.double().cpu() / gaps[at]
    floor = float(density.max()) * 1e-12 if float(density.max()) > 0 else 1e-300
    log_density = density.clamp(min=floor).log()
    x, xs = torch.log1p(timesteps.double()), torch.log1p(chain.double())
    right = torch.searchsorted(x, xs).clamp(1, max(len(x) - 1, 1))
    left = right - 1
    if len(x) == 1:
        interpolated = log_density.expand(len(xs))
    else:
        fraction = ((xs - x[left]) / (x[right] - x[left])).clamp(0, 1)
        interpolated = log_density[left] + fraction * (log_density[right] - log_density[left])
    return _with_uniform_share(interpolated.exp() * gaps)

