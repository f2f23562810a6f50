"""openai's ``UNetModel`` (improved-/guided-diffusion) as diffusers' ``UNet2DModel``: the configuration that builds the
same network, and the map from its state-dict keys and shapes onto ``UNet2DModel``'s.

The two networks are the same computation, block for block:

==========================================  ==========================================================
openai ``UNetModel``                         diffusers ``UNet2DModel``
==========================================  ==========================================================
``timestep_embedding`` [cos, sin]            ``Timesteps(flip_sin_to_cos=True, freq_shift=0)``
``time_embed.0`` / ``.2``                    ``time_embedding.linear_1`` / ``linear_2``
``label_emb`` (class_cond, 1000 classes)     ``class_embedding`` (``num_class_embeds=1000``)
``input_blocks.0.0``                         ``conv_in``
ResBlock ``in_layers.0/.2``                  ResnetBlock2D ``norm1`` / ``conv1``
ResBlock ``emb_layers.1``                    ``time_emb_proj`` (2× wide with use_scale_shift_norm:
                                             ``resnet_time_scale_shift="scale_shift"``)
ResBlock ``out_layers.0/.3``                 ``norm2`` / ``conv2``
ResBlock ``skip_connection`` (1×1)           ``conv_shortcut``
AttentionBlock ``norm``, ``proj_out``        Attention ``group_norm``, ``to_out.0``
AttentionBlock ``qkv`` (3C rows)             ``to_q``, ``to_k``, ``to_v`` (C rows each, rows permuted
                                             for the legacy head order)
``Downsample.op`` / ``Upsample.conv``        ``downsamplers.0.conv`` / ``upsamplers.0.conv``
ResBlock(down/up) (resblock_updown)          ``downsamplers.0`` / ``upsamplers.0`` as ResnetBlock2D
                                             (``downsample_type``/``upsample_type="resnet"``)
``middle_block.0/1/2``                       ``mid_block.resnets.0``, ``attentions.0``, ``resnets.1``
``out.0`` / ``out.2``                        ``conv_norm_out`` / ``conv_out``
==========================================  ==========================================================

A level ℓ of the down path holds ``num_res_blocks`` ResBlocks (each followed by attention when 2^ℓ is an attention
rate) and, below the last level, a downsampler; the up path mirrors it with one more ResBlock per level and an
upsampler after the level's last block. Both codebases' ``GroupNorm32`` are 32 groups with ε = 1e-5, and attention
scales q·k by 1/√(head width) as diffusers does.

The attention's heads: openai's ``QKVAttention`` (use_new_attention_order) splits the 3C rows of ``qkv`` into q, k, v
first and then each into heads of d rows (diffusers' order: row 0 … C−1 is q). ``QKVAttentionLegacy`` (and
improved-diffusion's only attention) reshapes to [heads, 3d] first: head h's q is rows 3dh … 3dh + d − 1, its k the
next d rows, its v the d after. Both write head h's output to channels dh … dh + d − 1, as diffusers does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ParameterError
from .flags import NUM_CLASSES, OpenAIFlags

GROUPS = 32  # openai's normalization(): GroupNorm32(32, channels), ε = 1e-5 (torch's default)
EPSILON = 1e-5

RESBLOCK = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1", "norm2": "out_layers.0",
            "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
ATTENTION = {"group_norm": "norm", "to_out.0": "proj_out"}
QKV = ("to_q", "to_k", "to_v")


def _attention_widths(flags: OpenAIFlags) -> list[int]:
    """The channel count of every attention block: the attention levels' and the middle block's."""
    widths = [flags.model_channels * flags.channel_mult[level] for level in sorted(flags.attention_levels)]
    return widths + [flags.model_channels * flags.channel_mult[-1]]


def attention_head_dim(flags: OpenAIFlags) -> int | None:
    """``UNet2DModel``'s one ``attention_head_dim`` for every attention block (None: one head per block, as wide as
    the block), or a :class:`ParameterError` naming the flag when openai's heads differ in width between blocks."""
    widths = _attention_widths(flags)
    if flags.num_head_channels != -1:
        d = flags.num_head_channels
        if d < 1 or any(w % d for w in widths):
            raise ParameterError("num_head_channels", f"must divide every attention block's channels {sorted(set(widths))}, "
                                                      f"got {d}")
        return d
    if flags.num_heads_upsample not in (-1, flags.num_heads):
        raise ParameterError("num_heads_upsample", f"is {flags.num_heads_upsample} but num_heads is "
                             f"{flags.num_heads}: UNet2DModel gives the up path's attention the same heads as the down "
                             "path's")
    if flags.num_heads == 1:
        return None
    if len(set(widths)) > 1 or widths[0] % flags.num_heads:
        dims = ", ".join(f"{w}/{flags.num_heads}" for w in sorted(set(widths)))
        raise ParameterError("num_heads", f"{flags.num_heads} at attention blocks of {sorted(set(widths))} channels gives "
                             f"heads of {dims} channels; UNet2DModel has one attention_head_dim for every block, so it "
                             "expresses num_head_channels, num_heads 1, or num_heads over attention of one width")
    return widths[0] // flags.num_heads


