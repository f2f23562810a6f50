"""Bad input, named by the library's own parameter: each command line turns it into one line naming its own flag.

A library function raises :class:`ParameterError` (a ``ValueError``) with the name of its parameter and what is
wrong with the value, e.g. ``ParameterError("learning_rate", "must be > 0, got -1.0")``, whose text reads
"learning_rate must be > 0, got -1.0". ``training/train.py`` reports it as "--learning_rate must be > 0, got -1.0",
``hf-ddpm evaluate`` as "--train-data-dir ...": :meth:`ParameterError.with_name` swaps the name, nothing else.
"""

from __future__ import annotations

import math

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id


class ParameterError(ValueError):
    """A bad value of the parameter ``parameter``; ``detail`` says what is wrong without repeating the name."""

    def __init__(self, parameter: str, detail: str):
        self.parameter = parameter
        self.detail = detail
        super().__init__(self.with_name(parameter))

    def with_name(self, name: str) -> str:
        """The message with ``name`` (e.g. a command-line flag) in place of the parameter's name; a ``detail``
        starting with "=" follows the name directly ("repo_id='a b' is not …")."""
        return f"{name}{'' if self.detail.startswith('=') else ' '}{self.detail}"


def check_at_least(parameter: str, value, minimum, *, optional: bool = False) -> None:
    """``value`` ≥ ``minimum`` (an integer count or size); ``optional``: None is allowed too."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ParameterError(parameter, f"must be an integer ≥ {minimum}, got {value!r}")


def check_interval(parameter: str, value, low: float, high: float, *, closed_low: bool = False,
                   closed_high: bool = False) -> None:
    """``value`` a finite number in the interval from ``low`` to ``high`` (open ends unless said closed)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= low if closed_low else value > low) and (value <= high if closed_high else value < high)
    if not ok:
        interval = f"{'[' if closed_low else '('}{low:g}, {high:g}{']' if closed_high else ')'}"
        raise ParameterError(parameter, f"must lie in {interval}, got {value!r}")


def check_choice(parameter: str, value, choices) -> None:
    """``value`` one of ``choices`` (a sequence, or a mapping keyed by the choices)."""
    try:
        known = value in choices
    except TypeError:  # unhashable, e.g. a list for a mapping's keys
        known = False
    if not known:
        raise ParameterError(parameter, f"must be one of {tuple(choices)}, got {value!r}")


def check_repo_id(parameter: str, repo_id: str) -> None:
    """``repo_id`` a valid Hub repo id ('name' or 'user/name'), checked offline by huggingface_hub's rules."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ParameterError(parameter, f"={repo_id!r} is not a valid Hub repo id ('name' or 'user/name'): {err}") from None
