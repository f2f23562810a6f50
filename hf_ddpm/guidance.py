"""Class labels and classifier-free guidance (Ho & Salimans 2022): what a pipeline knows about its labels, and the one
callable through which the pipeline and the bound call a (conditional) network.

With ε_c = ε_θ(x_t, t, y) and ε_∅ = ε_θ(x_t, t, ∅), guidance with scale s is ε̃ = ε_∅ + s·(ε_c − ε_∅) (s = 1: the
conditional model, s = 0: the null-label model, s > 1: guided; diffusers' ``guidance_scale``). x̂_0 and v are affine in
ε at fixed (x_t, t), with the same map for both branches, so guiding the network's raw prediction linearly is guiding
the implied ε, whatever ``prediction_type`` is. A learned variance is taken from the conditional output (GLIDE):
guidance changes the mean only (``shared/docs/guidance-math.md``).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
import torch

from .errors import ParameterError


def _output_tensor(output) -> torch.Tensor:
    return output.sample if hasattr(output, "sample") else output


@dataclass(frozen=True)
class ClassConditioning:
    """The labels of a class-conditional network with ``num_class_embeds`` = E label embeddings.

    ``null_class_label``: the index of the null label ∅ that training dropped labels to (None: the model has none, and
    guidance is refused); every other index is a class. ``class_names``: the classes' names, in ascending id order
    (the null label excluded); ``class_frequencies``: π(y), the training label frequencies, in the same order (None:
    uniform).
    """

    num_class_embeds: int
    null_class_label: int | None = None
    class_names: tuple[str, ...] | None = None
    class_frequencies: tuple[float, ...] | None = None

    def __post_init__(self):
        E, null = self.num_class_embeds, self.null_class_label
        if null is not None and not (isinstance(null, numbers.Integral) and 0 <= null < E):
            raise ParameterError("null_class_label", f"must be an index of the UNet's {E} class embeddings "
                                                     f"(num_class_embeds), got {null!r}")
        K = self.num_classes
        if K < 1:
            raise ParameterError("null_class_label", f"leaves no class: num_class_embeds is {E}")
        if self.class_names is not None:
            names = tuple(str(name) for name in self.class_names)
            if len(names) != K or len(set(names)) != K:
                raise ParameterError("class_names", f"must be {K} distinct names (one per class), got {len(names)}"
                                                    f"{'' if len(set(names)) == len(names) else ' with repeats'}")
            object.__setattr__(self, "class_names", names)
        if self.class_frequencies is not None:
            pi = np.asarray(self.class_frequencies, dtype=np.float64)
            if pi.shape != (K,) or not np.isfinite(pi).all() or (pi < 0).any() or abs(pi.sum() - 1.0) > 1e-6:
                raise ParameterError("class_frequencies", f"must be {K} non-negative frequencies summing to 1, got "
                                                          f"{list(self.class_frequencies)}")
            object.__setattr__(self, "class_frequencies", tuple(float(p) for p in pi))

    @property
    def num_classes(self) -> int:
        """K: the number of classes (the embeddings less the null label)."""
        return self.num_class_embeds - (self.null_class_label is not None)

    @property
    def class_ids(self) -> torch.Tensor:
        """[K]: the label id of each class, ascending (every embedding index but the null label's)."""
        ids = torch.arange(self.num_class_embeds)
        return ids if self.null_class_label is None else ids[ids != self.null_class_label]

    @property
    def frequencies(self) -> torch.Tensor:
        """[K] float64: π(y), uniform when the training frequencies are unknown."""
        if self.class_frequencies is None:
            return torch.full((self.num_classes,), 1.0 / self.num_classes, dtype=torch.float64)
        return torch.tensor(self.class_frequencies, dtype=torch.float64)

    @property
    def names(self) -> tuple[str, ...]:
        """Each class's name (its id as text when no names were saved)."""
        return self.class_names or tuple(str(i) for i in self.class_ids.tolist())

    def names_of(self, label_ids) -> list[str]:
        """The class name of each label id (ids of classes, e.g. a pipeline's returned ``class_labels``)."""
        by_id = dict(zip(self.class_ids.tolist(), self.names))
        return [by_id[int(i)] for i in label_ids]

    def label_ids(self, class_labels, parameter: str = "class_labels") -> torch.Tensor:
        """[N] int64 on the CPU: ``class_labels`` (ints, class names, or a tensor/array of ids; one per image) as label
        ids, each checked to be a class (not the null label)."""
        if torch.is_tensor(class_labels) or isinstance(class_labels, np.ndarray):
            values = torch.as_tensor(class_labels).cpu()
            if values.ndim != 1 or values.is_floating_point() or values.is_complex() or values.dtype == torch.bool:
                raise ParameterError(parameter, f"must be a 1-D integer tensor (one id per image), got shape "
                                                f"{tuple(values.shape)} and dtype {values.dtype}")
            values = values.tolist()
        elif isinstance(class_labels, (numbers.Integral, str)):
            values = [class_labels]
        else:
            values = list(class_labels)
        if not values:
            raise ParameterError(parameter, "is empty: give one label per image")
        known = dict(zip(self.names, self.class_ids.tolist()))
        ids, valid = [], set(self.class_ids.tolist())
        for value in values:
            if isinstance(value, str):
                if value not in known:
                    shown = ", ".join(repr(n) for n in list(known)[:12])
                    raise ParameterError(parameter, f"holds the unknown class name {value!r}; the classes are "
                                                    f"{shown}{' …' if len(known) > 12 else ''}")
                ids.append(known[value])
            elif isinstance(value, numbers.Integral) and not isinstance(value, bool) and int(value) in valid:
                ids.append(int(value))
            else:
                null = "" if self.null_class_label is None else f" except the null label {self.null_class_label}"
                raise ParameterError(parameter, f"holds {value!r}, which is not a class id: ids are 0 … "
                                                f"{self.num_class_embeds - 1}{null}, or class names")
        return torch.tensor(ids, dtype=torch.long)

    def check_guidance(self, guidance_scale) -> float:
        """``guidance_scale`` as a float, refused when it is not finite and ≥ 0, or when it is not 1 and the model has
        no null label."""
        scale = check_guidance_scale(guidance_scale)
        if scale != 1.0 and self.null_class_label is None:
            raise ParameterError("guidance_scale", f"must be 1 for this model: it has no null label "
                                                   f"(null_class_label is None), so it cannot be guided; got {scale}")
        return scale

    def draw(self, num_images: int, generator=None) -> torch.Tensor:
        """[N] label ids drawn uniformly over the classes with ``generator`` (one, or one per image)."""
        if isinstance(generator, list):
            draws = torch.cat([torch.randint(self.num_classes, (1,), generator=g, device=g.device).cpu()
                               for g in generator])
        else:
            device = generator.device if generator is not None else "cpu"
            draws = torch.randint(self.num_classes, (num_images,), generator=generator, device=device).cpu()
        return self.class_ids[draws]


def check_guidance_scale(guidance_scale) -> float:
    """``guidance_scale`` as a float: finite and ≥ 0."""
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, numbers.Real) \
            or not math.isfinite(guidance_scale) or guidance_scale < 0:
        raise ParameterError("guidance_scale", f"must be a finite number ≥ 0 (1: the conditional model, 0: the "
                                               f"null label, > 1: guided), got {guidance_scale!r}")
    return float(guidance_scale)


