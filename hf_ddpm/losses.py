"""Training objectives (Ho et al. 2020, Sec. 3.4; Nichol & Dhariwal 2021) and timestep samplers.

* ``"simple"``: L_simple = ‖target − prediction‖² (Eq. 14; the target is ε, x_0 or v by prediction type), t uniform.
* ``"vlb"``: T · L_t, the bound's term at t in bits/dim (Eqs. 5, 12, 13), whose mean over uniform t is the bound
  minus the constant L_T: the true weighting λ_t of Eq. 12, plus the decoder L_0 at t = 0.
* ``"hybrid"``: L_simple + λ · T · L_t with the mean stopped (only the variance learns from the bound),
  λ = 0.001 (improved DDPM's L_hybrid); for learned variances.
* ``"vlb_simple"``: T · L_t + c · L_simple, c = ``simple_weight``. The bound's weight on the mean's squared error,
  T λ_t / ln 2 (Eq. 12; for ε-prediction λ_t = β_t² / (2 σ_t² α_t (1 − ᾱ_t))), is ~2000 at the smallest t and only
  ~7–15 for t ≳ 100; c adds the same weight at every t. Both parts are minimised by the same mean (the posterior mean
  of the target given x_t), so the bound's optimum is unchanged; c moves the network's effort towards the large t
  that decide an image's coarse structure, which the bound barely prices.

A timestep sampler draws t with probabilities p_t and returns the weights 1 / (T p_t) that keep the loss an
unbiased estimate of its uniform-t expectation.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from .errors import ParameterError, check_at_least, check_choice, check_interval
from .host_transfers import HostCopy, to_device
from .likelihood import bound_term, mean_over_dims
from .scheduler import LEARNED_VARIANCE_TYPES, DDPMDocScheduler

# The objectives and the timestep samplers, each with what it is in one line (the model card's words; ``{target}`` is
# the prediction type's symbol, e.g. ε): the one place an option is described.
LOSS_TYPES = {
    "simple": "L_simple, the unweighted MSE on {target} (Eq. 14)",
    "vlb": "the variational bound L_vlb (Eq. 5)",
    "hybrid": "L_hybrid = L_simple + λ·L_vlb (improved DDPM)",
    "vlb_simple": "the variational bound L_vlb (Eq. 5) + c·L_simple on {target}, c = {simple_weight:g}",
}
TIMESTEP_SAMPLERS = {
    "uniform": "uniform",
    "importance": "importance (importance sampling of t by the bound's terms, mixed with {uniform_mix:g} of the "
                  "uniform distribution)",
}
HYBRID_VLB_WEIGHT = 0.001  # λ of L_hybrid on the full bound (improved DDPM, Sec. 3.1)


def check_objective(variance_type: str, loss_type: str) -> None:
    """Reject objectives that cannot train a model of ``variance_type``: an unknown ``loss_type``, ``"simple"`` with
    a learned variance (its variance channels would get no gradient), ``"hybrid"`` with a fixed one (it is then
    exactly ``"simple"``). Called once, where the objective is chosen (``RunConfig``), not in every step."""
    check_choice("loss_type", loss_type, LOSS_TYPES)
    learned = variance_type in LEARNED_VARIANCE_TYPES
    if loss_type == "simple" and learned:
        raise ParameterError("loss_type", f"'simple' does not train the variance of variance_type={variance_type!r}; "
                                          "use loss_type 'hybrid' or 'vlb', or a fixed variance_type")
    if loss_type == "hybrid" and not learned:
        raise ParameterError("loss_type", f"'hybrid' trains a learned variance, but variance_type={variance_type!r} is "
                                          "fixed; use variance_type 'learned' or 'learned_range', or loss_type 'simple'")


def prediction_target(scheduler: DDPMDocScheduler, x0: torch.Tensor, noise: torch.Tensor, timesteps) -> torch.Tensor:
    """What the network is trained to output: ε, x_0 or v = √ᾱ_t ε − √(1−ᾱ_t) x_0."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "sample":
        return x0
    return scheduler.get_velocity(x0, noise, timesteps)