def unet_config(flags: OpenAIFlags) -> dict:
    """The ``UNet2DModel`` configuration of openai's network; what it cannot express is a :class:`ParameterError`
    naming the flag."""
    if flags.channel_mult[0] != 1:
        raise ParameterError("channel_mult", f"starts with {flags.channel_mult[0]} (image_size "
                             f"{flags.image_size}): UNet2DModel embeds the timestep with the first block's width, "
                             "openai with num_channels, so the first multiplier must be 1")
    channels = [flags.model_channels * m for m in flags.channel_mult]
    if any(c % GROUPS for c in channels):
        raise ParameterError("num_channels", f"{flags.model_channels} × channel_mult {flags.channel_mult} gives "
                                             f"{channels}, not all multiples of the {GROUPS} normalization groups")
    levels = range(len(channels))
    down, up = ("ResnetDownsampleBlock2D", "ResnetUpsampleBlock2D") if flags.resblock_updown else \
        ("DownBlock2D", "UpBlock2D")
    sampler = "resnet" if flags.resblock_updown else "conv"
    return dict(
        sample_size=flags.image_size, in_channels=3, out_channels=6 if flags.learn_sigma else 3,
        time_embedding_type="positional", flip_sin_to_cos=True, freq_shift=0,
        down_block_types=tuple("AttnDownBlock2D" if l in flags.attention_levels else down for l in levels),
        up_block_types=tuple("AttnUpBlock2D" if l in flags.attention_levels else up for l in reversed(levels)),
        block_out_channels=tuple(channels), layers_per_block=flags.num_res_blocks, mid_block_scale_factor=1,
        downsample_padding=1, downsample_type=sampler, upsample_type=sampler, dropout=flags.dropout, act_fn="silu",
        attention_head_dim=attention_head_dim(flags), norm_num_groups=GROUPS, attn_norm_num_groups=GROUPS,
        norm_eps=EPSILON, resnet_time_scale_shift="scale_shift" if flags.use_scale_shift_norm else "default",
        add_attention=True, num_class_embeds=NUM_CLASSES if flags.class_cond else None,
    )


def module_pairs(flags: OpenAIFlags) -> list[tuple[str, str, str]]:
    """(openai module, diffusers module, kind) for every module with weights, kind "same" (parameters of the same
    names and shapes), "resblock" or "attention"."""
    pairs = [("time_embed.0", "time_embedding.linear_1", "same"), ("time_embed.2", "time_embedding.linear_2", "same"),
             ("input_blocks.0.0", "conv_in", "same"), ("out.0", "conv_norm_out", "same"), ("out.2", "conv_out", "same")]
    if flags.class_cond:
        pairs.append(("label_emb", "class_embedding", "same"))
    last = len(flags.channel_mult) - 1
    block = 1
    for level in range(last + 1):
        for j in range(flags.num_res_blocks):
            pairs.append((f"input_blocks.{block}.0", f"down_blocks.{level}.resnets.{j}", "resblock"))
            if level in flags.attention_levels:
                pairs.append((f"input_blocks.{block}.1", f"down_blocks.{level}.attentions.{j}", "attention"))
            block += 1
        if level != last:
            pairs.append((f"input_blocks.{block}.0", f"down_blocks.{level}.downsamplers.0", "resblock")
                         if flags.resblock_updown else
                         (f"input_blocks.{block}.0.op", f"down_blocks.{level}.downsamplers.0.conv", "same"))
            block += 1
    pairs += [("middle_block.0", "mid_block.resnets.0", "resblock"), ("middle_block.1", "mid_block.attentions.0",
              "attention"), ("middle_block.2", "mid_block.resnets.1", "resblock")]
    block = 0
    for u, level in enumerate(reversed(range(last + 1))):
        for i in range(flags.num_res_blocks + 1):
            pairs.append((f"output_blocks.{block}.0", f"up_blocks.{u}.resnets.{i}", "resblock"))
            position = 1
            if level in flags.attention_levels:
                pairs.append((f"output_blocks.{block}.1", f"up_blocks.{u}.attentions.{i}", "attention"))
                position = 2
            if level and i == flags.num_res_blocks:
                pairs.append((f"output_blocks.{block}.{position}", f"up_blocks.{u}.upsamplers.0", "resblock")
                             if flags.resblock_updown else
                             (f"output_blocks.{block}.{position}.conv", f"up_blocks.{u}.upsamplers.0.conv", "same"))
            block += 1
    return pairs


