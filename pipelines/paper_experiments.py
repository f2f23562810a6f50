"""The experiments of Ho et al. 2020 as pipeline methods: progressive generation (Fig. 6), samples that share a latent
x_t (Fig. 7), interpolation through q as a stochastic encoder (Fig. 8) and rate–distortion (Table 4, Fig. 5).

Each method returns tensors (small result types) for a notebook to draw; ``hf_ddpm.figures`` draws the paper's
figures from them. Images go in as :meth:`DDPMDocPipeline.log_likelihood` takes them (PIL, arrays, tensors in
[0, 1]) and come out as ``output_type="pt"`` gives them: ``[…, C, H, W]`` tensors in [0, 1] on the CPU. Latents x_t
stay in the model's range. Timesteps are code timesteps 0 … T − 1 (the paper's t is one more), as in the scheduler.

Nothing here reimplements the process: the chain is the pipeline's own loop (``__call__`` with ``latents`` and
``timesteps``, hence ``scheduler.step``), the encoder is ``scheduler.add_noise`` and the rate is the bound's terms.

On a class-conditional model every method takes ``class_labels`` (one per image, ids or names) and
``guidance_scale``, and every network call goes through :class:`~hf_ddpm.guidance.GuidedModel`. Without labels,
:meth:`~PaperExperimentsMixin.progressive` draws them as sampling does, and the methods that start from real images
(decode, shared latents, interpolation, rate–distortion) use the null label: the model's unconditional branch, which
needs a model with a null label (otherwise labels are required).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor

from ..errors import ParameterError, check_at_least
from ..guidance import check_guidance_scale
from ..image_inputs import check_noise
from ..rate_distortion import RateDistortion, estimate_rate_distortion
from ..samplers import bound_chain, returns_original_sample
from ..scheduler import check_num_inference_steps

SHARED_LATENT_FRACTIONS = (1.0, 0.75, 0.5, 0.25)  # Fig. 7: t = 1000, 750, 500, 250 of T = 1000
INTERPOLATION_FRACTION = 0.5  # Fig. 8: t = 500 of T = 1000
INTERPOLATION_LAMBDAS = tuple(i / 10 for i in range(11))  # λ = 0, 0.1, …, 1


def paper_timestep(num_train_timesteps: int, fraction: float) -> int:
    """The code timestep of the paper's t = ``fraction`` · T (e.g. t = 500 of 1000 → 499), at least 0."""
    return max(round(fraction * num_train_timesteps), 1) - 1


def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """Model range [−1, 1] → [0, 1], clamped, as the pipeline's ``output_type="pt"`` maps its samples."""
    return (x / 2 + 0.5).clamp(0, 1)


@dataclass(frozen=True)
class Progressive:
    """Fig. 6. ``images`` [B, K + 1, C, H, W] in [0, 1]: for each sample, the x̂_0 predicted at the K steps of
    ``timesteps`` [K] (descending), then the sample itself (the last column); ``class_labels`` [B]: each sample's
    label id (None for an unconditional model)."""

    images: torch.Tensor
    timesteps: torch.Tensor
    class_labels: torch.Tensor | None = None


@dataclass(frozen=True)
class SharedLatents:
    """Fig. 7. For each image x_0 (``images`` [N, C, H, W] in [0, 1]) and each of ``timesteps`` [L]: ``latents``
    [N, L, C, H, W], x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε with ``noise`` ε [N, C, H, W] (model range), and ``samples``
    [N, L, S, C, H, W] in [0, 1], S draws of p_θ(x_0 | x_t)."""

    images: torch.Tensor
    latents: torch.Tensor
    samples: torch.Tensor
    timesteps: torch.Tensor
    noise: torch.Tensor


@dataclass(frozen=True)
class Interpolation:
    """Fig. 8. Pairs of images (``images``, ``other_images``: [P, C, H, W] in [0, 1]) encoded at ``timestep`` with
    the same ε (``noise`` [P, C, H, W]): ``latents`` [P, L, C, H, W] = (1 − λ) x_t + λ x'_t for each of ``lambdas``
    [L], and ``decoded`` [P, L, C, H, W] in [0, 1], their reverse-process decodings. The decodings of pair p draw
    their noise from ``torch.Generator().manual_seed(seeds[p])``, the same for every λ."""

    images: torch.Tensor
    other_images: torch.Tensor
    latents: torch.Tensor
    decoded: torch.Tensor
    lambdas: torch.Tensor
    timestep: int
    noise: torch.Tensor
    seeds: torch.Tensor


