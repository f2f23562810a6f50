"""Feature and classifier networks for sample quality: any transformers image model, by Hub id or local folder.

``AutoModel`` + ``AutoImageProcessor`` give features (the pooled output, or the first token of the last hidden
state when a model has no pooler, e.g. DINOv2's CLS token after its final layer norm);
``AutoModelForImageClassification`` gives class probabilities and, through a hook on its classification head,
its penultimate features. Batched, ``no_grad``, on a chosen device, with a tqdm progress bar. Loading follows
transformers' rules, so ``HF_HUB_OFFLINE=1`` and the Hugging Face cache are honoured; a Hub id that cannot be
loaded gets an error that names it and says what to do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from huggingface_hub import constants as hub_constants
from tqdm.auto import tqdm

from ..progress import bar_options
from .images import match_channels


@dataclass
class ImageModel:
    """A loaded network with its image processor, the name it was loaded by, and its input channel count."""

    model: torch.nn.Module
    processor: object
    name: str

    @property
    def num_channels(self) -> int:
        return int(getattr(self.model.config, "num_channels", 3))


def load_image_model(name_or_path: str, *, task: str, role: str, device=None) -> ImageModel:
    """Load ``name_or_path`` for ``task`` ("features": AutoModel, "classification": AutoModelForImageClassification).

    ``role`` names the argument in errors (e.g. "feature_model"). Raises ValueError for a path that does not exist
    and OSError, naming the id and the remedy, for a Hub id that is neither cached nor downloadable.
    """
    from transformers import AutoImageProcessor, AutoModel, AutoModelForImageClassification

    if task not in ("features", "classification"):
        raise ValueError(f"task must be 'features' or 'classification', got {task!r}")
    name_or_path = os.fspath(name_or_path)
    is_folder = os.path.isdir(name_or_path)
    if not is_folder and (name_or_path.startswith((".", "~", os.sep)) or name_or_path.count("/") > 1):
        raise ValueError(f"{role}: {name_or_path!r} is neither an existing folder nor a Hub id (owner/name)")
    model_class = AutoModel if task == "features" else AutoModelForImageClassification
    try:
        processor = AutoImageProcessor.from_pretrained(name_or_path)
        model = model_class.from_pretrained(name_or_path)
    except OSError as err:
        if is_folder:
            raise
        where = "HF_HUB_OFFLINE=1 is set" if hub_constants.HF_HUB_OFFLINE else "the Hub could not be reached"
        raise OSError(
            f"{role} {name_or_path!r} could not be loaded: it is not a local folder, it is not (completely) in the "
            f"Hugging Face cache {hub_constants.HF_HUB_CACHE!r}, and {where}. Download it once where the Hub is "
            f"reachable (`hf download {name_or_path}`, into the same cache), or pass the path of a folder saved "
            f"with save_pretrained. ({err})"
        ) from err
    return ImageModel(model=model.eval().to(device or "cpu"), processor=processor, name=name_or_path)


def _batches(images: torch.Tensor, net: ImageModel, *, batch_size: int, desc: str, progress: bool):
    """Processed pixel batches of ``images`` (N, C, H, W) in [0, 1], on the model's device and dtype.

    The images reach the processor as uint8 (rounded), as PIL images would: transformers' PIL backend (used when
    torchvision is absent) quantises float input by truncation, which would move k/255 to (k − 1)/255.
    """
    parameter = next(net.model.parameters())
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    for batch in tqdm(images.split(batch_size), **bar_options(desc, unit="batch", enabled=progress)):
        batch = (match_channels(batch, net.num_channels) * 255.0).round().to(torch.uint8)
        pixels = net.processor(images=batch, return_tensors="pt")["pixel_values"]
        yield pixels.to(device=parameter.device, dtype=parameter.dtype)


@torch.no_grad()
def image_features(images: torch.Tensor, net: ImageModel, *, batch_size=64, progress=True) -> np.ndarray:
    """Features (N, D) float64 of a feature model: ``pooler_output`` when it has one, else the first token."""
    chunks = []
    for pixels in _batches(images, net, batch_size=batch_size, desc=f"features ({net.name})", progress=progress):
        output = net.model(pixel_values=pixels)
        pooled = getattr(output, "pooler_output", None)
        chunks.append((pooled if pooled is not None else output.last_hidden_state[:, 0]).flatten(1).double().cpu())
    return torch.cat(chunks).numpy()


@torch.no_grad()
def classifier_outputs(
    images: torch.Tensor, net: ImageModel, *, batch_size=64, progress=True
) -> tuple[np.ndarray | None, np.ndarray]:
    """Penultimate features (N, D) and class probabilities (N, K) of a classifier, float64.

    The features are the input of the model's ``classifier`` head (the usual name in transformers' image
    classifiers), captured by a forward pre-hook; None for a model without such a head.
    """
    head = getattr(net.model, "classifier", None)
    captured = []
    hook = head.register_forward_pre_hook(lambda _, args: captured.append(args[0])) \
        if isinstance(head, torch.nn.Module) else None
    features, probs = [], []
    try:
        for pixels in _batches(images, net, batch_size=batch_size, desc=f"classifier ({net.name})", progress=progress):
            logits = net.model(pixel_values=pixels).logits
            if hook is not None:
                features.append(captured.pop().flatten(1).double().cpu())
            probs.append(logits.double().softmax(dim=-1).cpu())
    finally:
        if hook is not None:
            hook.remove()
    return (torch.cat(features).numpy() if features else None), torch.cat(probs).numpy()
