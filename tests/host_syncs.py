"""Count host–device synchronisations, on CPU tensors too, so that a test without a GPU can prove a hot path has none.

On a GPU, reading a device tensor's values on the host (``.item()``, ``.tolist()``, ``.cpu()``, ``.numpy()``, and the
Python conversions ``bool()``, ``int()``, ``float()``, ``operator.index()`` that ``if t:``, ``range(t)`` or
``list[t]`` make), and operations whose output shape depends on the values (``nonzero``, ``unique``,
``masked_select``, …) wait for the device to finish. ``HostSyncCounter`` records every such call made through
torch's Python API while it is active, whatever the device, so on CPU it counts the calls that would stall a GPU::

    with HostSyncCounter() as syncs:
        scheduler.step(model_output, t, sample)
    assert syncs.count == 0, syncs.report()

What it cannot see: C++-internal reads (e.g. a CUDA kernel checking its arguments) and a non-pinned host → device
copy (``torch.tensor(values, device="cuda")``); ``torch.cuda.set_sync_debug_mode("error")`` catches those on a GPU.
``torch._assert_async`` is not counted: it checks a device tensor without reading it back.
"""

from __future__ import annotations

import os
import traceback

import torch
from torch.overrides import TorchFunctionMode

READS = {  # read a tensor's values on the host
    torch.Tensor.item: "item",
    torch.Tensor.tolist: "tolist",
    torch.Tensor.cpu: "cpu",
    torch.Tensor.numpy: "numpy",
    torch.Tensor.__bool__: "bool",
    torch.Tensor.__int__: "int",
    torch.Tensor.__float__: "float",
    torch.Tensor.__index__: "index",
    torch.Tensor.__format__: "format",
    torch.equal: "equal",
    torch.allclose: "allclose",
    torch.is_nonzero: "is_nonzero",
}
VALUE_SHAPED = {  # outputs whose shape depends on the values
    torch.nonzero: "nonzero",
    torch.Tensor.nonzero: "nonzero",
    torch.argwhere: "argwhere",
    torch.unique: "unique",
    torch.Tensor.unique: "unique",
    torch.unique_consecutive: "unique_consecutive",
    torch.masked_select: "masked_select",
    torch.Tensor.masked_select: "masked_select",
}
SYNCING = {**READS, **VALUE_SHAPED}
_TORCH_DIR = os.path.dirname(torch.__file__)


class HostSyncCounter(TorchFunctionMode):
    """Records each call of ``SYNCING`` made while active: ``calls`` holds (name, where it was called from)."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[str, str]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = SYNCING.get(func)
        if name is not None:
            caller = next(f for f in reversed(traceback.extract_stack()[:-1]) if not f.filename.startswith(_TORCH_DIR))
            self.calls.append((name, f"{caller.filename}:{caller.lineno}"))
        return func(*args, **(kwargs or {}))

    @property
    def count(self) -> int:
        return len(self.calls)

    def report(self) -> str:
        return "host syncs: " + ("; ".join(f"{name} at {where}" for name, where in self.calls) or "none")
