"""``DDPMDocPipeline``: ancestral sampling (Algorithm 2) and the variational bound of real images."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import torch
from diffusers import DDPMScheduler, DiffusionPipeline, ImagePipelineOutput, UNet2DModel
from diffusers.utils.torch_utils import randn_tensor

from ..errors import ParameterError, check_at_least, check_choice
from ..guidance import ClassConditioning, GuidedModel, check_guidance_scale
from ..host_transfers import to_device
from ..image_inputs import check_noise, read_images
from ..likelihood import bound_plan, estimate_bound
from ..marginal_bound import MarginalBound, class_bounds
from ..scheduler import DDPMDocScheduler
from ..samplers import bound_chain, check_can_sample
from ..timestep_plan import TimestepPlan
from ..timestep_proposal import check_bound_proposal
from ..variational_bound import VariationalBound
from .paper_experiments import PaperExperimentsMixin

OUTPUT_TYPES = ("pil", "np", "pt")
LEARNED_VARIANCE_NAMES = ("learned", "learned_range")  # diffusers' DDPMScheduler's names of the learned variances


@dataclass
class DDPMDocPipelineOutput(ImagePipelineOutput):
    """The images, and the label id of each (None for an unconditional model)."""

    class_labels: torch.Tensor | None = None


class DDPMDocPipeline(PaperExperimentsMixin, DiffusionPipeline):
    """Image generation with a ``UNet2DModel`` and the ``DDPMDocScheduler`` (or any diffusers scheduler swapped in),
    unconditional or class-conditional with classifier-free guidance; the paper's experiments (progressive
    generation, shared latents, interpolation, rate–distortion) come from :class:`PaperExperimentsMixin`.

    Loads folders saved by this project or by diffusers' ``DDPMPipeline`` (a ``DDPMScheduler`` there is replaced by
    the ``DDPMDocScheduler`` of the same configuration). With the same UNet, seed and configuration its images equal
    ``DDPMPipeline``'s.

    A UNet with ``num_class_embeds`` is class-conditional. Its labels are described by three optional fields saved in
    ``model_index.json`` (:class:`~hf_ddpm.guidance.ClassConditioning`): ``null_class_label``, the index of the null
    label ∅ that training dropped labels to (hf-ddpm's trainer uses the last index, K, as DiT does; None: the model
    has none and cannot be guided), ``class_names`` (the classes' names in id order) and ``class_frequencies`` (π(y)
    of the training labels).

    Example:
        >>> import torch
        >>> from hf_ddpm import DDPMDocPipeline
        >>> pipe = DDPMDocPipeline.from_pretrained("ddpm-digits")
        >>> images = pipe(batch_size=16, generator=torch.Generator().manual_seed(0)).images
        >>> bound = pipe.log_likelihood(images)  # bits/dim of each image
    """

    model_cpu_offload_seq = "unet"
    _callback_tensor_inputs = ["image", "pred_original_sample"]

    def __init__(self, unet: UNet2DModel, scheduler: DDPMDocScheduler, class_names: list[str] | None = None,
                 null_class_label: int | None = None, class_frequencies: list[float] | None = None,
                 bound_proposal: list[float] | None = None,
                 rescale_timesteps: bool = False):
        super().__init__()
        if isinstance(scheduler, DDPMScheduler):
            scheduler = DDPMDocScheduler.from_config(scheduler.config)
        self.register_modules(unet=unet, scheduler=scheduler)
        self.register_to_config(class_names=None if class_names is None else list(class_names),
                                null_class_label=null_class_label,
                                class_frequencies=None if class_frequencies is None else list(class_frequencies))
        # √E[L_t²] per training timestep, learned by the importance sampler: the proposal of bound estimates
        proposal = check_bound_proposal(bound_proposal, scheduler.config.num_train_timesteps)
        self.register_to_config(bound_proposal=None if proposal is None else proposal.tolist())
        self.register_to_config(rescale_timesteps=bool(rescale_timesteps))
        _ = self.conditioning  # checks the label fields against the UNet now, not at the first call

    def network(self, guidance_scale: float = 1.0) -> GuidedModel:
        """``model(x_t, t, class_labels)``: the UNet as every sampling step and bound term calls it, through
        :class:`GuidedModel` with this pipeline's null label and, for a model trained with openai's
        ``rescale_timesteps`` (the config's ``rescale_timesteps``), its timesteps scaled by 1000/T."""
        conditioning = self.conditioning
        timestep_scale = 1000.0 / self.scheduler.config.num_train_timesteps if self.config.rescale_timesteps else 1.0
        return GuidedModel(self.unet, guidance_scale, None if conditioning is None else conditioning.null_class_label,
                           timestep_scale=timestep_scale)

    @property
    def conditioning(self) -> ClassConditioning | None:
        """The labels of a class-conditional UNet (None: the UNet takes no labels)."""
        config = self.config
        num_class_embeds = getattr(self.unet.config, "num_class_embeds", None) if self.unet is not None else None
        if num_class_embeds is None:
            given = [name for name in ("class_names", "null_class_label", "class_frequencies")
                     if getattr(config, name, None) is not None]
            if given:
                raise ParameterError(given[0], "describes class labels, but the UNet is not class-conditional "
                                               "(its num_class_embeds is None)")
            return None
        return ClassConditioning(num_class_embeds, getattr(config, "null_class_label", None),
                                 getattr(config, "class_names", None), getattr(config, "class_frequencies", None))

    @property
    def is_class_conditional(self) -> bool:
        return self.conditioning is not None

    @property
    def num_classes(self) -> int | None:
        """K, the number of classes (None for an unconditional model)."""
        conditioning = self.conditioning
        return None if conditioning is None else conditioning.num_classes

    def get_label_ids(self, label: str | list[str]) -> list[int]:
        """Class names → label ids (as diffusers' ``DiTPipeline.get_label_ids``)."""
        return self._conditioning_or_error("label").label_ids(label, "label").tolist()

    def _conditioning_or_error(self, parameter: str) -> ClassConditioning:
        conditioning = self.conditioning
        if conditioning is None:
            raise ParameterError(parameter, "is for class-conditional models; this UNet takes no labels "
                                            "(num_class_embeds is None)")
        return conditioning

    def _labels(self, class_labels, guidance_scale, batch_size: int | None) -> tuple:
        """(batch size, label ids or None, guidance scale), checked: labels given to an unconditional model, a label
        that is no class, a wrong count, a bad ``guidance_scale``; labels drawn uniformly when a conditional model
        gets none."""
        conditioning = self.conditioning
        if conditioning is None:
            if class_labels is not None:
                self._conditioning_or_error("class_labels")
            scale = check_guidance_scale(guidance_scale)
            if scale != 1.0:
                raise ParameterError("guidance_scale", f"is {scale}, but this UNet takes no labels to guide "
                                                       "(num_class_embeds is None)")
            return (1 if batch_size is None else batch_size), None, scale
        scale = conditioning.check_guidance(guidance_scale)
        if class_labels is None:
            batch_size = 1 if batch_size is None else batch_size
            return batch_size, None, scale  # drawn after x_T, from the same generator
        labels = conditioning.label_ids(class_labels)
        if batch_size is not None and len(labels) != batch_size:
            raise ParameterError("class_labels", f"has {len(labels)} labels for batch_size={batch_size}: give one "
                                                 "per image (or leave batch_size out)")
        return len(labels), labels, scale

    def _image_shape(self, batch_size: int) -> tuple[int, ...]:
        size = self.unet.config.sample_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        return (batch_size, self.unet.config.in_channels, *size)

    def _hands_over_mean_only(self) -> bool:
        """The UNet also predicts a variance but the scheduler models none: ``step`` gets the prediction channels
        only. Our scheduler and diffusers' ``DDPMScheduler`` with a learned ``variance_type`` keep the variance."""
        if self.unet.config.out_channels != 2 * self.unet.config.in_channels:
            return False
        scheduler = self.scheduler
        if isinstance(scheduler, DDPMDocScheduler):
            return False
        return not (isinstance(scheduler, DDPMScheduler) and scheduler.config.variance_type in LEARNED_VARIANCE_NAMES)

    def _step_kwargs(self, generator, eta: float) -> dict:
        """The keyword arguments the scheduler's ``step`` accepts among ``generator`` and ``eta``; DDIM also gets
        ``use_clipped_model_output=True``: ε̂ re-derived from the clipped x̂_0, as openai's DDIM does, so that η = 1
        is exactly our ``fixed_small`` chain (``hf_ddpm.samplers``)."""
        accepted = inspect.signature(self.scheduler.step).parameters
        kwargs = {"generator": generator} if "generator" in accepted else {}
        if "use_clipped_model_output" in accepted:
            kwargs["use_clipped_model_output"] = True
        if "eta" in accepted:
            kwargs["eta"] = eta
        elif eta != 0.0:
            raise ParameterError("eta", f"is {eta}, but {type(self.scheduler).__name__}.step takes no eta (DDIM's η)")
        return kwargs

    def _set_timesteps(self, num_inference_steps: int, timesteps, device) -> None:
        scheduler = self.scheduler
        ours = isinstance(scheduler, DDPMDocScheduler)
        if timesteps is None:
            scheduler.set_timesteps(num_inference_steps) if ours else \
                scheduler.set_timesteps(num_inference_steps, device=device)
        elif ours or "timesteps" in inspect.signature(scheduler.set_timesteps).parameters:
            scheduler.set_timesteps(timesteps=timesteps)
        else:
            raise ParameterError("timesteps", f"{type(scheduler).__name__}.set_timesteps takes no custom timesteps")

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int = 1000,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[["DDPMDocPipeline", int, int, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ("image",),
        latents: torch.Tensor | None = None,
        timesteps: list[int] | None = None,
        class_labels=None,
        guidance_scale: float = 1.0,
        eta: float = 0.0,
    ) -> DDPMDocPipelineOutput | tuple:
        """Draw ``batch_size`` images by ancestral sampling over ``num_inference_steps`` steps (Algorithm 2), or with
        whatever diffusers scheduler ``self.scheduler`` is.

        Args:
            batch_size: number of images (default: one per entry of ``class_labels``, else 1).
            generator: a ``torch.Generator`` (or one per image) for reproducible images.
            num_inference_steps: steps of the (respaced) chain; 1000 is the paper's full chain.
            output_type: ``"pil"``, ``"np"`` (float array in [0, 1], NHWC) or ``"pt"`` (tensor in [0, 1], NCHW).
            return_dict: return a ``DDPMDocPipelineOutput`` rather than a tuple (``(images,)``, or
                ``(images, class_labels)`` for a class-conditional model).
            callback_on_step_end: called after every step as ``callback(pipe, step_index, timestep, kwargs)`` with
                ``kwargs`` holding the tensors named in ``callback_on_step_end_tensor_inputs`` ("image": x_{t−1},
                "pred_original_sample": x̂_0, None for schedulers that do not return it); a returned ``"image"``
                replaces x_{t−1} (progressive generation).
            latents: the chain's starting point x_t, ``[batch_size, C, H, W]`` in the model's range (default: x_T
                drawn from N(0, I) with ``generator``), scaled by the scheduler's ``init_noise_sigma``.
            timesteps: custom strictly descending timesteps of the chain (as ``scheduler.set_timesteps`` takes them;
                they override ``num_inference_steps``): with ``latents``, e.g. t, t−1, …, 0 samples p_θ(x_0 | x_t).
            class_labels: for a class-conditional model, one label per image: ids or class names (a list, or a
                tensor/array of ids). None: drawn uniformly over the classes with ``generator`` (after x_T), and
                returned with the images.
            guidance_scale: s of classifier-free guidance, ε̃ = ε_∅ + s·(ε_c − ε_∅) (1: the conditional model, 0: the
                null label, > 1: guided; needs a model with a null label). Both branches share one batched UNet call.
            eta: DDIM's η, passed to schedulers whose ``step`` takes it.

        Raises:
            ParameterError: a bad argument, named.
            FloatingPointError: the UNet produced NaN or inf; the message names the first step where it did.
        """
        check_at_least("batch_size", batch_size, 1, optional=True)
        check_choice("output_type", output_type, OUTPUT_TYPES)
        if latents is not None and not (torch.is_tensor(latents) and latents.is_floating_point()):
            raise ParameterError("latents", f"must be a float tensor {self._image_shape(batch_size or 1)}, got "
                                            f"{latents.dtype if torch.is_tensor(latents) else type(latents).__name__}")
        batch_size, labels, scale = self._labels(class_labels, guidance_scale, batch_size)
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ParameterError("generator", f"is {len(generator)} generators for batch_size={batch_size}; pass "
                                              "one per image")
        unknown = set(callback_on_step_end_tensor_inputs) - set(self._callback_tensor_inputs)
        if unknown:
            raise ParameterError("callback_on_step_end_tensor_inputs",
                                 f"{sorted(unknown)} not in {self._callback_tensor_inputs}")
        check_can_sample(self.scheduler, num_inference_steps if timesteps is None else None)
        step_kwargs = self._step_kwargs(generator, eta)

        device = self._execution_device
        # The chain first: a σ-space scheduler's init_noise_sigma is that of the chain's first timestep.
        self._set_timesteps(num_inference_steps, timesteps, device)
        shape = self._image_shape(batch_size)
        if latents is None:
            image = randn_tensor(shape, generator=generator, device=device, dtype=self.unet.dtype)
        elif tuple(latents.shape) != shape:
            raise ParameterError("latents", f"have shape {tuple(latents.shape)}, expected {shape} for "
                                            f"batch_size={batch_size}")
        else:
            image = latents.to(device=device, dtype=self.unet.dtype)
        if self.scheduler.init_noise_sigma != 1.0:
            image = image * self.scheduler.init_noise_sigma
        conditioning = self.conditioning
        if conditioning is not None and labels is None:
            labels = conditioning.draw(batch_size, generator)
        model = self.network(scale)
        device_labels = None if labels is None else to_device(labels, device)
        timesteps = self.scheduler.timesteps
        mean_only = self._hands_over_mean_only()
        # Algorithm 2. Nothing in the loop waits for the device: the scheduler takes each timestep as a host value
        # (ours: checked and looked up on the host; noise drawn as diffusers draws it), the UNet the same timesteps
        # moved to the device once, before the loop. One float32 sum of the UNet output per step is kept on the
        # device: NaN or ±inf anywhere makes it non-finite, and a sum is one reduction (isfinite is four full-size
        # kernels); they are read once, after the loop.
        unet_timesteps = to_device(timesteps, device)
        output_sums = []
        for i, t in enumerate(self.progress_bar(timesteps.tolist())):
            model_input = self.scheduler.scale_model_input(image, t)
            model_output = model(model_input, unet_timesteps[i], device_labels)
            output_sums.append(model_output.sum(dtype=torch.float32))
            if mean_only:
                model_output = model_output[:, : image.shape[1]]
            step = self.scheduler.step(model_output, t, image, **step_kwargs)
            image = step.prev_sample
            if callback_on_step_end is not None:
                tensors = {"image": image, "pred_original_sample": getattr(step, "pred_original_sample", None)}
                kwargs = {name: tensors[name] for name in callback_on_step_end_tensor_inputs}
                image = (callback_on_step_end(self, i, timesteps[i], kwargs) or {}).get("image", image)
        nonfinite = ~torch.isfinite(torch.stack(output_sums))
        if nonfinite.any():
            first = int(nonfinite.nonzero()[0])
            raise FloatingPointError(
                f"the UNet returned NaN or inf (or values summing past float32's range) at sampling step {first} "
                f"(timestep {timesteps[first].item()}) of "
                f"{len(timesteps)}; check the weights (e.g. a diverged or half-precision-overflowing model)"
            )

        image = (image / 2 + 0.5).clamp(0, 1)
        if output_type != "pt":
            image = image.cpu().permute(0, 2, 3, 1).float().numpy()
            if output_type == "pil":
                image = self.numpy_to_pil(image)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (image,) if labels is None else (image, labels)
        return DDPMDocPipelineOutput(images=image, class_labels=labels)

    def _images_to_model_range(self, images, parameter: str = "images") -> torch.Tensor:
        """Images in a user's format → x_0 on the 8-bit grid of [−1, 1], read by their type
        (:func:`~hf_ddpm.image_inputs.read_images`: PIL images and integer arrays/tensors as 8-bit values, floats as
        [0, 1]); bad images are a :class:`ParameterError` naming ``parameter``."""
        return read_images(images, parameter, self.unet)

    def _bound_network(self, guidance_scale: float):
        """``model(x_t, t, class_labels=…)`` as the bound calls the network: :meth:`network`, and only its prediction
        channels where the scheduler models no variance (DDIM with η = 1 on a learned-variance UNet: its
        chain has β̃′, our ``fixed_small``)."""
        model = self.network(guidance_scale)
        if not self._hands_over_mean_only():
            return model
        channels = self.unet.config.in_channels
        return lambda x_t, t, class_labels=None: model(x_t, t, class_labels)[:, :channels]

    @torch.no_grad()
    def log_likelihood(
        self,
        images,
        *,
        class_labels=None,
        guidance_scale: float = 1.0,
        eta: float = 0.0,
        num_inference_steps: int | None = None,
        inference_timesteps: list[int] | None = None,
        timesteps: list[int] | torch.Tensor | None = None,
        num_timesteps: int | None = None,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
        batch_size: int = 256,
    ) -> VariationalBound | MarginalBound:
        """The variational bound (Eq. 5) of real images in bits/dim.

        ``images`` are read by their type, never guessed from their values: PIL images as their 8-bit values; arrays
        and tensors of an integer dtype (``uint8``) as 8-bit values 0 … 255; floating arrays and tensors as images in
        [0, 1] (as ``output_type="np"``/``"pt"`` gives them), each rounded to the nearest of the 256 levels k/255.
        Arrays are ``(N, H, W)`` or ``(N, H, W, C)``, tensors ``(N, C, H, W)``, of the UNet's channels and
        ``sample_size`` (:mod:`hf_ddpm.image_inputs`). Anything else (floats outside [0, 1], NaN, an empty batch,
        another shape) is a ``ParameterError`` naming ``images``.

        ``num_inference_steps`` K: the bound of exactly the distribution ``self(num_inference_steps=K)`` samples from,
        on its K-step chain; ``inference_timesteps``: that of the chain ``scheduler.set_timesteps(timesteps=…)``
        installs from them (:func:`~hf_ddpm.likelihood.sampling_chain`); neither: the full T-step chain.
        ``num_timesteps`` K: an unbiased estimate from K of the chain's steps, drawn by importance from the proposal
        ``config.bound_proposal`` learned in training, or, without one, from a short pilot pass
        (:func:`~hf_ddpm.likelihood.bound_plan`; its ``.warning`` says when it cannot be trusted); ``timesteps``:
        evaluate a given subset of the chain's steps instead, taken as drawn uniformly (``TimestepPlan.uniform``);
        ``generator``: seeds the timesteps drawn and the ε drawn at every timestep; ``noise``: or one ε per image
        ``[N, C, H, W]``, used at every timestep (as :meth:`rate_distortion` does); ``batch_size``: images per UNet
        call.

        A class-conditional model: with ``class_labels`` (one per image, ids or names) the bound of the chain
        ``self(class_labels=…, guidance_scale=s)`` samples from — at s = 1 the conditional bound on −log p(x | y), at
        other s the guided chain's own bound (ε̃ in every term, the conditional variance). Without labels: at s = 1
        the marginal bound −log₂ Σ_y π(y) 2^(−D·L_y) / D over every class, all with the same ε and timesteps
        (a :class:`~hf_ddpm.marginal_bound.MarginalBound`, which also classifies the images; ``generator`` then seeds
        the one ε replayed for every class); at s = 0 the null-label
        bound. Returns the per-image bound (``.total``, and for a :class:`VariationalBound` ``.prior``, ``.terms``) on
        the CPU.
        """
        self._step_kwargs(None, eta)  # η as sampling takes it: refused for a scheduler whose step takes none
        scheduler, chain = bound_chain(self.scheduler, eta, num_inference_steps, inference_timesteps)
        x0 = self._images_to_model_range(images).to(device=self._execution_device, dtype=self.unet.dtype)
        conditioning = self.conditioning
        if conditioning is None and class_labels is not None:
            self._conditioning_or_error("class_labels")
        scale = check_guidance_scale(guidance_scale) if conditioning is None else \
            conditioning.check_guidance(guidance_scale)
        check_noise("noise", noise, x0)
        if noise is not None:
            noise = noise.to(device=self._execution_device, dtype=self.unet.dtype)

        def plan_for(labels: torch.Tensor | None, s: float) -> TimestepPlan:  # a pilot pass, if any, with these labels
            model = self._bound_network(s)
            return bound_plan(model, scheduler, x0, chain=chain, timesteps=timesteps, num_timesteps=num_timesteps,
                              bound_proposal=self.config.bound_proposal, generator=generator, batch_size=batch_size,
                              class_labels=None if labels is None else labels.to(self._execution_device))

        def bound(labels: torch.Tensor | None, s: float, generator) -> VariationalBound:
            plan = plan_for(labels, s)
            model = self._bound_network(s)
            labels = None if labels is None else labels.to(self._execution_device)
            return estimate_bound(model, scheduler, x0, plan, noise=noise, generator=generator,
                                  batch_size=batch_size, class_labels=labels).cpu()

        if conditioning is None:
            if scale != 1.0:
                raise ParameterError("guidance_scale", f"is {scale}, but this UNet takes no labels to guide")
            return bound(None, scale, generator)
        if class_labels is not None:
            labels = conditioning.label_ids(class_labels)
            if len(labels) != len(x0):
                raise ParameterError("class_labels", f"has {len(labels)} labels for {len(x0)} images: give one "
                                                     "per image")
            return bound(labels, scale, generator)
        if scale == 0.0:  # ε_∅ alone: the null-label (unconditional) model's bound; the labels are never read
            return bound(torch.zeros(len(x0), dtype=torch.long), 0.0, generator)
        if scale != 1.0:
            raise ParameterError("guidance_scale", f"is {scale}: a guided chain's bound needs class_labels")
        plan = plan_for(torch.full((len(x0),), int(conditioning.class_ids[0])), 1.0)  # one plan for every class
        seed = int(torch.randint(2**62, (), generator=generator, device=generator.device if generator else "cpu"))
        per_class = class_bounds(self._bound_network(1.0), scheduler, x0, plan, conditioning.class_ids, seed=seed,
                                 noise=noise, batch_size=batch_size)
        return MarginalBound.from_class_bounds(per_class, conditioning.frequencies, conditioning.class_ids,
                                               x0[0].numel())