def check_loss_inputs(model_output, x0, x_t, noise, timesteps, loss_type: str) -> None:
    """What :func:`training_loss` cannot mean, from shapes and Python values only: an unknown ``loss_type``; ``x0``,
    ``x_t`` and ``noise`` of different shapes; a ``model_output`` that is not the images' shape with their channels
    or twice them (a learned variance); ``timesteps`` that are neither one timestep nor one per image."""
    check_choice("loss_type", loss_type, LOSS_TYPES)
    for name, value in (("model_output", model_output), ("x0", x0), ("x_t", x_t), ("noise", noise)):
        if not torch.is_tensor(value):
            raise ParameterError(name, f"must be a tensor, got a {type(value).__name__}")
    shape = tuple(x0.shape)
    for name, value in (("x_t", x_t), ("noise", noise)):
        if tuple(value.shape) != shape:
            raise ParameterError(name, f"has shape {tuple(value.shape)}, expected x0's shape {shape}")
    if len(shape) < 2:
        raise ParameterError("x0", f"has shape {shape}, expected a batch of images [B, C, …]")
    fitting = [(shape[0], channels, *shape[2:]) for channels in (shape[1], 2 * shape[1])]
    if tuple(model_output.shape) not in fitting:
        raise ParameterError("model_output", f"has shape {tuple(model_output.shape)}, expected {fitting[0]} (x0's) "
                                             f"or {fitting[1]} (with a learned variance's channels)")
    t_shape = tuple(timesteps.shape) if torch.is_tensor(timesteps) else ()
    if t_shape not in ((), (shape[0],)):
        raise ParameterError("timesteps", f"has shape {t_shape}, expected one timestep per image ({shape[0]},) or "
                                          "a single one")


class TrainingLoss(NamedTuple):
    """The per-example loss [B] of an objective, and the bound's term L_t [B] (bits/dim, detached) at each example's
    timestep where it was computed or asked for (the importance sampler's input), else None."""

    per_example: torch.Tensor
    bound_terms: torch.Tensor | None


def training_loss(
    scheduler: DDPMDocScheduler,
    model_output: torch.Tensor,
    x0: torch.Tensor,
    x_t: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    loss_type: str = "simple",
    *,
    simple_weight: float = 1.0,
    bound_terms: bool = False,
) -> TrainingLoss:
    """The loss of ``loss_type`` (one of :data:`LOSS_TYPES`; whether it suits the variance is checked once, where it
    is chosen: :func:`check_objective`) for
    x_t = add_noise(x0, noise, timesteps) (Algorithm 1); ``simple_weight``: c of ``"vlb_simple"``.
    ``bound_terms``: also return L_t for ``"simple"`` (the bound objectives compute it anyway, once).

    Raises :class:`~hf_ddpm.errors.ParameterError` for an unknown ``loss_type`` and for tensors whose shapes do not
    fit together; the checks read only shapes and Python values, never the device (this runs every training step)."""
    check_loss_inputs(model_output, x0, x_t, noise, timesteps, loss_type)
    T = scheduler.config.num_train_timesteps
    if loss_type == "vlb":
        terms = bound_term(scheduler, model_output, x0, x_t, timesteps)
        return TrainingLoss(T * terms, terms.detach())
    prediction, variance_output = scheduler.split_model_output(model_output, x_t)
    target = prediction_target(scheduler, x0, noise, timesteps)
    simple = mean_over_dims((target.float() - prediction.float()) ** 2)
    if loss_type == "simple":
        terms = bound_term(scheduler, model_output.detach(), x0, x_t, timesteps) if bound_terms else None
        return TrainingLoss(simple, terms)
    if loss_type == "vlb_simple":
        terms = bound_term(scheduler, model_output, x0, x_t, timesteps)
        return TrainingLoss(T * terms + simple_weight * simple, terms.detach())
    terms = bound_term(scheduler, torch.cat([prediction.detach(), variance_output], dim=1), x0, x_t, timesteps)
    return TrainingLoss(simple + HYBRID_VLB_WEIGHT * T * terms, terms.detach())


