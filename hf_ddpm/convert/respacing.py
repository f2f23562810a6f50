"""openai's ``timestep_respacing``: which of the T training timesteps a respaced sampler keeps.

A string of section counts "n_1,n_2,…" cuts 0 … T−1 into as many consecutive sections of nearly equal length (the
first T mod s sections one longer) and keeps n_i timesteps of section i, evenly strided from its first to its last
timestep (stride (L−1)/(n−1), each position rounded to the nearest integer, ties to even as Python rounds). The kept
timesteps define the respaced chain, whose tables ``DDPMDocScheduler.chain`` builds (ᾱ'_k = ᾱ_{τ_k}); pass them as
``timesteps=`` to the pipeline or ``inference_timesteps=`` to its ``log_likelihood``.
"""

from __future__ import annotations

from ..errors import ParameterError


def _section_counts(timestep_respacing: str) -> list[int]:
    if timestep_respacing.startswith("ddim"):
        raise ParameterError("timestep_respacing", f"{timestep_respacing!r} is the striding of DDIM's sampler "
                                                   "(openai's use_ddim), not a DDPM chain; give section counts, e.g. "
                                                   f"{timestep_respacing[4:] or '250'!r}")
    try:
        counts = [int(part) for part in timestep_respacing.split(",")]
    except ValueError:
        raise ParameterError("timestep_respacing", f"must be comma-separated step counts (e.g. '250' or "
                                                   f"'10,15,20'), got {timestep_respacing!r}") from None
    if any(n < 0 for n in counts) or sum(counts) == 0:
        raise ParameterError("timestep_respacing", f"must be step counts ≥ 0, not all 0, got {timestep_respacing!r}")
    return counts


def respaced_timesteps(num_train_timesteps: int, timestep_respacing: str | int) -> list[int]:
    """The timesteps openai's ``space_timesteps(num_train_timesteps, timestep_respacing)`` keeps, strictly descending
    (as ``pipe(timesteps=…)`` and ``pipe.log_likelihood(inference_timesteps=…)`` take them); "" keeps all T. "ddimN"
    (DDIM's stride) is refused, as is a section asked for more steps than it has."""
    T = num_train_timesteps
    if timestep_respacing == "":
        return list(range(T - 1, -1, -1))
    counts = _section_counts(str(timestep_respacing))
    length, longer = divmod(T, len(counts))
    kept, start = set(), 0
    for i, count in enumerate(counts):
        size = length + (i < longer)
        if count > size:
            raise ParameterError("timestep_respacing", f"asks {count} steps of a section of {size} timesteps "
                                                       f"(section {i + 1} of {len(counts)}, T = {T})")
        stride = (size - 1) / (count - 1) if count > 1 else 1.0
        position = 0.0
        for _ in range(count):
            kept.add(start + round(position))
            position += stride
        start += size
    return sorted(kept, reverse=True)
