"""What long work costs, said before it starts.

Work is counted in images through the network, phase by phase (:class:`Phase`): sampling N images with K steps is
N·K (2N·K where guidance evaluates both branches in one batched call), a bound of N images from K timesteps is N·K,
and a figure the sum of its chains (:func:`figure_phases`). A network call of n images costs about a + b·n seconds
(:class:`NetworkCost`), a and b timed on this machine (:func:`network_cost`: the forward pass at 1 and at B images),
so a phase costs a·calls + b·images. The trainer adds a training step timed at its batch size
(:mod:`hf_ddpm.training.estimate`); ``hf-ddpm evaluate`` and ``hf-ddpm figures`` print their phases the same way
(:func:`describe_phases`). The same phases then drive the progress bars (:class:`hf_ddpm.progress.NetworkProgress`),
whose totals are these counts.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from .errors import ParameterError
from .figures import INTERPOLATION_FRACTIONS, INTERPOLATION_PAIRS, PROGRESSIVE_SAMPLES, SHARED_IMAGES, SHARED_SAMPLES
from .guidance_figures import GRID_MAX_CLASSES, GRID_SCALES, TRADEOFF_SCALES, TRADEOFF_STEPS
from .pipelines.paper_experiments import INTERPOLATION_LAMBDAS, SHARED_LATENT_FRACTIONS, paper_timestep

clock = time.perf_counter  # read through the module, so that tests can replace it
EVAL_BATCH = 256  # images per network call of a bound pass (the callers' default chunk sizes are 256 and 512)
CPU_LIMIT_SECONDS = 600.0  # on a CPU, evaluations longer than this get a line of advice


@dataclass(frozen=True)
class Phase:
    """A piece of long work on one network: ``name``, the ``images`` its calls pass through the network in all,
    the number of ``calls`` and ``detail``, its size in words. Exact for chains and for bounds over every timestep;
    a bound from K drawn timesteps counts K (a step drawn twice is evaluated once, and a pilot pass may come first)."""

    name: str
    images: int
    calls: int
    detail: str


def sampling(name: str, num_images: int, num_steps: int, *, branches: int = 1) -> Phase:
    """``num_images`` samples drawn with a ``num_steps``-step chain, in one batch; ``branches`` 2 for guidance that
    evaluates the conditional and the null branch in one call."""
    return Phase(name, branches * num_images * num_steps, num_steps if num_images else 0,
                 f"{num_images} images × {num_steps} steps")


def bound(name: str, num_images: int, num_timesteps: int, *, batch_size: int = EVAL_BATCH) -> Phase:
    """A bound of ``num_images`` images from ``num_timesteps`` terms, ``batch_size`` images per call."""
    return Phase(name, num_images * num_timesteps, math.ceil(num_images / batch_size) * num_timesteps,
                 f"{num_images} images × {num_timesteps} timesteps")


def branches(guidance_scale: float) -> int:
    """Images per image a guided network call takes: 2 where ε̃ needs both branches, 1 at s = 0 or 1
    (:class:`~hf_ddpm.guidance.GuidedModel`)."""
    return 1 if guidance_scale in (0.0, 1.0) else 2


def chain_calls(scheduler, num_inference_steps: int) -> int:
    """Network calls of ``pipe(num_inference_steps=K)`` with (a scheduler built like) ``scheduler``: one per timestep
    its ``set_timesteps(K)`` installs."""
    scheduler = type(scheduler).from_config(scheduler.config)
    scheduler.set_timesteps(num_inference_steps)
    return len(scheduler.timesteps)


def figure_phases(scheduler, num_images: int, *, rate_distortion: bool = True, steps=None, samplers=("ddpm",),
                  steps_samples: int = 0, batch_size: int = EVAL_BATCH, guidance: dict | None = None,
                  num_classes: int | None = None, latent_figures: bool = True) -> tuple[Phase, ...]:
    """The phases of :func:`hf_ddpm.figures.write_figures` with the pipeline's ``scheduler`` on ``num_images``
    held-out images, in its order: progressive generation (Fig. 6), shared latents (Fig. 7) and interpolation
    (Fig. 8) unless not ``latent_figures``, the rate–distortion pass (``rate_distortion`` False: reused from the final bound), with ``steps`` the steps
    trade-off (:func:`steps_tradeoff_phase`), and with ``guidance`` (write_figures' ``guidance_options``, every key
    given) the guidance figures of a model of ``num_classes`` classes (:func:`guidance_phases`)."""
    T = scheduler.config.num_train_timesteps
    shared = min(SHARED_IMAGES, num_images) * SHARED_SAMPLES
    shared_t = [paper_timestep(T, f) + 1 for f in SHARED_LATENT_FRACTIONS]  # chain steps of each decoding
    pairs = min(INTERPOLATION_PAIRS, num_images // 2) * len(INTERPOLATION_LAMBDAS)
    pair_t = [paper_timestep(T, f) + 1 for f in INTERPOLATION_FRACTIONS]
    phases = [sampling("Fig. 6 progressive generation", PROGRESSIVE_SAMPLES, T)]
    if latent_figures:
        phases += [Phase("Fig. 7 shared latents", shared * sum(shared_t), sum(shared_t),
                         f"{shared} decodings from t = {', '.join(map(str, shared_t))}"),
                   Phase("Fig. 8 interpolation", pairs * sum(pair_t), sum(pair_t),
                         f"{pairs} decodings from t = {', '.join(map(str, pair_t))}")]
    if rate_distortion:
        phases.append(bound("rate–distortion (Table 4, Fig. 5)", num_images, T, batch_size=batch_size))
    if steps is not None:
        phases.append(steps_tradeoff_phase(scheduler, num_images, steps, samplers=samplers, num_samples=steps_samples,
                                           batch_size=batch_size))
    if guidance is not None:
        phases += guidance_phases(T, num_images, num_classes, batch_size=batch_size, **guidance)
    return tuple(phases)


def steps_tradeoff_phase(scheduler, num_images: int, steps, *, samplers=("ddpm",), num_samples: int = 0,
                         batch_size: int = EVAL_BATCH) -> Phase:
    """:func:`hf_ddpm.steps_tradeoff.steps_tradeoff` after the full bound: for each sampler and K, the bound of the
    K-step sampler where it has one (:func:`~hf_ddpm.samplers.bound_chain`; our K = T is the full bound, known) and
    ``num_samples`` samples."""
    from .samplers import bound_chain, make_scheduler, parse_sampler

    T = scheduler.config.num_train_timesteps
    work = []
    for name, eta in map(parse_sampler, samplers):
        sampler = make_scheduler(name, scheduler.config)
        for k in steps:
            try:
                terms = len(bound_chain(sampler, eta, k)[1])
            except ParameterError:  # a sampler without a bound
                terms = 0
            if not (name == "ddpm" and k == T):
                work.append(bound("", num_images, terms, batch_size=batch_size))
            work.append(Phase("", num_samples * chain_calls(sampler, k), chain_calls(sampler, k) if num_samples else 0,
                              ""))
    return Phase("steps trade-off", sum(p.images for p in work), sum(p.calls for p in work),
                 f"K = {', '.join(map(str, steps))} × {len(samplers)} sampler(s): bounds, {num_samples} samples each")


def guidance_phases(num_train_timesteps: int, num_images: int, num_classes: int, *, grid_samples: int,
                    num_samples: int, num_inference_steps: int | None, num_timesteps: int | None,
                    batch_size: int = EVAL_BATCH) -> tuple[Phase, Phase]:
    """:func:`hf_ddpm.guidance_figures.write_guidance_figures`: the class grid (its samples at every scale of
    ``GRID_SCALES``) and the guidance trade-off (at every scale of ``TRADEOFF_SCALES``, the guided chain's bound from
    ``num_timesteps`` of its terms and ``num_samples`` samples), on a ``num_inference_steps``-step chain (None: the
    module's default)."""
    steps = min(TRADEOFF_STEPS, num_train_timesteps) if num_inference_steps is None else num_inference_steps
    terms = steps if num_timesteps is None else min(num_timesteps, steps)
    grid = min(num_classes, GRID_MAX_CLASSES) * grid_samples
    both = [branches(s) for s in GRID_SCALES], [branches(s) for s in TRADEOFF_SCALES]
    return (
        Phase("class grid", sum(both[0]) * grid * steps, len(GRID_SCALES) * steps,
              f"{grid} images × {steps} steps × {len(GRID_SCALES)} scales"),
        Phase("guidance trade-off", sum(both[1]) * (num_images * terms + num_samples * steps),
              len(TRADEOFF_SCALES) * (math.ceil(num_images / batch_size) * terms + (steps if num_samples else 0)),
              f"{len(TRADEOFF_SCALES)} scales × (bound {num_images} images × {terms} timesteps, {num_samples} "
              f"samples × {steps} steps)"),
    )


@dataclass(frozen=True)
class NetworkCost:
    """Seconds of a forward pass (no gradients) of n images: ``per_call`` + n · ``per_image``."""

    per_call: float
    per_image: float

    def seconds(self, *phases: Phase) -> float:
        return sum(phase.calls * self.per_call + phase.images * self.per_image for phase in phases)


def synchronize(device: torch.device) -> None:
    """Wait for ``device`` to finish its queued work (a GPU runs asynchronously; a CPU needs nothing)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(work, repeats: int = 1, *, warm_up: bool = True) -> float:
    """Seconds of ``work()`` by :data:`clock`: the least of ``repeats`` runs, after one more to warm up."""
    if warm_up:
        work()
    best = math.inf
    for _ in range(repeats):
        started = clock()
        work()
        best = min(best, clock() - started)
    return best


@torch.no_grad()
def network_cost(network: torch.nn.Module, batch_size: int) -> NetworkCost:
    """:class:`NetworkCost` of ``network`` (a ``UNet2DModel``), from forward passes of zero images at 1 and at
    ``batch_size`` images on its device (with label 0 for a class-conditional network)."""
    config = network.config
    size = config.sample_size
    height, width = (size, size) if isinstance(size, int) else size
    parameter = next(network.parameters())

    def forward(count: int):
        x = torch.zeros(count, config.in_channels, height, width, device=parameter.device, dtype=parameter.dtype)
        t = torch.zeros(count, dtype=torch.long, device=parameter.device)
        labels = None if config.get("num_class_embeds") is None else torch.zeros_like(t)
        return lambda: (network(x, t, class_labels=labels), synchronize(parameter.device))

    one = timed(forward(1))
    if batch_size <= 1:
        return NetworkCost(0.0, one)
    many = timed(forward(batch_size), warm_up=False)  # warm already: the same kernels at another size
    per_image = max(many - one, 0.0) / (batch_size - 1)
    return NetworkCost(max(one - per_image, 0.0), per_image)


def describe_seconds(seconds: float) -> str:
    """A duration for people: "0.4 s", "52 s", "3 min 5 s", "58 min", "2 h 5 min"."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 600:
        minutes, rest = divmod(round(seconds), 60)
        return f"{minutes} min {rest} s" if minutes else f"{rest} s"
    if seconds < 3600:
        return f"{round(seconds / 60)} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes} min"


def describe_phases(title: str, phases, cost: NetworkCost) -> list[str]:
    """``title ≈ total:`` then one indented line per phase with work: its name, its size and ≈ its seconds."""
    phases = [phase for phase in phases if phase.images > 0]
    width = max((len(phase.name) for phase in phases), default=0)
    lines = [f"{title} ≈ {describe_seconds(cost.seconds(*phases))}:"]
    for phase in phases:
        lines.append(f"  {phase.name:<{width}}  {phase.detail:<42}  ≈ {describe_seconds(cost.seconds(phase))}")
    return lines