class UniformSampler:
    """t ~ U{0, …, T−1}, weights 1."""

    def __init__(self, num_timesteps: int):
        check_at_least("num_timesteps", num_timesteps, 1)
        self.num_timesteps = num_timesteps

    def probabilities(self) -> np.ndarray:
        return np.full(self.num_timesteps, 1.0 / self.num_timesteps)

    def sample(self, batch_size: int, device=None, generator: torch.Generator | None = None):
        """(timesteps [B] int64, weights [B] float32 = 1 / (T p_t)), drawn on the CPU then moved to ``device``
        without waiting for it (:func:`~hf_ddpm.host_transfers.to_device`)."""
        p = torch.from_numpy(self.probabilities())
        t = torch.multinomial(p, batch_size, replacement=True, generator=generator)
        weights = 1.0 / (self.num_timesteps * p[t])
        return to_device(t, device), to_device(weights.float(), device)

    def term_scale(self) -> np.ndarray | None:
        """What the sampler learned about the bound's terms (:meth:`ImportanceSampler.term_scale`): nothing."""
        return None

    def update(self, timesteps: torch.Tensor, losses: torch.Tensor) -> None:
        """Uniform sampling learns nothing from the losses."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class ImportanceSampler(UniformSampler):
    """p_t ∝ √E[L_t²] over the last ``history`` losses seen at each t, mixed with ``uniform_mix`` of the
    uniform distribution (improved DDPM, Sec. 3.3): every t keeps p_t ≥ ``uniform_mix`` / T, so its weight
    1 / (T p_t) stays ≤ 1 / ``uniform_mix``. Uniform until every t has a full history.

    :meth:`update` reads nothing back from the device: it starts copying the losses to the host
    (:class:`~hf_ddpm.host_transfers.HostCopy`), and they enter the history at the next :meth:`probabilities`,
    :meth:`sample` or :meth:`state_dict`, in the order they came — so every read sees the history it would see had
    they entered at once, on every device, and a checkpoint holds every loss recorded before it."""

    def __init__(self, num_timesteps: int, history: int = 10, uniform_mix: float = 0.001):
        super().__init__(num_timesteps)
        check_at_least("history", history, 1)
        check_interval("uniform_mix", uniform_mix, 0.0, 1.0, closed_high=True)  # 0 could leave a t never drawn
        self.uniform_mix = uniform_mix
        self._losses = np.zeros((num_timesteps, history))
        self._counts = np.zeros(num_timesteps, dtype=np.int64)
        self._arriving: list[tuple[HostCopy, HostCopy]] = []  # (timesteps, losses) on their way to the host

    def term_scale(self) -> np.ndarray | None:
        """[T] float64: √E[L_t²] of each t over its history, bits/dim (None until every t has a full history): the
        shape of the bound's terms that training learned, which the pipeline keeps as the proposal of the bound's
        estimate from few timesteps (``bound_proposal``, :mod:`hf_ddpm.timestep_proposal`)."""
        self._record_arrived()
        if (self._counts < self._losses.shape[1]).any():
            return None
        return np.sqrt((self._losses**2).mean(axis=1))

    def probabilities(self) -> np.ndarray:
        scale = self.term_scale()
        if scale is None:
            return super().probabilities()
        return (1.0 - self.uniform_mix) * scale / scale.sum() + self.uniform_mix / self.num_timesteps

    def update(self, timesteps: torch.Tensor, losses: torch.Tensor) -> None:
        """Record per-example losses (detached; all processes' in a distributed run) at their timesteps.

        On a GPU, call it as soon as the losses exist (before the backward pass): the copy then runs while the
        device works on, and the next :meth:`sample` finds it done."""
        self._arriving.append((HostCopy(timesteps), HostCopy(losses.detach().double())))

    def _record_arrived(self) -> None:
        """Move the losses given to :meth:`update` into the history, oldest first: each t keeps its last ``history``."""
        history = self._losses.shape[1]
        for timesteps, losses in self._arriving:
            for t, loss in zip(timesteps.tolist(), losses.tolist()):
                if self._counts[t] == history:
                    self._losses[t, :-1] = self._losses[t, 1:]
                    self._losses[t, -1] = loss
                else:
                    self._losses[t, self._counts[t]] = loss
                    self._counts[t] += 1
        self._arriving.clear()

    def state_dict(self) -> dict:
        self._record_arrived()
        return {"losses": self._losses.copy(), "counts": self._counts.copy()}

    def load_state_dict(self, state: dict) -> None:
        self._arriving.clear()
        self._losses = np.array(state["losses"], dtype=np.float64)
        self._counts = np.array(state["counts"], dtype=np.int64)


def make_timestep_sampler(name: str, num_timesteps: int, uniform_mix: float = 0.001) -> UniformSampler:
    """The sampler called ``name`` (one of ``TIMESTEP_SAMPLERS``); ``uniform_mix``: the importance sampler's share of
    the uniform distribution."""
    check_choice("timestep_sampler", name, TIMESTEP_SAMPLERS)
    if name == "uniform":
        return UniformSampler(num_timesteps)
    return ImportanceSampler(num_timesteps, uniform_mix=uniform_mix)