@dataclass(frozen=True)
class KeyMap:
    """One diffusers parameter and where it comes from: rows ``rows`` (None: all) of openai's ``source`` tensor,
    whose whole shape is ``source_shape``, reshaped to the diffusers ``shape``."""

    target: str
    shape: tuple
    source: str
    source_shape: tuple
    rows: torch.Tensor | None = None


def qkv_rows(heads: int, channels: int, legacy: bool) -> dict[str, torch.Tensor]:
    """The rows of openai's ``qkv`` (3C rows) that form diffusers' q, k and v (C rows each, head h in rows
    dh … dh + d − 1): [3, heads, d] in the new order, [heads, 3, d] in the legacy one (see the module docstring)."""
    d = channels // heads
    rows = torch.arange(3 * channels)
    rows = rows.view(heads, 3, d).transpose(0, 1) if legacy else rows.view(3, heads, d)
    return {name: rows[i].reshape(-1) for i, name in enumerate(QKV)}


def key_maps(unet: torch.nn.Module, flags: OpenAIFlags) -> list[KeyMap]:
    """Every parameter of ``unet`` (the ``UNet2DModel`` of :func:`unet_config`) with its source in openai's state
    dict."""
    shapes = {name: tuple(p.shape) for name, p in unet.state_dict().items()}
    maps = []
    for source, target, kind in module_pairs(flags):
        names = [name[len(target) + 1:] for name in shapes if name.startswith(target + ".")]
        for name in names:
            key, shape = f"{target}.{name}", shapes[f"{target}.{name}"]
            module, _, parameter = name.rpartition(".")
            if kind == "same":
                maps.append(KeyMap(key, shape, f"{source}.{name}", shape))
            elif kind == "resblock":
                maps.append(KeyMap(key, shape, f"{source}.{RESBLOCK[module]}.{parameter}", shape))
            elif module in ATTENTION:  # proj_out is a 1×1 Conv1d: [C, C, 1] for diffusers' [C, C] Linear
                openai_shape = shape + (1,) if parameter == "weight" and module == "to_out.0" else shape
                maps.append(KeyMap(key, shape, f"{source}.{ATTENTION[module]}.{parameter}", openai_shape))
            else:
                heads = unet.get_submodule(target).heads
                rows = qkv_rows(heads, shape[0], flags.legacy_attention)[module]
                openai_shape = (3 * shape[0],) + shape[1:] + ((1,) if parameter == "weight" else ())
                maps.append(KeyMap(key, shape, f"{source}.qkv.{parameter}", openai_shape, rows))
    return maps


def expected_keys(maps: list[KeyMap]) -> dict[str, tuple]:
    """openai's state-dict keys the flags imply, with their shapes."""
    return {m.source: m.source_shape for m in maps}


def convert_state_dict(state_dict: dict, maps: list[KeyMap]) -> dict[str, torch.Tensor]:
    """The diffusers state dict in float32 (a ``use_fp16`` checkpoint's half-precision torso included) from openai's
    ``state_dict``, whose keys and shapes must be exactly :func:`expected_keys` (checked by the caller); copies, so
    the model never shares memory with ``state_dict``."""
    converted = {}
    for m in maps:
        tensor = state_dict[m.source].to(torch.float32, copy=True)
        if m.rows is not None:
            tensor = tensor[m.rows]
        converted[m.target] = tensor.reshape(m.shape).contiguous()
    return converted
