"""openai's model and diffusion flags (improved-diffusion and guided-diffusion): their defaults, their parsing from a
command line as openai's scripts parse them, and what they resolve to (:class:`OpenAIFlags`).

The flags are those of each codebase's ``model_and_diffusion_defaults()`` (``script_util.py``) plus the samplers'
``clip_denoised``. The two codebases share one layout (guided-diffusion's ``UNetModel`` extends improved-diffusion's);
a flag one of them lacks is fixed at the value its code implies (:attr:`Codebase.implied`).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from ..errors import ParameterError

NUM_CLASSES = 1000  # the class-conditional models' label embeddings (ImageNet), as in openai's script_util.py
NOISE_SCHEDULES = ("linear", "cosine")
TRUE_WORDS, FALSE_WORDS = ("yes", "true", "t", "y", "1"), ("no", "false", "f", "n", "0")  # openai's str2bool

# guided-diffusion's model_and_diffusion_defaults() (image training), then the samplers' clip_denoised.
GUIDED_DIFFUSION_DEFAULTS = dict(
    image_size=64, num_channels=128, num_res_blocks=2, num_heads=4, num_heads_upsample=-1, num_head_channels=-1,
    attention_resolutions="16,8", channel_mult="", dropout=0.0, class_cond=False, use_checkpoint=False,
    use_scale_shift_norm=True, resblock_updown=False, use_fp16=False, use_new_attention_order=False,
    learn_sigma=False, diffusion_steps=1000, noise_schedule="linear", timestep_respacing="", use_kl=False,
    predict_xstart=False, rescale_timesteps=False, rescale_learned_sigmas=False, clip_denoised=True,
)

# improved-diffusion's defaults differ: no num_head_channels, channel_mult, resblock_updown, use_fp16 (a training
# flag there) or use_new_attention_order; a sigma_small flag; rescale_timesteps and rescale_learned_sigmas True.
IMPROVED_DIFFUSION_DEFAULTS = dict(
    image_size=64, num_channels=128, num_res_blocks=2, num_heads=4, num_heads_upsample=-1,
    attention_resolutions="16,8", dropout=0.0, learn_sigma=False, sigma_small=False, class_cond=False,
    diffusion_steps=1000, noise_schedule="linear", timestep_respacing="", use_kl=False, predict_xstart=False,
    rescale_timesteps=True, rescale_learned_sigmas=True, use_checkpoint=False, use_scale_shift_norm=True,
    clip_denoised=True,
)


@dataclass(frozen=True)
class Codebase:
    """One of openai's codebases: its flags with their defaults, the values its code implies for the flags it lacks,
    and the channel multipliers its ``create_model`` picks from ``image_size`` (when ``channel_mult`` is empty)."""

    name: str
    defaults: dict
    implied: dict
    channel_mults: dict

    def resolve(self, flags: dict) -> OpenAIFlags:
        """The given flags over the defaults, each checked (an unknown flag or a value of the wrong type is a
        :class:`ParameterError` naming it), resolved to the architecture and diffusion they describe."""
        self._check_known(flags)
        for name, value in flags.items():
            _check_type(name, value, self.defaults[name])
        return OpenAIFlags.from_values(self, {**self.implied, **self.defaults, **flags})

    def parse(self, argv: list[str]) -> dict:
        """``--name value`` (or ``--name=value``) pairs as openai's scripts parse them (``str2bool`` for booleans,
        the default's type otherwise) → a dict of flag values."""
        flags, rest = {}, list(argv)
        while rest:
            token = rest.pop(0)
            if not token.startswith("--") or len(token) == 2:
                raise ParameterError("flags", f"expects --name value pairs as openai's READMEs write them, got "
                                              f"{token!r}")
            name, equals, value = token[2:].partition("=")
            self._check_known([name])
            if not equals:
                if not rest or rest[0].startswith("--"):
                    raise ParameterError(name, "has no value")
                value = rest.pop(0)
            flags[name] = _parse_value(name, value, self.defaults[name])
        return flags

    def _check_known(self, names) -> None:
        unknown = sorted(set(names) - set(self.defaults))
        if unknown:
            raise ParameterError(unknown[0], f"is not a model or diffusion flag of {self.name} (its flags: "
                                             f"{', '.join(self.defaults)})")


GUIDED_DIFFUSION = Codebase(
    "guided-diffusion", GUIDED_DIFFUSION_DEFAULTS, implied=dict(sigma_small=False),
    channel_mults={512: (0.5, 1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)},
)
IMPROVED_DIFFUSION = Codebase(
    "improved-diffusion", IMPROVED_DIFFUSION_DEFAULTS,
    implied=dict(num_head_channels=-1, channel_mult="", resblock_updown=False, use_fp16=False,
                 use_new_attention_order=False),
    channel_mults={256: (1, 1, 2, 2, 4, 4), 64: (1, 2, 3, 4), 32: (1, 2, 2, 2)},
)
CODEBASES = {codebase.name: codebase for codebase in (GUIDED_DIFFUSION, IMPROVED_DIFFUSION)}


