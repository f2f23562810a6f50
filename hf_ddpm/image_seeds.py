"""Per-image random streams: image i's randomness comes from a generator seeded by (seed, i), so what a set of images
gets does not depend on how many processes share it or in what batches they go through the network.

Ancestral sampling (Algorithm 2) with a list of generators, one per image, draws image i's x_T, its class label (a
conditional model without given labels) and every step's z from its own generator, in that order
(``DDPMDocPipeline.__call__``, ``diffusers.utils.torch_utils.randn_tensor``); the bound's ε at every timestep likewise
(``hf_ddpm.likelihood.estimate_bound``). Streams keep the two uses apart: sample i and held-out image i get unrelated
generators under one seed. The generators live on the CPU, so the numbers they give are the same on every device.
"""

from __future__ import annotations

import numpy as np
import torch

SAMPLING = 0  # the stream of ancestral sampling: x_T, the label, each step's z
BOUND = 1  # the stream of the bound's ε, one per evaluated timestep


def image_seed(seed: int, index: int, stream: int) -> int:
    """A 64-bit generator seed for image ``index`` under ``seed`` in ``stream``: numpy's ``SeedSequence`` of the three
    (well mixed, so neighbouring images and seeds get unrelated streams)."""
    state = np.random.SeedSequence([seed % 2**64, stream, index]).generate_state(1, dtype=np.uint64)
    return int(state[0])


def image_generators(seed: int, indices, stream: int = SAMPLING) -> list[torch.Generator]:
    """One seeded CPU generator per image index in ``indices`` (see :func:`image_seed`)."""
    return [torch.Generator(device="cpu").manual_seed(image_seed(seed, int(i), stream)) for i in indices]
