"""The progress of long work: a bar with its ETA on a terminal, a few log lines elsewhere.

Every long phase reports here, on the main process only: the trainer's final samples, bounds and figures, and the
``hf-ddpm`` subcommands that sample or evaluate. Where stderr is a terminal it is a tqdm bar (elapsed time and ETA);
where it is not (CI, a log file) the same bar is written as whole lines — one when the phase starts, then at most one
every :data:`LOG_SECONDS`, and one when it ends — so a 1000-step chain writes a handful of lines, never 1000.

:func:`bar_options` are those tqdm settings, for any bar, a pipeline's own included
(``pipe.set_progress_bar_config(**bar_options("sampling"))``). :class:`NetworkProgress` advances one bar per phase by
the images a network processes: the phases' work comes from :mod:`hf_ddpm.cost`, the same numbers that estimated their
time before they started, so the library's loops need no progress code of their own.
"""

from __future__ import annotations

import sys
import time

import torch
from tqdm.auto import tqdm

clock = time.monotonic  # read through the module, so that tests can replace it
CURSOR_UP = "\x1b[A"  # tqdm's cursor move up, after drawing a bar below another
LOG_SECONDS = 30.0  # off a terminal: at most one line per bar this often (and one at its start and end)
SHARE_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]"  # a bar whose counts mean nothing to people
LOG_FORMATS = {True: "{desc}: {n_fmt}/{total_fmt} {unit}s ({percentage:.0f}%) after {elapsed}, about {remaining} "
                     "left{postfix}",
               False: "{desc}: {percentage:.0f}% after {elapsed}, about {remaining} left"}


def on_terminal(stream=None) -> bool:
    """Whether ``stream`` (default: stderr, where the bars go) is a terminal."""
    stream = sys.stderr if stream is None else stream
    return bool(getattr(stream, "isatty", lambda: False)())


class LogLines:
    """A file for tqdm that turns a bar's refreshes (``"\\r"`` + the status) into lines of ``stream``: the first, then
    at most one every :data:`LOG_SECONDS` (by :data:`clock`; a bar refreshed more often, e.g. by ``set_postfix``, is
    not written more often), and the last status when the bar closes (tqdm's final ``"\\n"``)."""

    encoding = "utf-8"

    def __init__(self, stream):
        self.stream, self.pending, self.written, self.written_at = stream, None, None, None
        self.after_status = False

    def write(self, text: str) -> None:
        # tqdm draws a bar below others (another bar still open) by moving the cursor: "\n" down, the status,
        # "\x1b[A" up. Only a "\n" right after a status is the bar's end; a cursor move is not written at all.
        status = text.replace("\r", "").replace(CURSOR_UP, "").strip()
        if status:
            self.pending = status if status != self.written else None
            if self.written_at is None or clock() - self.written_at >= LOG_SECONDS:
                self._write()
        elif "\n" in text and self.after_status:
            self._write()
        self.after_status = bool(status)

    def _write(self) -> None:
        if self.pending is not None:
            self.stream.write(self.pending + "\n")
            self.written, self.pending, self.written_at = self.pending, None, clock()

    def flush(self) -> None:
        self.stream.flush()


def bar_options(desc: str, *, unit: str | None = None, enabled: bool = True, counts: bool = True,
                stream=None) -> dict:
    """tqdm keyword arguments for a bar named ``desc`` on ``stream`` (default: stderr): on a terminal a bar refreshed
    as tqdm does; elsewhere lines (:class:`LogLines`, :data:`LOG_FORMATS`), at most one every :data:`LOG_SECONDS`.
    ``unit``: what it counts (None: leave it to the caller, or tqdm's "it"; a pipeline's bar takes only these
    options); ``counts``: show the done and total counts (False: the share done only). ``enabled``: False on the
    processes other than the main one."""
    stream = sys.stderr if stream is None else stream
    common = {"desc": desc, "disable": not enabled, **({} if unit is None else {"unit": unit})}
    if on_terminal(stream):
        return {**common, "file": stream, "dynamic_ncols": True, "bar_format": None if counts else SHARE_FORMAT}
    return {**common, "file": LogLines(stream), "bar_format": LOG_FORMATS[counts],
            "mininterval": LOG_SECONDS}  # fewer refreshes to format; LogLines decides what is written


class NetworkProgress:
    """Bars for the phases of work on one network (:class:`hf_ddpm.cost.Phase`: a name and the images its calls pass
    through the network), advanced by a forward pre-hook with each call's batch size, from construction to
    :meth:`close` (or the end of a ``with`` block).

    :meth:`start` opens a bar for the first of the phases it is given, and for each next one when the one before has
    counted its images. A phase whose images were only estimated (a bound from drawn timesteps) may take fewer: its
    bar ends where the work ended, when :meth:`start` is called again or the context ends; or more: the excess is
    counted but not shown. ``done``: (phase, images counted) of every phase closed so far."""

    def __init__(self, network: torch.nn.Module, *, enabled: bool = True, stream=None):
        self.network, self.enabled, self.stream = network, enabled, stream
        self.queue, self.phase, self.bar, self.counted = [], None, None, 0
        self.done = []
        self._handle = network.register_forward_pre_hook(self._count, with_kwargs=True)

    def __enter__(self) -> NetworkProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the current bar and stop counting."""
        self.start()
        self._handle.remove()

    def start(self, *phases) -> None:
        """Close the current bar and open bars for ``phases``, one after the other (phases without work are
        skipped); none: only close it."""
        self._close()
        self.queue = [phase for phase in phases if phase.images > 0]
        self._next()

    def _next(self) -> None:
        if self.queue:
            self.phase, self.counted = self.queue.pop(0), 0
            self.bar = tqdm(total=self.phase.images, **bar_options(self.phase.name, unit="image", enabled=self.enabled,
                                                                   counts=False, stream=self.stream))

    def _close(self) -> None:
        if self.bar is not None:
            if self.counted < self.bar.total:
                self.bar.total = self.counted
                self.bar.refresh()
            self.bar.close()
            self.done.append((self.phase, self.counted))
        self.phase, self.bar = None, None

    def _count(self, module, args, kwargs) -> None:
        images = (args[0] if args else kwargs["sample"]).shape[0]
        while images and self.bar is not None:
            step = min(images, self.phase.images - self.counted)
            self.counted += step
            self.bar.update(step)
            images -= step
            if self.counted == self.phase.images:
                self._close()
                self._next()
        if images and self.done:  # beyond the last phase's estimate
            phase, counted = self.done[-1]
            self.done[-1] = (phase, counted + images)
