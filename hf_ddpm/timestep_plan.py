"""Which terms of the variational bound an estimate evaluates, and the weight of each.

The bound (Eq. 5) of a chain τ_0 < τ_1 < … < τ_{N−1} (the training chain: τ_k = k, N = T; a sampling chain of
``num_inference_steps`` = N steps: the timesteps ``scheduler.set_timesteps`` installs, ascending; see
``hf_ddpm.schedules``) is L_T + Σ_k L_{τ_k}: the prior L_T = KL(q(x_{τ_{N−1}} | x_0) ‖ N(0, I)) at the chain's last
step, the decoder L_0 at its first step τ_0 (whatever its timestep) and one KL term at each other step, between the
chain's own posterior and p_θ. A plan evaluates K of the N terms: the ``num_exact`` first steps exactly (weight 1),
and n draws from the other M = N − num_exact steps.

**Importance sampling over t** (:meth:`TimestepPlan.importance`). A proposal q over those M steps (q_k > 0, Σ_k q_k = 1;
:mod:`hf_ddpm.timestep_proposal` makes it) cuts [0, 1) into the intervals I_k = [Q_{k−1}, Q_k) of its cumulative sum
Q. The n draws fall into H strata, consecutive pieces J_h of [0, 1) of widths r_h / n with r_h ≥ 2 draws each
(:data:`DRAWS_PER_STRATUM`); draw j of stratum h takes u_j uniform on J_h and the step k_j whose interval holds u_j,
and enters with the weight w_j = 1 / (n q_{k_j}):

    L̂ = L_T + Σ_{k<num_exact} L_{τ_k} + Σ_j w_j L_{τ_{k_j}}.

It is exactly unbiased: u_j lands in I_k with probability (n / r_h) |I_k ∩ J_h|, so the r_h draws of stratum h
contribute Σ_k |I_k ∩ J_h| L_{τ_k} / q_k in expectation, and the strata together Σ_k |I_k| L_{τ_k} / q_k = Σ_k L_{τ_k}
(|I_k| = q_k). This is stratified sampling of u ↦ L_{τ_k(u)} / q_{k(u)}, whose integral over [0, 1) is the sum: the
closer q is to the shape of the terms, the flatter that function and the smaller the error. The draws of a stratum are
independent and identically distributed, so with c_j = w_j L_{τ_{k_j}} the variance of the drawn part is estimated
without bias by Σ_h r_h / (r_h − 1) Σ_{j∈h} (c_j − c̄_h)² (:attr:`VariationalBound.timestep_variance`; the standard
error widens it for its few degrees of freedom). A step drawn more than once is evaluated once; its weight is the sum
of its draws' weights.

A plan built from given timesteps (:meth:`TimestepPlan.uniform`, or the constructor without ``draws``) takes its
non-exact timesteps as n uniform draws (q = 1/M, one stratum), each weighted M/n: unbiased when they were drawn
uniformly, and the variance estimate is that of draws with replacement (for a subset drawn without replacement it
errs on the large side by the factor M/(M − n) at most).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import torch

from .errors import ParameterError

# The chain's first steps, evaluated exactly: the decoder L_0, and the KL term of the step down to it, which on a
# sampling chain is one coarse step that holds most of the bound (56 % of the 100-step chain's on the digits, ten
# times the training chain's terms it replaces) — unlike any other step, not to be predicted from the training chain.
EXACT_STEPS = 2
MIN_DRAWS = 2  # the fewest draws whose spread estimates their error
MIN_STRATIFIED_TIMESTEPS = EXACT_STEPS + MIN_DRAWS
DRAWS_PER_STRATUM = 3  # strata of three draws: as accurate as pairs on the digits, with a steadier error estimate


def _as_timesteps(values) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.long).flatten().cpu()


def _chain_or_training(num_train_timesteps: int, chain) -> torch.Tensor:
    return torch.arange(num_train_timesteps) if chain is None else _as_timesteps(chain)


def check_num_timesteps(num_timesteps, num_steps: int, num_exact: int = EXACT_STEPS) -> bool:
    """Whether ``num_timesteps`` asks for every step of a chain of ``num_steps`` (None, or K ≥ N); a ParameterError
    unless it is that or an integer K ≥ ``num_exact`` + :data:`MIN_DRAWS`."""
    integer = isinstance(num_timesteps, numbers.Integral) and not isinstance(num_timesteps, bool)
    if num_timesteps is None or (integer and num_timesteps >= num_steps):
        return True
    if not integer or num_timesteps < num_exact + MIN_DRAWS:
        raise ParameterError("num_timesteps", f"must be None (every timestep) or an integer ≥ "
                                              f"{num_exact + MIN_DRAWS} (the {num_exact} exact step(s) and two "
                                              f"draws, whose spread gives the error), got {num_timesteps!r}")
    return False


def strata_of(num_draws: int) -> torch.Tensor:
    """[n] long: the stratum of each of ``num_draws`` draws, :data:`DRAWS_PER_STRATUM` per stratum (the last takes the
    remainder; fewer draws than that make one stratum)."""
    strata = torch.arange(num_draws) // DRAWS_PER_STRATUM
    return strata.clamp(max=max(num_draws // DRAWS_PER_STRATUM - 1, 0))


@dataclass(frozen=True, eq=False)
class TimestepPlan:
    """The terms an estimate of the bound evaluates. Build it with :meth:`full_chain`, :meth:`importance` or
    :meth:`uniform`; the fields are checked once, here.

    ``num_train_timesteps``: T of the scheduler. ``chain`` [N]: the ascending timesteps of the chain whose terms are
    evaluated (the training chain 0 … T−1, or a sampling chain of fewer steps, whose bound is that of the distribution
    ``set_timesteps`` + ``step`` sample from on it). ``timesteps`` [K]: the evaluated steps of that chain, ascending
    and distinct (where the network is called). ``num_exact``: the first ``num_exact`` timesteps are the chain's first
    ``num_exact`` steps, evaluated exactly; the others were drawn. ``draws`` [n]: the drawn timesteps, one per draw
    (a timestep drawn twice appears twice), ``draw_weights`` [n] float64: each draw's weight 1 / (n q), ``strata`` [n]:
    each draw's stratum (see the module docstring); None: the timesteps after the exact ones, each drawn once
    uniformly from the chain's other steps, in one stratum. ``proposal``: where q came from, in words.
    """

    num_train_timesteps: int
    chain: torch.Tensor
    timesteps: torch.Tensor
    num_exact: int
    draws: torch.Tensor | None = None
    draw_weights: torch.Tensor | None = None
    strata: torch.Tensor | None = None
    proposal: str = "uniform"

    def __post_init__(self):
        T = self.num_train_timesteps
        chain, timesteps = _as_timesteps(self.chain), _as_timesteps(self.timesteps)
        object.__setattr__(self, "chain", chain)
        object.__setattr__(self, "timesteps", timesteps)
        if chain.numel() == 0 or not bool((chain.diff() > 0).all()) or chain[0] < 0 or chain[-1] >= T:
            raise ParameterError("chain", f"must be ascending distinct timesteps in [0, {T}), got {chain.tolist()}")
        if timesteps.numel() == 0 or not bool((timesteps.diff() > 0).all()):
            raise ParameterError("timesteps", f"must be a non-empty set of distinct timesteps, got "
                                              f"{timesteps.tolist()}")
        if timesteps[0] < 0 or timesteps[-1] >= T:
            raise ParameterError(
                "timesteps", f"must lie in [0, {T}), got values from {int(timesteps[0])} to {int(timesteps[-1])}"
            )
        outside = timesteps[~torch.isin(timesteps, chain)]
        if outside.numel():
            raise ParameterError("timesteps", f"{outside.tolist()} are not steps of the chain {chain.tolist()}")
        exact = self.num_exact
        if not (0 <= exact <= len(timesteps) and torch.equal(timesteps[:exact], chain[:exact])):
            raise ParameterError("num_exact", f"={self.num_exact}: the plan's first timesteps must be the chain's "
                                              "first steps")
        self._set_draws()

    def _set_draws(self) -> None:
        """Fill in uniform draws when none are given, and check that the draws are exactly the drawn timesteps."""
        drawn = self.timesteps[self.num_exact :]
        if self.draws is None and len(self.timesteps) == len(self.chain):  # every step, each weighted 1: exact
            object.__setattr__(self, "num_exact", len(self.chain))
            drawn = drawn[:0]
        if self.draws is None:
            n, population = len(drawn), len(self.chain) - self.num_exact
            object.__setattr__(self, "draws", drawn)
            object.__setattr__(self, "draw_weights", torch.full((n,), population / max(n, 1), dtype=torch.float64))
            object.__setattr__(self, "strata", torch.zeros(n, dtype=torch.long))
            return
        draws = _as_timesteps(self.draws)
        weights = torch.as_tensor(self.draw_weights, dtype=torch.float64).flatten().cpu()
        strata = _as_timesteps(self.strata)
        object.__setattr__(self, "draws", draws)
        object.__setattr__(self, "draw_weights", weights)
        object.__setattr__(self, "strata", strata)
        if not (len(weights) == len(strata) == len(draws)) or not bool((weights > 0).all()):
            raise ValueError(f"draws, draw_weights and strata must have one positive weight and one stratum per draw, "
                             f"got {len(draws)}, {len(weights)} and {len(strata)}")
        if not torch.equal(draws.unique(), drawn):
            raise ValueError(f"the draws {draws.tolist()} must be exactly the drawn timesteps {drawn.tolist()}")

    @classmethod
    def full_chain(cls, num_train_timesteps: int, chain=None) -> TimestepPlan:
        """Every term of ``chain``: the bound itself. ``chain``: its ascending train timesteps (the sampling chain
        of K steps is ``scheduler.chain(num_inference_steps=K).timesteps``); None: the training chain 0 … T−1."""
        chain = _chain_or_training(num_train_timesteps, chain)
        return cls(num_train_timesteps, chain, chain, num_exact=len(chain))

    @classmethod
    def uniform(cls, num_train_timesteps: int, timesteps=None, chain=None) -> TimestepPlan:
        """The terms of ``chain`` (as in :meth:`full_chain`) at its steps ``timesteps`` (any order), taken as drawn
        uniformly, each weighted N/K; None or every step: :meth:`full_chain`."""
        chain = _chain_or_training(num_train_timesteps, chain)
        if timesteps is None:
            return cls.full_chain(num_train_timesteps, chain)
        timesteps = _as_timesteps(timesteps).sort().values
        if torch.equal(timesteps, chain):
            return cls.full_chain(num_train_timesteps, chain)
        return cls(num_train_timesteps, chain, timesteps, num_exact=0)

    @classmethod
    def importance(
        cls,
        num_train_timesteps: int,
        num_timesteps: int | None,
        proposal: torch.Tensor,
        *,
        chain=None,
        num_exact: int = EXACT_STEPS,
        generator: torch.Generator | None = None,
        uniforms: torch.Tensor | None = None,
        description: str = "a given proposal",
    ) -> TimestepPlan:
        """``num_timesteps`` = K of the N terms of ``chain`` (as in :meth:`full_chain`): its ``num_exact`` first steps
        exactly (by default :data:`EXACT_STEPS`) and n = K − num_exact drawn by importance from the others, stratified
        (module docstring). ``proposal`` [N]: non-negative weights of the chain's steps, positive after the exact ones
        (those are normalised to q; the first ``num_exact`` are ignored). The draws' uniforms come from ``generator``
        (a seeded ``torch.Generator`` makes the plan reproducible), or are given as ``uniforms`` [n] in [0, 1), one per
        draw, to be placed in their strata. ``description``: where the proposal came from, for :meth:`describe`.
        None or K ≥ N: every step (:meth:`full_chain`)."""
        T = num_train_timesteps
        chain = _chain_or_training(T, chain)
        if check_num_timesteps(num_timesteps, len(chain), num_exact):
            return cls.full_chain(T, chain)
        q = torch.as_tensor(proposal, dtype=torch.float64).flatten().cpu()
        if len(q) != len(chain) or not bool(torch.isfinite(q).all()) or not bool((q[num_exact:] > 0).all()):
            raise ValueError(f"proposal must hold a finite weight per step of the {len(chain)}-step chain, positive "
                             f"after the {num_exact} exact one(s)")
        q = q[num_exact:] / q[num_exact:].sum()
        n = num_timesteps - num_exact
        strata = strata_of(n)
        sizes = torch.bincount(strata).double()
        starts = torch.cat([torch.zeros(1, dtype=torch.float64), sizes.cumsum(0)[:-1]])[strata] / n
        if uniforms is None:
            uniforms = torch.rand(n, generator=generator, dtype=torch.float64,
                                  device=generator.device if generator is not None else "cpu").cpu()
        u = starts + torch.as_tensor(uniforms, dtype=torch.float64) * sizes[strata] / n
        steps = torch.searchsorted(q.cumsum(0), u, right=True).clamp(max=len(q) - 1)
        draws = chain[num_exact + steps]
        timesteps = torch.cat([chain[:num_exact], draws.unique()])
        return cls(T, chain, timesteps, num_exact, draws=draws, draw_weights=1.0 / (n * q[steps]), strata=strata,
                   proposal=description)

    @property
    def num_drawn(self) -> int:
        """How many timesteps were drawn (distinct; the rest are exact)."""
        return len(self.timesteps) - self.num_exact

    @property
    def num_strata(self) -> int:
        """How many strata the draws fall into (0 without draws)."""
        return int(self.strata.max()) + 1 if len(self.strata) else 0

    @property
    def is_complete(self) -> bool:
        """Every term of the chain is evaluated exactly: the estimate is the bound itself."""
        return self.num_exact == len(self.chain)

    @property
    def weights(self) -> torch.Tensor:
        """[K] float64: the weight of each evaluated term in the estimate (1 exact, the sum of its draws' weights
        drawn)."""
        weights = torch.ones(len(self.timesteps), dtype=torch.float64)
        drawn = torch.zeros(len(self.timesteps) - self.num_exact, dtype=torch.float64)
        column = torch.searchsorted(self.timesteps[self.num_exact :], self.draws)
        weights[self.num_exact :] = drawn.index_add(0, column, self.draw_weights)
        return weights

    @property
    def draw_columns(self) -> torch.Tensor:
        """[n] long: the column of ``timesteps`` (and of a bound's ``terms``) that each draw reads."""
        return torch.searchsorted(self.timesteps, self.draws)

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
        exact = f"the chain's first {self.num_exact} steps exactly, " if self.num_exact else ""
        strata = f" in {self.num_strata} strata" if self.num_strata > 1 else ""
        return (f"unbiased estimate from {len(self.timesteps)} timesteps{chain}: {exact}{len(self.draws)} drawn from "
                f"the rest{strata}, proposal {self.proposal}")

    @property
    def prior_timestep(self) -> int:
        """The chain's last step, where the prior L_T = KL(q(x_t | x_0) ‖ N(0, I)) is taken."""
        return int(self.chain[-1])