class GuidedModel:
    """``model(x_t, t, class_labels=y)`` → the network's output for the guided prediction ε̃ = ε_∅ + s·(ε_c − ε_∅).

    ``unet``: the network (``UNet2DModel`` or a callable with its signature); ``guidance_scale`` s; ``null_class_label``
    ∅ (needed unless s = 1). Both branches go through one batched call; at s = 1 only the conditional branch and at
    s = 0 only the null branch is evaluated. The first ``in_channels`` output channels are the prediction (ε, x_0 or v),
    guided linearly; any further channels (a learned variance) are the conditional branch's. Without labels it calls
    the network unconditionally. ``timestep_scale``: the network sees t · timestep_scale as a float32 timestep (openai's
    ``rescale_timesteps``: 1000/T, so that every T looks like 1000 steps to the network; 1: t as given).
    """

    def __init__(self, unet, guidance_scale: float = 1.0, null_class_label: int | None = None,
                 timestep_scale: float = 1.0):
        if guidance_scale != 1.0 and null_class_label is None:
            raise ParameterError("guidance_scale", "needs a model with a null label (null_class_label)")
        self.unet = unet
        self.guidance_scale = guidance_scale
        self.null_class_label = null_class_label
        self.timestep_scale = timestep_scale

    def __call__(self, x_t: torch.Tensor, t, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.timestep_scale != 1.0:
            t = torch.as_tensor(t, device=x_t.device).float() * self.timestep_scale
        if class_labels is None:
            return _output_tensor(self.unet(x_t, t))
        s = self.guidance_scale
        if s == 1.0:
            return _output_tensor(self.unet(x_t, t, class_labels=class_labels))
        null = torch.full_like(class_labels, self.null_class_label)
        if s == 0.0:
            return _output_tensor(self.unet(x_t, t, class_labels=null))
        t = torch.as_tensor(t, device=x_t.device)
        t_both = t.repeat(2) if t.ndim == 1 else t
        both = _output_tensor(self.unet(torch.cat([x_t, x_t]), t_both, class_labels=torch.cat([class_labels, null])))
        conditional, unconditional = both.chunk(2)
        return guide(conditional, unconditional, s, x_t.shape[1])


def guide(conditional: torch.Tensor, unconditional: torch.Tensor, guidance_scale: float, channels: int) -> torch.Tensor:
    """The guided output from the two branches' outputs: the first ``channels`` (the prediction) as
    ε_∅ + s·(ε_c − ε_∅), the rest (a learned variance) the conditional branch's."""
    mean = torch.lerp(unconditional[:, :channels], conditional[:, :channels], guidance_scale)
    if conditional.shape[1] == channels:
        return mean
    return torch.cat([mean, conditional[:, channels:]], dim=1)
