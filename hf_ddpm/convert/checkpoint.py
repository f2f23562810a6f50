"""Reading an openai checkpoint file: a ``torch.save``-d state dict of a ``UNetModel`` (openai's ``.pt`` files)."""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping

import torch

from ..errors import ParameterError

# What torch.load raises for a file that is not a readable checkpoint: not a pickle or zip archive, truncated,
# corrupt, or holding objects other than tensors and containers (refused by weights_only=True).
UNREADABLE = (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, ValueError, KeyError,
              AttributeError, TypeError, UnicodeDecodeError)


def check_state_dict(state_dict, parameter: str = "state_dict") -> dict[str, torch.Tensor]:
    """``state_dict`` as a dict, if it is a non-empty mapping of parameter names to tensors (else a
    :class:`ParameterError` naming ``parameter``)."""
    if not isinstance(state_dict, Mapping) or not state_dict:
        raise ParameterError(parameter, f"is not a model state dict (a mapping of parameter names to tensors), got "
                                        f"{'an empty mapping' if isinstance(state_dict, Mapping) else type(state_dict).__name__}")
    bad = next((key for key, value in state_dict.items() if not (isinstance(key, str) and torch.is_tensor(value))),
               None)
    if bad is not None:
        raise ParameterError(parameter, f"is not a model state dict: its entry {bad!r} is a "
                                        f"{type(state_dict[bad]).__name__}, not a tensor")
    return dict(state_dict)


def load_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict in the checkpoint file ``path`` (tensors on the CPU, as saved); a missing, unreadable or
    corrupt file, or one that holds no state dict, is a :class:`ParameterError` naming ``checkpoint``."""
    if not os.path.isfile(path):
        raise ParameterError("checkpoint", f"{os.fspath(path)!r} is not a file")
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except UNREADABLE as error:
        first = str(error).strip().split("\n")[0].split(". ")[0]  # torch's messages run to several sentences
        reason = f"{type(error).__name__}: {first}" if first else type(error).__name__
        raise ParameterError("checkpoint", f"{os.fspath(path)!r} could not be read as a PyTorch checkpoint "
                                           f"({reason})") from error
    return check_state_dict(state_dict, "checkpoint")
