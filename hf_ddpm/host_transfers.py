"""Small tensors between the host and a device, without making the host wait for the device.

On CUDA, ``tensor.to(device)`` from ordinary (pageable) host memory and ``.cpu()``, ``.tolist()`` or ``.item()`` of a
device tensor each wait until the device has finished all the work queued before them: a host–device
synchronisation, which drains the queue the host keeps ahead of the device. A training step moves values both ways —
its timesteps, weights and noise are drawn on the host from the run's seeded CPU generator (so every device draws the
same values), its bound terms feed the importance sampler's history on the host — and these two helpers do both
without waiting. On any other device they are plain copies, made at once.
"""

from __future__ import annotations

import torch


def to_device(tensor: torch.Tensor, device: torch.device | str | None) -> torch.Tensor:
    """``tensor`` (on the host) on ``device``, the same values. To CUDA through pinned memory with a non-blocking copy
    (the caching host allocator keeps the pinned buffer until the copy has run), elsewhere ``tensor.to(device)``;
    ``device`` None leaves it where it is."""
    if device is not None and torch.device(device).type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


class HostCopy:
    """The values a tensor holds now, copied to the host without waiting, read later with :meth:`tolist`.

    From CUDA: a non-blocking copy into pinned host memory, queued behind the work that computes the tensor, and an
    event queued after it; :meth:`tolist` waits for that event only — long past if the copy was started a step's
    work earlier, the whole queue if it was started just before. From anywhere else: a copy made at once. Either way
    later changes to the tensor do not reach it."""

    def __init__(self, tensor: torch.Tensor):
        tensor = tensor.detach()
        self._copied = None
        if tensor.device.type == "cuda":
            self._host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
            self._host.copy_(tensor, non_blocking=True)
            self._copied = torch.cuda.Event()
            self._copied.record(torch.cuda.current_stream(tensor.device))
        else:
            self._host = tensor.to("cpu", copy=True)

    def tolist(self) -> list:
        """The values as Python numbers (nested lists for a tensor of several dimensions)."""
        if self._copied is not None:
            self._copied.synchronize()
        return self._host.tolist()
