"""The Inception-v3 that papers' FID and IS use, as a feature model: TensorFlow's 2015-12-05 graph in NVIDIA's
TorchScript port (``inception-2015-12-05.pt``, from StyleGAN2-ADA's metrics), the network clean-fid runs.

``feature_model="inception"`` downloads it on first use through clean-fid (``pip install clean-fid``; its
``cleanfid.inception_torchscript`` and downloader import no torchvision) into ``HF_DDPM_CACHE`` (default
``~/.cache/hf_ddpm``); a path to the ``.pt`` file loads it directly (machines without network). The network takes
RGB images of any size with values in [0, 255], resizes them to 299 × 299 as TensorFlow did, and returns the 2048
pool features (``return_features=True``) or the 1008-way softmax (``no_output_bias=True`` for IS, as StyleGAN2-ADA
computes it). Its features give "FID" and its softmax "IS" — the numbers of the papers, up to the protocol (which
images, how many; see docs/guides/evaluation-at-scale.md). A TorchScript file of another name is taken to have the
same interface and named after its file ("FD (other.pt)"), never "FID".

pytorch-fid, torch-fidelity (and torchmetrics' FID, which uses it) and the rest of clean-fid import torchvision when
imported; they are not used here.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import ParameterError
from ..progress import bar_options
from .images import match_channels

INCEPTION = "inception"  # names this network where a feature model or classifier is expected
INCEPTION_FILE = "inception-2015-12-05.pt"
INCEPTION_NAME = "Inception-v3 (TensorFlow 2015-12-05, TorchScript)"


def is_inception(name) -> bool:
    """Whether a feature-model or classifier name means a TorchScript Inception: "inception" or a ``.pt`` file."""
    return name == INCEPTION or (isinstance(name, str) and name.endswith(".pt"))


def inception_path(name: str, parameter: str) -> str:
    """The ``.pt`` file of ``name``: "inception" → clean-fid's download into ``HF_DDPM_CACHE`` (first use), else the
    given path; one clear error when neither can be had."""
    if name != INCEPTION:
        if not os.path.isfile(name):
            raise ParameterError(parameter, f"{name!r} is not a file (a TorchScript Inception such as "
                                            f"{INCEPTION_FILE})")
        return name
    cache = os.environ.get("HF_DDPM_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "hf_ddpm"))
    path = os.path.join(cache, INCEPTION_FILE)
    if os.path.isfile(path):
        return path
    try:
        from cleanfid.downloads_helper import check_download_inception
    except ImportError as error:
        raise ParameterError(parameter, f"'{INCEPTION}' downloads {INCEPTION_FILE} through clean-fid, which is not "
                                        f"installed (pip install clean-fid); or pass the path of that file") from error
    os.makedirs(cache, exist_ok=True)
    try:
        return check_download_inception(fpath=cache)
    except OSError as error:
        raise ParameterError(parameter, f"{INCEPTION_FILE} could not be downloaded into {cache} ({error}); download it "
                                        "where the network is reachable and pass its path") from error


class InceptionNet:
    """A loaded TorchScript Inception: ``name`` (as the metrics report it), ``fd_name``, and :meth:`outputs`."""

    def __init__(self, path: str, device=None):
        self.path = path
        self.module = torch.jit.load(path, map_location=device or "cpu").eval()
        self.device = torch.device(device or "cpu")
        official = os.path.basename(path) == INCEPTION_FILE
        self.name = INCEPTION_NAME if official else f"TorchScript {os.path.basename(path)}"
        self.fd_name = "FID" if official else f"FD ({os.path.basename(path)})"
        self.score_name = "IS" if official else f"IS ({os.path.basename(path)})"

    @torch.no_grad()
    def outputs(self, images: torch.Tensor, *, features: bool = True, probabilities: bool = False, batch_size: int = 64,
                progress: bool = True) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The pool features (N, 2048) and/or the softmax (N, 1008), float64, of ``images`` (N, C, H, W) in [0, 1]:
        given to the network as RGB in [0, 255], on the 8-bit grid."""
        wanted = {"features": features, "probabilities": probabilities}
        chunks: dict[str, list] = {name: [] for name, want in wanted.items() if want}
        for batch in tqdm(images.split(batch_size), **bar_options(f"features ({self.name})", unit="batch",
                                                                  enabled=progress)):
            pixels = (match_channels(batch, 3) * 255.0).round().to(self.device, torch.float32)
            if features:
                chunks["features"].append(self.module(pixels, return_features=True).flatten(1).double().cpu())
            if probabilities:
                chunks["probabilities"].append(self.module(pixels, no_output_bias=True).double().cpu())
        return tuple(torch.cat(chunks[name]).numpy() if name in chunks else None for name in wanted)


def load_inception(name: str, parameter: str, device=None) -> InceptionNet:
    """The TorchScript Inception ``name`` means (:func:`inception_path`), on ``device``."""
    path = inception_path(name, parameter)
    try:
        return InceptionNet(path, device)
    except RuntimeError as error:
        raise ParameterError(parameter, f"{path!r} could not be loaded as a TorchScript module ({error})") from error
