"""UNet2DModel configurations chosen by image resolution, or read from a config the user names.

| resolution | channels per level           | res blocks | attention at | dropout | parameters (3 channels) |
|-----------:|------------------------------|-----------:|--------------|--------:|------------------------:|
| 8          | 32, 64                       | 1          | 4×4          | 0.0     | 0.70M (digits on a CPU) |
| 16         | 64, 128, 128                 | 2          | 8×8          | 0.1     | 6.5M                    |
| 32         | 128, 256, 256, 256           | 2          | 16×16        | 0.1     | 35.7M (paper, CIFAR-10) |
| 64         | 128, 256, 384, 512           | 2          | 16×16, 8×8   | 0.1     | 88.2M                   |
| 128        | 128, 128, 256, 384, 512      | 2          | 16×16        | 0.0     | 85.6M                   |
| 256        | 128, 128, 256, 256, 512, 512 | 2          | 16×16        | 0.0     | 113.7M (paper: 114M)    |

All presets use the layout of the paper's network as diffusers' ``UNet2DModel`` expresses it (the one
``google/ddpm-cifar10-32`` uses; 32 is Ho et al.'s CIFAR-10 U-Net, 256 their LSUN / CelebA-HQ one): sinusoidal
time embedding ``[sin, cos]`` with frequency shift 1, single-head self-attention (``attention_head_dim=None``),
attention in the middle block, convolutional down-sampling. A model that learns its variances also outputs a
log-variance interpolation per channel, so its ``out_channels`` is twice the image's channels.
"""

from __future__ import annotations

import json
import os

from diffusers import UNet2DModel

from .errors import ParameterError
from .fourier_unet import FourierUNet2DModel

# resolution → (channels per level, res blocks per level, feature resolutions with attention, dropout, groups)
_PRESETS = {
    8: ((32, 64), 1, (4,), 0.0, 8),
    16: ((64, 128, 128), 2, (8,), 0.1, 32),
    32: ((128, 256, 256, 256), 2, (16,), 0.1, 32),
    64: ((128, 256, 384, 512), 2, (16, 8), 0.1, 32),
    128: ((128, 128, 256, 384, 512), 2, (16,), 0.0, 32),
    256: ((128, 128, 256, 256, 512, 512), 2, (16,), 0.0, 32),
}
PRESET_RESOLUTIONS = tuple(sorted(_PRESETS))


def output_channels(channels: int, learned_variance: bool) -> int:
    """The UNet's ``out_channels``: ε (or x₀ / v) per image channel, plus the variance interpolation if learned."""
    return 2 * channels if learned_variance else channels


def preset_unet_config(resolution: int, channels: int = 3, *, learned_variance: bool = False) -> dict:
    """``UNet2DModel`` keyword arguments of the preset for ``resolution`` (see the module's table)."""
    if resolution not in _PRESETS:
        raise ParameterError("resolution", f"{resolution} has no UNet preset; the presets serve "
                                           f"{list(PRESET_RESOLUTIONS)} (or give a UNet2DModel config with "
                                           "model_config_name_or_path)")
    widths, blocks, attention_at, dropout, groups = _PRESETS[resolution]
    has_attention = [resolution // 2**level in attention_at for level in range(len(widths))]
    return dict(
        sample_size=resolution,
        in_channels=channels,
        out_channels=output_channels(channels, learned_variance),
        block_out_channels=widths,
        layers_per_block=blocks,
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in has_attention),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(has_attention)),
        attention_head_dim=None,
        dropout=dropout,
        norm_num_groups=groups,
        norm_eps=1e-6,
        time_embedding_type="positional",
        flip_sin_to_cos=False,
        freq_shift=1,
        downsample_padding=0,
    )


def load_unet_config(name_or_path: str) -> dict:
    """A ``UNet2DModel`` config from a ``.json`` file, a folder (its ``config.json`` or ``unet/config.json``,
    i.e. a saved model or pipeline), or a Hub id (the same two places; the offline cache is honoured)."""
    if os.path.isfile(name_or_path):
        try:
            with open(name_or_path, encoding="utf-8") as handle:
                return json.load(handle)
        except (OSError, json.JSONDecodeError) as error:
            raise ParameterError("model_config_name_or_path", f"{name_or_path!r} is not a readable JSON file: {error}")
    errors = []
    for subfolder in (None, "unet"):
        try:
            return dict(UNet2DModel.load_config(name_or_path, subfolder=subfolder))
        except (OSError, ValueError, EnvironmentError) as error:
            errors.append(f"{subfolder or '.'}: {error}")
    raise ParameterError("model_config_name_or_path", f"{name_or_path!r}: no UNet2DModel config found as a file, "
                                                      "in a folder or on the Hub (config.json or unet/config.json); "
                                                      + " | ".join(errors))


def _check_config(config: dict, resolution: int, channels: int, learned_variance: bool, source: str) -> None:
    """The config must fit the data: sample size, input channels and output channels."""
    sample_size = config.get("sample_size")
    sizes = tuple(sample_size) if isinstance(sample_size, (list, tuple)) else (sample_size, sample_size)
    expected = {
        "sample_size": (sizes, (resolution, resolution), f"the data's resolution {resolution}"),
        "in_channels": (config.get("in_channels"), channels, f"the data's {channels} channel(s)"),
        "out_channels": (
            config.get("out_channels"),
            output_channels(channels, learned_variance),
            f"{channels} channel(s){' with learned variances (doubled)' if learned_variance else ''}",
        ),
    }
    for key, (found, wanted, reason) in expected.items():
        if found != wanted:
            shown = sample_size if key == "sample_size" else found
            raise ParameterError("model_config_name_or_path", f"{source!r} has {key}={shown!r}, but {reason} needs "
                                                              f"{key}={wanted[0] if key == 'sample_size' else wanted!r}")


def build_unet(
    resolution: int,
    channels: int,
    *,
    learned_variance: bool = False,
    config_name_or_path: str | None = None,
    fourier_periods: tuple[float, ...] = (),
    num_class_embeds: int | None = None,
) -> UNet2DModel:
    """A freshly initialised UNet: the preset for ``resolution``, or the config at ``config_name_or_path`` after
    checking that its sample size and channels fit the data. With ``fourier_periods`` it is a
    :class:`~hf_ddpm.fourier_unet.FourierUNet2DModel` reading Fourier features of those periods (replacing any
    the config names), else a plain ``UNet2DModel``. ``num_class_embeds``: the label embeddings of a class-conditional
    UNet (the classes and the null label; None: an unconditional UNet, whatever the config says)."""
    if config_name_or_path is None:
        config = preset_unet_config(resolution, channels, learned_variance=learned_variance)
    else:
        config = load_unet_config(config_name_or_path)
        _check_config(config, resolution, channels, learned_variance, config_name_or_path)
        config = {key: value for key, value in config.items() if key != "fourier_periods"}
    config = {**config, "num_class_embeds": num_class_embeds}
    if fourier_periods:
        return FourierUNet2DModel.from_config({**config, "fourier_periods": list(fourier_periods)})
    return UNet2DModel.from_config(config)