def _check_type(name: str, value, default) -> None:
    if isinstance(default, bool):
        ok, kind = isinstance(value, bool), "True or False"
    elif isinstance(default, int):
        ok, kind = isinstance(value, numbers.Integral) and not isinstance(value, bool), "an integer"
    elif isinstance(default, float):
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
        kind = "a number"
    else:
        ok, kind = isinstance(value, str), "a string"
    if not ok:
        raise ParameterError(name, f"must be {kind}, got {value!r}")


def _parse_value(name: str, text: str, default):
    if isinstance(default, bool):
        if text.lower() in TRUE_WORDS or text.lower() in FALSE_WORDS:
            return text.lower() in TRUE_WORDS
        raise ParameterError(name, f"must be a boolean (True/False), got {text!r}")
    try:
        return type(default)(text)
    except ValueError:
        raise ParameterError(name, f"must be {'an integer' if isinstance(default, int) else 'a number'}, got "
                                   f"{text!r}") from None


def _integers(name: str, text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ParameterError(name, f"must be comma-separated integers, got {text!r}") from None
    if any(v < 1 for v in values):
        raise ParameterError(name, f"must be positive integers, got {text!r}")
    return values


@dataclass(frozen=True)
class OpenAIFlags:
    """A model and its diffusion as openai's flags describe them, resolved.

    Architecture: ``image_size``, ``model_channels`` (num_channels), ``channel_mult`` per level, ``num_res_blocks``,
    ``attention_levels`` (the levels ℓ whose downsampling rate 2^ℓ is in ``attention_resolutions`` read as
    ``image_size // resolution``; the middle block always has attention), the heads (``num_heads``,
    ``num_heads_upsample``, ``num_head_channels``), ``legacy_attention`` (not use_new_attention_order),
    ``use_scale_shift_norm``, ``resblock_updown``, ``class_cond``, ``learn_sigma``, ``dropout``. Diffusion:
    ``diffusion_steps`` T, ``noise_schedule``, ``predict_xstart``, ``sigma_small``, ``rescale_timesteps``,
    ``clip_denoised``. ``values``: every flag as given or defaulted; ``codebase``: whose flags they are.
    """

    codebase: Codebase
    values: dict
    image_size: int
    model_channels: int
    channel_mult: tuple
    num_res_blocks: int
    attention_levels: frozenset
    num_heads: int
    num_heads_upsample: int
    num_head_channels: int
    legacy_attention: bool
    use_scale_shift_norm: bool
    resblock_updown: bool
    class_cond: bool
    learn_sigma: bool
    dropout: float
    diffusion_steps: int
    noise_schedule: str
    predict_xstart: bool
    sigma_small: bool
    rescale_timesteps: bool
    clip_denoised: bool

    @classmethod
    def from_values(cls, codebase: Codebase, v: dict) -> OpenAIFlags:
        for name in ("image_size", "num_channels", "num_res_blocks", "num_heads", "diffusion_steps"):
            if v[name] < 1:
                raise ParameterError(name, f"must be ≥ 1, got {v[name]}")
        if v["noise_schedule"] not in NOISE_SCHEDULES:
            raise ParameterError("noise_schedule", f"must be one of {NOISE_SCHEDULES}, got {v['noise_schedule']!r}")
        if v["timestep_respacing"]:
            raise ParameterError("timestep_respacing", "chooses a sampling chain, not the model: convert without "
                                 "it and pass timesteps=respaced_timesteps(T, '…') (hf_ddpm.convert) when sampling "
                                 "or evaluating the converted pipeline")
        size = v["image_size"]
        if v["channel_mult"]:
            channel_mult = _integers("channel_mult", v["channel_mult"])
        elif size in codebase.channel_mults:
            channel_mult = codebase.channel_mults[size]
        else:
            raise ParameterError("image_size", f"{size} has no default channel_mult in {codebase.name} (it has "
                                               f"{sorted(codebase.channel_mults)})"
                                 + ("; give --channel_mult" if "channel_mult" in codebase.defaults else ""))
        rates = {size // r for r in _integers("attention_resolutions", v["attention_resolutions"])}
        levels = frozenset(level for level in range(len(channel_mult)) if 2**level in rates)
        return cls(
            codebase=codebase, values=v, image_size=size, model_channels=v["num_channels"], channel_mult=channel_mult,
            num_res_blocks=v["num_res_blocks"], attention_levels=levels, num_heads=v["num_heads"],
            num_heads_upsample=v["num_heads_upsample"], num_head_channels=v["num_head_channels"],
            legacy_attention=not v["use_new_attention_order"], use_scale_shift_norm=v["use_scale_shift_norm"],
            resblock_updown=v["resblock_updown"], class_cond=v["class_cond"], learn_sigma=v["learn_sigma"],
            dropout=float(v["dropout"]), diffusion_steps=v["diffusion_steps"], noise_schedule=v["noise_schedule"],
            predict_xstart=v["predict_xstart"], sigma_small=v["sigma_small"],
            rescale_timesteps=v["rescale_timesteps"], clip_denoised=v["clip_denoised"],
        )

    def has_flag(self, name: str) -> bool:
        """Whether ``name`` is a flag of this codebase (else its value is implied by the code)."""
        return name in self.codebase.defaults
