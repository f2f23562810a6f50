"""``DDPMDocPipeline``: ancestral sampling (Algorithm 2) and the variational bound of real images."""

from __future__ import annotations

from typing import Callable

import numpy as np
import PIL.Image
import torch
from diffusers import DDPMScheduler, DiffusionPipeline, ImagePipelineOutput, UNet2DModel
from diffusers.utils.torch_utils import randn_tensor

from ..errors import ParameterError
from ..host_transfers import to_device
from ..likelihood import estimate_bound, sampling_chain
from ..scheduler import DDPMDocScheduler
from ..timestep_plan import TimestepPlan
from ..variational_bound import VariationalBound
from .paper_experiments import PaperExperimentsMixin

OUTPUT_TYPES = ("pil", "np", "pt")


class DDPMDocPipeline(PaperExperimentsMixin, DiffusionPipeline):
    """Unconditional image generation with a ``UNet2DModel`` and the ``DDPMDocScheduler``; the paper's experiments
    (progressive generation, shared latents, interpolation, rate–distortion) come from :class:`PaperExperimentsMixin`.

    Loads folders saved by this project or by diffusers' ``DDPMPipeline`` (a ``DDPMScheduler`` there is replaced by
    the ``DDPMDocScheduler`` of the same configuration). With the same UNet, seed and configuration its images equal
    ``DDPMPipeline``'s.

    Example:
        >>> import torch
        >>> from hf_ddpm import DDPMDocPipeline
        >>> pipe = DDPMDocPipeline.from_pretrained("ddpm-digits")
        >>> images = pipe(batch_size=16, generator=torch.Generator().manual_seed(0)).images
        >>> bound = pipe.log_likelihood(images)  # bits/dim of each image
    """

    model_cpu_offload_seq = "unet"
    _callback_tensor_inputs = ["image", "pred_original_sample"]

    def __init__(self, unet: UNet2DModel, scheduler: DDPMDocScheduler):
        super().__init__()
        if isinstance(scheduler, DDPMScheduler):
            scheduler = DDPMDocScheduler.from_config(scheduler.config)
        self.register_modules(unet=unet, scheduler=scheduler)

    def _image_shape(self, batch_size: int) -> tuple[int, ...]:
        size = self.unet.config.sample_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        return (batch_size, self.unet.config.in_channels, *size)

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int = 1000,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[["DDPMDocPipeline", int, int, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ("image",),
        latents: torch.Tensor | None = None,
        timesteps: list[int] | None = None,
    ) -> ImagePipelineOutput | tuple:
        """Draw ``batch_size`` images by ancestral sampling over ``num_inference_steps`` steps.

        Args:
            batch_size: number of images.
            generator: a ``torch.Generator`` (or one per image) for reproducible images.
            num_inference_steps: steps of the (respaced) chain; 1000 is the paper's full chain.
            output_type: ``"pil"``, ``"np"`` (float array in [0, 1], NHWC) or ``"pt"`` (tensor in [0, 1], NCHW).
            return_dict: return an ``ImagePipelineOutput`` rather than a tuple.
            callback_on_step_end: called after every step as ``callback(pipe, step_index, timestep, kwargs)`` with
                ``kwargs`` holding the tensors named in ``callback_on_step_end_tensor_inputs`` ("image": x_{t−1},
                "pred_original_sample": x̂_0); a returned ``"image"`` replaces x_{t−1} (progressive generation).
            latents: the chain's starting point x_t, ``[batch_size, C, H, W]`` in the model's range (default: x_T
                drawn from N(0, I) with ``generator``).
            timesteps: custom strictly descending timesteps of the chain (as ``scheduler.set_timesteps`` takes them;
                they override ``num_inference_steps``): with ``latents``, e.g. t, t−1, …, 0 samples p_θ(x_0 | x_t).

        Raises:
            FloatingPointError: the UNet produced NaN or inf; the message names the first step where it did.
        """
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(f"got {len(generator)} generators for batch_size={batch_size}; pass one per image")
        unknown = set(callback_on_step_end_tensor_inputs) - set(self._callback_tensor_inputs)
        if unknown:
            raise ValueError(f"callback_on_step_end_tensor_inputs {sorted(unknown)} not in {self._callback_tensor_inputs}")

        device = self._execution_device
        shape = self._image_shape(batch_size)
        if latents is None:
            image = randn_tensor(shape, generator=generator, device=device, dtype=self.unet.dtype)
        elif tuple(latents.shape) != shape:
            raise ParameterError("latents", f"have shape {tuple(latents.shape)}, expected {shape} for "
                                            f"batch_size={batch_size}")
        else:
            image = latents.to(device=device, dtype=self.unet.dtype)
        if timesteps is None:
            self.scheduler.set_timesteps(num_inference_steps)
        else:
            self.scheduler.set_timesteps(timesteps=timesteps)
        timesteps = self.scheduler.timesteps  # descending, on the host
        # Algorithm 2. Nothing in the loop waits for the device: the scheduler takes each timestep as a host int
        # (checked and looked up on the host; noise drawn as diffusers draws it), the UNet the same timesteps moved
        # to the device once, before the loop. One float32 sum of the UNet output per step is kept on the device:
        # NaN or ±inf anywhere makes it non-finite, and a sum is one reduction (isfinite is four full-size kernels);
        # they are read once, after the loop.
        unet_timesteps = to_device(timesteps, device)
        output_sums = []
        for i, t in enumerate(self.progress_bar(timesteps.tolist())):
            model_output = self.unet(image, unet_timesteps[i]).sample
            output_sums.append(model_output.sum(dtype=torch.float32))
            step = self.scheduler.step(model_output, t, image, generator=generator)
            image = step.prev_sample
            if callback_on_step_end is not None:
                tensors = {"image": image, "pred_original_sample": step.pred_original_sample}
                kwargs = {name: tensors[name] for name in callback_on_step_end_tensor_inputs}
                image = (callback_on_step_end(self, i, timesteps[i], kwargs) or {}).get("image", image)
        nonfinite = ~torch.isfinite(torch.stack(output_sums))
        if nonfinite.any():
            first = int(nonfinite.nonzero()[0])
            raise FloatingPointError(
                f"the UNet returned NaN or inf (or values summing past float32's range) at sampling step {first} "
                f"(timestep {int(timesteps[first])}) of "
                f"{len(timesteps)}; check the weights (e.g. a diverged or half-precision-overflowing model)"
            )

        image = (image / 2 + 0.5).clamp(0, 1)
        if output_type != "pt":
            image = image.cpu().permute(0, 2, 3, 1).float().numpy()
            if output_type == "pil":
                image = self.numpy_to_pil(image)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (image,)
        return ImagePipelineOutput(images=image)

    def _images_to_model_range(self, images, parameter: str = "images") -> torch.Tensor:
        """PIL images, arrays (N, H, W[, C]) or tensors (N, C, H, W) in [0, 1] → x_0 on the 8-bit grid of [−1, 1];
        bad images are a :class:`ParameterError` naming ``parameter``."""
        if isinstance(images, PIL.Image.Image):
            images = [images]
        if isinstance(images, (list, tuple)) and images and isinstance(images[0], PIL.Image.Image):
            mode = "L" if self.unet.config.in_channels == 1 else "RGB"
            images = np.stack([np.asarray(im.convert(mode), dtype=np.float32) / 255.0 for im in images])
        if isinstance(images, np.ndarray):
            images = torch.from_numpy(images.astype(np.float32))
            images = images[:, None] if images.ndim == 3 else images.permute(0, 3, 1, 2)
        if not torch.is_tensor(images) or images.ndim != 4:
            raise ParameterError(
                parameter, "must be PIL images, an array (N, H, W) / (N, H, W, C) or a tensor (N, C, H, W) in [0, 1]"
            )
        expected = self._image_shape(images.shape[0])
        if tuple(images.shape) != expected:
            raise ParameterError(parameter, f"have shape {tuple(images.shape)} (NCHW), the UNet expects {expected}")
        if images.min() < 0 or images.max() > 1:
            raise ParameterError(
                parameter, f"must lie in [0, 1], got values from {float(images.min())} to {float(images.max())}"
            )
        return torch.round(images.float() * 255.0) / 127.5 - 1.0

    @torch.no_grad()
    def log_likelihood(
        self,
        images,
        *,
        num_inference_steps: int | None = None,
        inference_timesteps: list[int] | None = None,
        timesteps: list[int] | torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
        batch_size: int = 256,
    ) -> VariationalBound:
        """The variational bound (Eq. 5) of real images in bits/dim (quantised to 8 bits first).

        ``num_inference_steps`` K: the bound of exactly the distribution ``self(num_inference_steps=K)`` samples from,
        on its K-step chain; ``inference_timesteps``: that of the chain ``scheduler.set_timesteps(timesteps=…)``
        installs from them (:func:`~hf_ddpm.likelihood.sampling_chain`); neither: the full T-step chain.
        ``timesteps``: evaluate a subset of the chain's steps for an unbiased estimate (``TimestepPlan.uniform``);
        ``generator``: seeds the ε drawn at every timestep; ``noise``: or one ε per image ``[N, C, H, W]``, used at
        every timestep (as :meth:`rate_distortion` does); ``batch_size``: images per UNet call.
        Returns the per-image bound (``.total``, ``.prior``, ``.terms``) on the CPU.
        """
        if not isinstance(self.scheduler, DDPMDocScheduler):
            raise TypeError(f"log_likelihood needs a DDPMDocScheduler, the pipeline has {type(self.scheduler).__name__}")
        x0 = self._images_to_model_range(images)
        chain = sampling_chain(self.scheduler, num_inference_steps, inference_timesteps)
        plan = TimestepPlan.uniform(self.scheduler.config.num_train_timesteps, timesteps, chain=chain)
        bound = estimate_bound(
            self.unet,
            self.scheduler,
            x0.to(device=self._execution_device, dtype=self.unet.dtype),
            plan,
            noise=None if noise is None else noise.to(device=self._execution_device, dtype=self.unet.dtype),
            generator=generator,
            batch_size=batch_size,
        )
        return bound.cpu()