class PaperExperimentsMixin:
    """The paper's experiments for :class:`~hf_ddpm.pipelines.DDPMDocPipeline` (which supplies ``__call__``,
    ``unet``, ``scheduler``, ``network``, ``_bound_network``, ``_step_kwargs`` and ``_images_to_model_range``)."""

    def _chain_timestep(self, parameter: str, value) -> int:
        """``value`` as a timestep of the training chain, or a :class:`ParameterError` naming ``parameter``."""
        T = self.scheduler.config.num_train_timesteps
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value < T:
            raise ParameterError(parameter, f"must be a timestep of the chain, an integer in [0, {T}) "
                                            f"(num_train_timesteps={T}), got {value!r}")
        return int(value)

    def _experiment_labels(self, class_labels, guidance_scale, count: int) -> tuple[torch.Tensor | None, float]:
        """(label ids or None, guidance scale) of chains or bounds that start from ``count`` given images:
        ``class_labels`` (one per image) with ``guidance_scale``, checked; on a class-conditional model without
        labels, the null label (returned as any class with s = 0, so that only the null branch runs), which needs
        the default s = 1 and a model with a null label."""
        conditioning = self.conditioning
        if conditioning is None or class_labels is not None:
            _, labels, scale = self._labels(class_labels, guidance_scale, None)
            if labels is not None and len(labels) != count:
                raise ParameterError("class_labels", f"has {len(labels)} labels for {count} images: give one per "
                                                     "image")
            return labels, scale
        if check_guidance_scale(guidance_scale) != 1.0:
            raise ParameterError("guidance_scale", f"is {guidance_scale}, but guidance needs class_labels: without "
                                                   "them this runs the null label's (unconditional) model")
        if conditioning.null_class_label is None:
            raise ParameterError("class_labels", "are needed: without them this runs the null label's model, and this "
                                                 "class-conditional model has none (null_class_label is None)")
        return conditioning.class_ids[:1].repeat(count), 0.0

    def _x0(self, images, parameter: str = "images") -> torch.Tensor:
        """Images in [0, 1] → x_0 (8-bit grid of [−1, 1]) on the pipeline's device and dtype."""
        x0 = self._images_to_model_range(images, parameter)
        return x0.to(device=self._execution_device, dtype=self.unet.dtype)

    @torch.no_grad()
    def progressive(self, batch_size: int | None = None, *, num_columns: int = 10, num_inference_steps: int = 1000,
                    generator: torch.Generator | list[torch.Generator] | None = None, class_labels=None,
                    guidance_scale: float = 1.0) -> Progressive:
        """Progressive generation (Fig. 6): ``batch_size`` samples, each shown as the x̂_0 (Eq. 15) the reverse
        process predicts at ``num_columns`` − 1 evenly spaced steps of its ``num_inference_steps``-step chain (the
        first step, x̂_0(x_T), included), then the sample. The samples are ``self(batch_size, generator,
        num_inference_steps, class_labels=…, guidance_scale=…)``'s images for the same ``generator`` (a
        class-conditional model without ``class_labels`` draws them, as sampling does). ``batch_size``: default one
        sample per entry of ``class_labels``, else 8."""
        check_at_least("num_columns", num_columns, 2)
        if not returns_original_sample(self.scheduler):
            raise ParameterError("scheduler", f"is {type(self.scheduler).__name__}, whose step returns no x̂_0 "
                                              "(pred_original_sample) to show: progressive generation needs a "
                                              "scheduler that does (ours, DDIM, Euler, …)")
        check_num_inference_steps(num_inference_steps, self.scheduler.config.num_train_timesteps)
        self.scheduler.set_timesteps(num_inference_steps)  # the chain's length
        K = len(self.scheduler.timesteps)
        if num_columns > K:
            raise ParameterError("num_columns", f"must be at most num_inference_steps ({K}): one x̂_0 per step, "
                                                f"got {num_columns}")
        steps = set(np.round(np.linspace(0, K - 1, num_columns)).astype(int)[:-1].tolist())
        columns, timesteps = [], []

        def keep(pipe, i, t, tensors):
            if i in steps:
                columns.append(to_unit_range(tensors["pred_original_sample"]).cpu())
                timesteps.append(int(t))
            return {}

        if batch_size is None and class_labels is None:
            batch_size = 8
        output = self(batch_size=batch_size, generator=generator, num_inference_steps=num_inference_steps,
                      output_type="pt", callback_on_step_end=keep,
                      callback_on_step_end_tensor_inputs=["pred_original_sample"], class_labels=class_labels,
                      guidance_scale=guidance_scale)
        return Progressive(torch.stack([*columns, output.images.cpu()], dim=1), torch.tensor(timesteps),
                           output.class_labels)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, timestep: int, *,
               generator: torch.Generator | list[torch.Generator] | None = None, class_labels=None,
               guidance_scale: float = 1.0) -> torch.Tensor:
        """Samples of p_θ(x_0 | x_t): the reverse process (Algorithm 2) from x_t = ``latents`` [B, C, H, W] (model
        range) at ``timestep`` down to 0, every step of the training chain; [B, C, H, W] in [0, 1]. At timestep 0
        the one step adds no noise, so the result is the decoder's mean. A class-conditional model decodes with
        ``class_labels`` (one per latent) and ``guidance_scale``, or without labels with the null label."""
        t = self._chain_timestep("timestep", timestep)
        if not torch.is_tensor(latents) or latents.ndim != 4:
            raise ParameterError("latents", f"must be a tensor [B, C, H, W], got {type(latents).__name__}")
        labels, scale = self._experiment_labels(class_labels, guidance_scale, latents.shape[0])
        images = self(batch_size=latents.shape[0], generator=generator, latents=latents,
                      timesteps=list(range(t, -1, -1)), output_type="pt", class_labels=labels,
                      guidance_scale=scale).images
        return images.cpu()

    @torch.no_grad()
    def shared_latents(self, images, *, timesteps: list[int] | None = None, num_samples: int = 4,
                       generator: torch.Generator | None = None, class_labels=None,
                       guidance_scale: float = 1.0) -> SharedLatents:
        """Samples that share a latent (Fig. 7): each image x_0 is encoded to x_t ~ q(x_t | x_0) at each of
        ``timesteps`` (default: the paper's t = 1000, 750, 500, 250, scaled to T) with one ε per image, and
        ``num_samples`` samples of p_θ(x_0 | x_t) are drawn from each x_t: what the model keeps of the image at t.
        A class-conditional model decodes with each image's ``class_labels`` and ``guidance_scale`` (default: the
        null label, see :meth:`decode`)."""
        T = self.scheduler.config.num_train_timesteps
        if timesteps is None:
            timesteps = [paper_timestep(T, fraction) for fraction in SHARED_LATENT_FRACTIONS]
        timesteps = [self._chain_timestep("timesteps", t) for t in timesteps]
        if not timesteps:
            raise ParameterError("timesteps", "must name at least one timestep")
        check_at_least("num_samples", num_samples, 1)
        x0 = self._x0(images)
        labels, scale = self._experiment_labels(class_labels, guidance_scale, len(x0))
        labels = None if labels is None else labels.repeat_interleave(num_samples)
        noise = randn_tensor(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        latents, samples = [], []
        for t in timesteps:
            x_t = self.scheduler.add_noise(x0, noise, t)  # Eq. 4
            decoded = self.decode(x_t.repeat_interleave(num_samples, dim=0), t, generator=generator,
                                  class_labels=labels, guidance_scale=scale)
            latents.append(x_t.cpu())
            samples.append(decoded.view(len(x0), num_samples, *x0.shape[1:]))
        return SharedLatents(to_unit_range(x0).cpu(), torch.stack(latents, 1), torch.stack(samples, 1),
                             torch.tensor(timesteps), noise.cpu())

    @torch.no_grad()
    def interpolate(self, images, other_images, *, timestep: int | None = None, lambdas=INTERPOLATION_LAMBDAS,
                    generator: torch.Generator | None = None, class_labels=None,
                    guidance_scale: float = 1.0) -> Interpolation:
        """Interpolation through the stochastic encoder q (Fig. 8): each pair (x_0, x'_0) is encoded at ``timestep``
        (default: the paper's t = 500, scaled to T) with the same ε, the latent x̄_t = (1 − λ) x_t + λ x'_t formed for
        each λ of ``lambdas`` (in [0, 1]; exactly x_t at λ = 0 and x'_t at λ = 1) and decoded by the reverse process
        with the same noise for every λ. A class-conditional model decodes each pair with its one label of
        ``class_labels`` (one per pair) and ``guidance_scale``, by default with the null label (see :meth:`decode`)."""
        T = self.scheduler.config.num_train_timesteps
        if timestep is None:
            timestep = paper_timestep(T, INTERPOLATION_FRACTION)
        t = self._chain_timestep("timestep", timestep)
        weights = torch.as_tensor(lambdas, dtype=torch.float64).flatten()
        if weights.numel() == 0 or not bool(((weights >= 0) & (weights <= 1)).all()):
            raise ParameterError("lambdas", f"must be values in [0, 1], got {weights.tolist()}")
        x0, x1 = self._x0(images), self._x0(other_images, "other_images")
        if len(x1) != len(x0):
            raise ParameterError("other_images", f"must be as many as images ({len(x0)}), got {len(x1)}")
        labels, scale = self._experiment_labels(class_labels, guidance_scale, len(x0))
        labels = None if labels is None else labels.repeat_interleave(len(weights))
        noise = randn_tensor(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        x_t, x1_t = self.scheduler.add_noise(x0, noise, t), self.scheduler.add_noise(x1, noise, t)  # Eq. 4
        # torch.lerp is a + λ(b − a) below λ = ½ and b − (1 − λ)(b − a) above: exactly a at 0 and b at 1.
        latents = torch.lerp(x_t[:, None], x1_t[:, None], weights.to(x_t).view(1, -1, 1, 1, 1))
        device = generator.device if generator is not None else torch.device("cpu")
        seeds = torch.randint(0, 2**62, (len(x0),), generator=generator, device=device).cpu()
        generators = [torch.Generator(device).manual_seed(int(seed)) for seed in seeds for _ in range(len(weights))]
        decoded = self.decode(latents.flatten(0, 1), t, generator=generators, class_labels=labels,
                              guidance_scale=scale)
        return Interpolation(to_unit_range(x0).cpu(), to_unit_range(x1).cpu(), latents.cpu(),
                             decoded.view(latents.shape), weights, t, noise.cpu(), seeds)

    @torch.no_grad()
    def rate_distortion(self, images, *, generator: torch.Generator | None = None,
                        noise: torch.Tensor | None = None, batch_size: int = 256, class_labels=None,
                        guidance_scale: float = 1.0, eta: float = 0.0) -> RateDistortion:
        """Rate and distortion at every t (Table 4, Fig. 5; :mod:`hf_ddpm.rate_distortion`) of real images, with one
        ε per image (``noise`` [N, C, H, W], else drawn from ``generator``) at every t: the final rate plus L_0 is
        ``self.log_likelihood(images, noise=noise)``. ``batch_size``: images per UNet call (T calls per chunk).
        The chain is the full chain of the pipeline's sampler where it has a bound (ours; DDIM with ``eta`` = 1: our
        ``fixed_small`` chain), else refused as ``log_likelihood`` refuses it (:func:`~hf_ddpm.samplers.bound_chain`).

        A class-conditional model: with the images' ``class_labels`` the final rate plus L_0 is the bound of
        ``log_likelihood(images, class_labels=…, guidance_scale=…, noise=noise)`` (at s = 1 the conditional bound);
        without labels, the null label's bound (``log_likelihood(images, guidance_scale=0, noise=noise)``)."""
        self._step_kwargs(None, eta)  # η as sampling takes it
        scheduler, _ = bound_chain(self.scheduler, eta)
        x0 = self._x0(images)
        labels, scale = self._experiment_labels(class_labels, guidance_scale, len(x0))
        check_noise("noise", noise, x0)
        if noise is None:
            noise = randn_tensor(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        noise = noise.to(device=x0.device, dtype=x0.dtype)
        model = self._bound_network(scale)
        return estimate_rate_distortion(model, scheduler, x0, noise, batch_size=batch_size,
                                        class_labels=None if labels is None else labels.to(x0.device)).cpu()
