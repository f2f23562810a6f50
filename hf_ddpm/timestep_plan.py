"""Which terms of the variational bound an estimate evaluates, and the weight of each.

The bound (Eq. 5) of a chain τ_0 < τ_1 < … < τ_{N−1} (the training chain: τ_k = k, N = T; a sampling chain of
``num_inference_steps`` = N steps: the timesteps ``scheduler.set_timesteps`` installs, ascending; see
``hf_ddpm.schedules``) is L_T + Σ_k L_{τ_k}: the prior L_T = KL(q(x_{τ_{N−1}} | x_0) ‖ N(0, I)) at the chain's last
step, the decoder L_0 at its first step τ_0 (whatever its timestep) and one KL term at each other step, between the
chain's own posterior and p_θ. A plan evaluates K of the N terms:
the ``num_exact`` first steps exactly (weight 1) and the other K − num_exact drawn uniformly without replacement from
the remaining N − num_exact steps, each weighted (N − num_exact)/(K − num_exact). The weighted sum
L_T + Σ_{k∈S} w_k L_{τ_k} is then an unbiased estimate of the bound (the bound itself when all N are evaluated).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import torch

MIN_STRATIFIED_TIMESTEPS = 4  # half exact, half drawn: the drawn half's error estimate needs two of them


def _as_timesteps(values) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.long).flatten().cpu()


def _chain_or_training(num_train_timesteps: int, chain) -> torch.Tensor:
    return torch.arange(num_train_timesteps) if chain is None else _as_timesteps(chain)


@dataclass(frozen=True, eq=False)
class TimestepPlan:
    """The terms an estimate of the bound evaluates. Build it with :meth:`full_chain`, :meth:`uniform` or
    :meth:`stratified`; the fields are checked once, here.

    ``num_train_timesteps``: T of the scheduler. ``chain`` [N]: the ascending timesteps of the chain whose terms are
    evaluated (the training chain 0 … T−1, or a sampling chain of fewer steps, whose bound is that of the distribution
    ``set_timesteps`` + ``step`` sample from on it). ``timesteps`` [K]: the evaluated steps of that chain, ascending
    (where the network is called). ``num_exact``: the first ``num_exact`` timesteps are the chain's first ``num_exact``
    steps, evaluated exactly; the rest were drawn uniformly without replacement from the chain's other steps.
    """

    num_train_timesteps: int
    chain: torch.Tensor
    timesteps: torch.Tensor
    num_exact: int

    def __post_init__(self):
        T = self.num_train_timesteps
        chain, timesteps = _as_timesteps(self.chain), _as_timesteps(self.timesteps)
        object.__setattr__(self, "chain", chain)
        object.__setattr__(self, "timesteps", timesteps)
        if chain.numel() == 0 or not bool((chain.diff() > 0).all()) or chain[0] < 0 or chain[-1] >= T:
            raise ValueError(f"chain must be ascending distinct timesteps in [0, {T}), got {chain.tolist()}")
        if timesteps.numel() == 0 or not bool((timesteps.diff() > 0).all()):
            raise ValueError(f"timesteps must be a non-empty set of distinct timesteps, got {timesteps.tolist()}")
        if timesteps[0] < 0 or timesteps[-1] >= T:
            raise ValueError(
                f"timesteps must lie in [0, {T}), got values from {int(timesteps[0])} to {int(timesteps[-1])}"
            )
        outside = timesteps[~torch.isin(timesteps, chain)]
        if outside.numel():
            raise ValueError(f"timesteps {outside.tolist()} are not steps of the chain {chain.tolist()}")
        exact = self.num_exact
        if not (0 <= exact <= len(timesteps) and torch.equal(timesteps[:exact], chain[:exact])):
            raise ValueError(f"num_exact={self.num_exact}: the plan's first timesteps must be the chain's first steps")

    @classmethod
    def full_chain(cls, num_train_timesteps: int, chain=None) -> TimestepPlan:
        """Every term of ``chain``: the bound itself. ``chain``: its ascending train timesteps (the sampling chain
        of K steps is ``scheduler.chain(num_inference_steps=K).timesteps``); None: the training chain 0 … T−1."""
        chain = _chain_or_training(num_train_timesteps, chain)
        return cls(num_train_timesteps, chain, chain, num_exact=len(chain))

    @classmethod
    def uniform(cls, num_train_timesteps: int, timesteps=None, chain=None) -> TimestepPlan:
        """The terms of ``chain`` (as in :meth:`full_chain`) at its steps ``timesteps`` (any order), taken as drawn
        uniformly without replacement, each weighted N/K; None: every step (:meth:`full_chain`)."""
        if timesteps is None:
            return cls.full_chain(num_train_timesteps, chain)
        chain = _chain_or_training(num_train_timesteps, chain)
        return cls(num_train_timesteps, chain, _as_timesteps(timesteps).sort().values, num_exact=0)

    @classmethod
    def stratified(cls, num_train_timesteps: int, num_timesteps: int | None, seed: int, chain=None) -> TimestepPlan:
        """``num_timesteps`` = K of the N terms of ``chain`` (as in :meth:`full_chain`): its K // 2 first steps (where
        the terms are largest and change fastest) exactly, and K − K // 2 drawn uniformly without replacement from
        its other steps with ``seed``. None or K ≥ N: every step (:meth:`full_chain`)."""
        T = num_train_timesteps
        chain = _chain_or_training(T, chain)
        integer = isinstance(num_timesteps, numbers.Integral) and not isinstance(num_timesteps, bool)
        if num_timesteps is None or (integer and num_timesteps >= len(chain)):
            return cls.full_chain(T, chain)
        if not integer or num_timesteps < MIN_STRATIFIED_TIMESTEPS:
            raise ValueError(
                f"num_timesteps must be None (every timestep) or an integer ≥ {MIN_STRATIFIED_TIMESTEPS} (half "
                f"evaluated exactly, half drawn: the error of the drawn half needs two), got {num_timesteps!r}"
            )
        exact = num_timesteps // 2
        generator = torch.Generator().manual_seed(seed)
        drawn = exact + torch.randperm(len(chain) - exact, generator=generator)[: num_timesteps - exact]
        return cls(T, chain, torch.cat([chain[:exact], chain[drawn.sort().values]]), num_exact=exact)

    @property
    def num_drawn(self) -> int:
        """How many of the timesteps were drawn (the rest are exact)."""
        return len(self.timesteps) - self.num_exact

    @property
    def population(self) -> int:
        """How many steps of the chain the drawn timesteps were drawn from."""
        return len(self.chain) - self.num_exact

    @property
    def is_complete(self) -> bool:
        """Every term of the chain is evaluated: the estimate is the bound itself."""
        return len(self.timesteps) == len(self.chain)

    @property
    def weights(self) -> torch.Tensor:
        """[K] float64: the weight of each evaluated term in the estimate (1 exact, N − num_exact over K − num_exact
        drawn)."""
        weights = torch.ones(len(self.timesteps), dtype=torch.float64)
        weights[self.num_exact :] = self.population / max(self.num_drawn, 1)
        return weights

    @property
    def decoder_mask(self) -> torch.Tensor:
        """[K] bool: the column of the decoder term L_0 (the chain's first step), if evaluated."""
        return self.timesteps == self.chain[0]

    @property
    def is_training_chain(self) -> bool:
        """The chain is the training chain 0 … T−1 (the default bound), not a shorter sampling chain."""
        return len(self.chain) == self.num_train_timesteps

    def describe_chain(self) -> str:
        """Whose bound this is, in words: the training chain, or the sampling chain's steps with where its decoder
        and prior sit (e.g. "the 50-step sampling chain 0, 20, 40, …, 980 (decoder at t=0, prior at t=980)")."""
        if self.is_training_chain:
            return f"the full {self.num_train_timesteps}-step chain (every training timestep)"
        steps = self.chain.tolist()
        shown = ", ".join(map(str, steps)) if len(steps) <= 6 else ", ".join(map(str, steps[:3])) + f", …, {steps[-1]}"
        return (f"the {len(steps)}-step sampling chain {shown} (decoder at t={steps[0]}, prior at "
                f"t={self.prior_timestep})")

    def describe(self) -> str:
        """How the terms were chosen, in words (e.g. for metrics.json)."""
        if self.is_complete:
            return "full bound over all timesteps" if self.is_training_chain else \
                f"full bound of the {len(self.chain)}-step chain"
        chain = "" if self.is_training_chain else f" of the {len(self.chain)}-step chain"
        return (f"unbiased estimate from {len(self.timesteps)} timesteps{chain}: the {self.num_exact} smallest "
                f"exactly, {self.num_drawn} drawn uniformly without replacement from the rest")

    @property
    def prior_timestep(self) -> int:
        """The chain's last step, where the prior L_T = KL(q(x_t | x_0) ‖ N(0, I)) is taken."""
        return int(self.chain[-1])
