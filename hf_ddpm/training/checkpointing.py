"""Training checkpoints on top of Accelerate's ``save_state`` / ``load_state``: atomic, resumable, pruned safely.

A checkpoint is the folder ``<output_dir>/checkpoint-<step>`` holding everything ``accelerator.save_state`` writes
(model, optimizer, LR scheduler, every process's RNG states, the objects registered with
``accelerator.register_for_checkpointing`` — EMA weights, timestep-sampler history, loss history) plus
``checkpoint.json``: the optimizer step it was taken at and the run settings it belongs to.

* **Atomic.** The state is written to ``checkpoint-<step>.incomplete``; only when every process has finished does the
  main process add ``checkpoint.json`` and rename the folder. A crash mid-write leaves a ``*.incomplete`` folder (or a
  folder without ``checkpoint.json``) that :func:`latest_checkpoint` never returns.
* **Pruned after, not before.** :func:`prune_checkpoints` runs once the new checkpoint is complete and keeps the
  newest ``total_limit`` complete ones, so the newest good checkpoint is never deleted.
* **Same run only.** :func:`check_resumable` compares the settings stored in ``checkpoint.json`` with the current
  ones and names the flags that differ.
* **Ctrl-C.** :class:`StopRequest` turns SIGINT/SIGTERM into a request that all processes see at the same step, so the
  training loop can write a checkpoint and stop cleanly.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal

import torch

from ..errors import ParameterError

CHECKPOINT_PREFIX = "checkpoint-"
INCOMPLETE_SUFFIX = ".incomplete"
MARKER = "checkpoint.json"
_NAME = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")


def checkpoint_dir(output_dir: str, step: int) -> str:
    """The folder of the checkpoint taken after optimizer step ``step``."""
    return os.path.join(output_dir, f"{CHECKPOINT_PREFIX}{step}")


def complete_checkpoints(output_dir: str) -> list[tuple[int, str]]:
    """``(step, path)`` of every complete checkpoint in ``output_dir`` (renamed and with its marker), oldest first."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        match = _NAME.match(name)
        path = os.path.join(output_dir, name)
        if match and os.path.isfile(os.path.join(path, MARKER)):
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(output_dir: str) -> str | None:
    """The newest complete checkpoint in ``output_dir``, or None; incomplete ones are skipped."""
    checkpoints = complete_checkpoints(output_dir)
    return checkpoints[-1][1] if checkpoints else None


def read_marker(path: str) -> dict:
    """The ``checkpoint.json`` of a checkpoint folder; a ParameterError naming ``resume_from_checkpoint`` if absent."""
    marker = os.path.join(path, MARKER)
    if not os.path.isfile(marker):
        raise ParameterError("resume_from_checkpoint", f"{path!r} is not a complete checkpoint of this trainer (no "
                                                       f"{MARKER}: an interrupted write, or a folder from another tool)")
    with open(marker, encoding="utf-8") as handle:
        return json.load(handle)


def resolve_resume(resume_from_checkpoint: str | None, output_dir: str) -> str | None:
    """The checkpoint folder to resume from: ``None`` → None, ``"latest"`` → the newest complete one in
    ``output_dir`` (None if there is none yet), a path → that path, checked to be a complete checkpoint."""
    if resume_from_checkpoint is None:
        return None
    if resume_from_checkpoint == "latest":
        return latest_checkpoint(output_dir)
    path = resume_from_checkpoint
    if not os.path.isdir(path) and os.path.isdir(os.path.join(output_dir, path)):
        path = os.path.join(output_dir, path)  # a bare "checkpoint-500", as in diffusers' examples
    if not os.path.isdir(path):
        raise ParameterError("resume_from_checkpoint", f"{resume_from_checkpoint!r}: no such checkpoint folder")
    read_marker(path)
    return path


def check_resumable(path: str, settings: dict) -> int:
    """A ParameterError naming each setting whose value differs between the checkpoint's run and this one (settings
    compared as JSON values); return the optimizer step the checkpoint was taken at."""
    marker = read_marker(path)
    saved = marker.get("settings", {})
    current = json.loads(json.dumps(settings))  # tuples as lists, as the checkpoint stored them
    differences = [
        f"{name} was {saved[name]!r} there, {value!r} now"
        for name, value in current.items()
        if name in saved and saved[name] != value
    ]
    if differences:
        raise ParameterError("resume_from_checkpoint", f"{path!r} comes from another configuration: "
                                                       + "; ".join(differences))
    return int(marker["step"])


def save_checkpoint(accelerator, output_dir: str, step: int, settings: dict, total_limit: int | None = None) -> str:
    """Write the accelerator's state as ``checkpoint-<step>`` atomically, then prune to ``total_limit``.

    Call on every process (each saves its own RNG state); the main process finalises and prunes."""
    final = checkpoint_dir(output_dir, step)
    staging = final + INCOMPLETE_SUFFIX
    if accelerator.is_main_process and os.path.isdir(staging):
        shutil.rmtree(staging)  # left by an earlier crash at this very step
    accelerator.wait_for_everyone()
    accelerator.save_state(staging)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        with open(os.path.join(staging, MARKER), "w", encoding="utf-8") as handle:
            json.dump({"step": step, "settings": settings}, handle, indent=2, sort_keys=True)
        if os.path.isdir(final):  # the same step saved before (a resumed run re-saving): replace it
            shutil.rmtree(final)
        os.replace(staging, final)
        if total_limit is not None:
            prune_checkpoints(output_dir, total_limit)
    accelerator.wait_for_everyone()
    return final


def prune_checkpoints(output_dir: str, total_limit: int) -> list[str]:
    """Delete all but the newest ``total_limit`` (≥ 1) complete checkpoints, and leftover incomplete ones older than
    the newest complete one; return the deleted paths."""
    if total_limit < 1:
        raise ParameterError("checkpoints_total_limit", f"must be ≥ 1, got {total_limit}")
    checkpoints = complete_checkpoints(output_dir)
    doomed = [path for _, path in checkpoints[:-total_limit]]
    if checkpoints:
        newest = checkpoints[-1][0]
        for name in os.listdir(output_dir):
            if name.endswith(INCOMPLETE_SUFFIX):
                match = _NAME.match(name[: -len(INCOMPLETE_SUFFIX)])
                if match and int(match.group(1)) < newest:
                    doomed.append(os.path.join(output_dir, name))
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed


class StopRequest:
    """SIGINT (Ctrl-C) / SIGTERM → a stop request, agreed on by all processes at a step boundary.

    The first signal only sets a flag; :meth:`agreed` (called once per optimizer step, on every process) returns True
    on all processes as soon as any one of them was signalled, so they can checkpoint together. A second signal
    restores the default handlers and interrupts at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self) -> "StopRequest":
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        self._restore()

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.requested:
            self._restore()
            raise KeyboardInterrupt
        self.requested = True

    def agreed(self, accelerator) -> bool:
        """Whether any process has been asked to stop (one all-reduce when there are several processes)."""
        if accelerator.num_processes == 1:
            return self.requested
        flag = torch.tensor([1.0 if self.requested else 0.0], device=accelerator.device)
        return bool(accelerator.reduce(flag, reduction="sum").item() > 0)
