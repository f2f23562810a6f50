"""A checkpoint whose keys or shapes do not fit the flags: which keys differ, and which flag most likely does.

The flags that shape the weights can be read back from an openai ``UNetModel`` state dict: ``class_cond`` (a
``label_emb``), ``learn_sigma`` (6 output channels), ``num_channels`` (the timestep embedding's input width),
``use_scale_shift_norm`` (the ResBlocks' embedding projection is twice as wide), the number of levels and
``num_res_blocks`` (the up path holds levels × (num_res_blocks + 1) blocks, one upsampler per level but the last),
``resblock_updown`` (an upsampler that is a ResBlock), ``channel_mult`` (each level's width) and the attention levels.
The heads (num_heads, num_head_channels, use_new_attention_order) and every diffusion flag leave no trace in the
weights.
"""

from __future__ import annotations

import re

from ..errors import ParameterError
from .flags import OpenAIFlags

SHOWN = 3  # keys listed per kind of difference


def _blocks(state_dict: dict, prefix: str) -> dict[int, set[str]]:
    """{block index: the keys of ``prefix``.<index>, without that prefix}."""
    blocks: dict[int, set[str]] = {}
    for key in state_dict:
        match = re.match(rf"{prefix}\.(\d+)\.(.+)", key)
        if match:
            blocks.setdefault(int(match[1]), set()).add(match[2])
    return blocks


def read_flags(state_dict: dict, image_size: int) -> dict:
    """The shape-determining flags a state dict reveals (those it does not are left out), as openai's flag values;
    ``attention_resolutions`` in terms of ``image_size``."""
    found: dict = {"class_cond": "label_emb.weight" in state_dict}
    shape = {key: tuple(value.shape) for key, value in state_dict.items()}
    if "out.2.weight" in shape:
        found["learn_sigma"] = shape["out.2.weight"][0] == 6
    if "time_embed.0.weight" not in shape:
        return found
    channels = found["num_channels"] = shape["time_embed.0.weight"][1]
    projection, width = shape.get("middle_block.0.emb_layers.1.weight"), shape.get("middle_block.0.in_layers.2.weight")
    if projection and width:
        found["use_scale_shift_norm"] = projection[0] == 2 * width[0]
    outputs = _blocks(state_dict, "output_blocks")
    resblock_up = [i for i, keys in outputs.items() if any(re.match(r"[12]\.in_layers\.", k) for k in keys)]
    conv_up = [i for i, keys in outputs.items() if any(re.match(r"[12]\.conv\.", k) for k in keys)]
    levels = 1 + len(resblock_up) + len(conv_up)
    if not outputs or len(outputs) % levels:
        return found
    if resblock_up or conv_up:
        found["resblock_updown"] = bool(resblock_up)
    per_level = len(outputs) // levels - 1
    found["num_res_blocks"] = per_level
    firsts = [1 + level * (per_level + 1) for level in range(levels)]  # each level's first input block
    widths = [shape.get(f"input_blocks.{i}.0.out_layers.3.weight", (0,))[0] for i in firsts]
    if all(widths) and all(w % channels == 0 for w in widths):
        found["channel_mult"] = tuple(w // channels for w in widths)
    found["attention_resolutions"] = tuple(image_size // 2**level for level, i in enumerate(firsts)
                                           if f"input_blocks.{i}.1.qkv.weight" in shape)
    return found


def _given(flags: OpenAIFlags) -> dict:
    return {**{name: flags.values[name] for name in ("class_cond", "learn_sigma", "use_scale_shift_norm",
                                                     "resblock_updown", "num_res_blocks")},
            "num_channels": flags.model_channels, "channel_mult": flags.channel_mult,
            "attention_resolutions": tuple(flags.image_size // 2**level for level in sorted(flags.attention_levels))}


def _as_flag(name: str, value) -> str:
    text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
    return f"--{name} {text}" if text else f"no --{name}"


def likely_flag(state_dict: dict, flags: OpenAIFlags) -> tuple[str, str] | None:
    """(flag, what the checkpoint shows) for the first shape-determining flag whose value differs from what the
    checkpoint reveals, or None."""
    found, given = read_flags(state_dict, flags.image_size), _given(flags)
    for name in ("class_cond", "learn_sigma", "num_channels", "num_res_blocks", "channel_mult", "resblock_updown",
                 "use_scale_shift_norm", "attention_resolutions"):
        if name in found and found[name] != given[name]:
            flag, shows = name, _as_flag(name, found[name])
            if name == "attention_resolutions" and not found[name]:
                shows = "no attention outside the middle block"
            if name == "channel_mult":
                sizes = [size for size, mult in flags.codebase.channel_mults.items() if mult == found[name]]
                shows += f" (what --image_size {sizes[0]} picks)" if sizes else ""
                flag = name if flags.has_flag(name) else "image_size"
            return flag, f"the checkpoint looks like {shows}"
    return None


def _listed(keys: list[str]) -> str:
    more = f" (+{len(keys) - SHOWN} more)" if len(keys) > SHOWN else ""
    return ", ".join(keys[:SHOWN]) + more


def check_keys(state_dict: dict, expected: dict[str, tuple], flags: OpenAIFlags) -> None:
    """A :class:`ParameterError` when ``state_dict``'s keys and shapes differ from ``expected`` (openai's keys the
    flags imply, with their shapes): the first missing, unexpected and mis-shaped keys, named by the flag that most
    likely differs (else by ``checkpoint``)."""
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    misshaped = [f"{key} {tuple(state_dict[key].shape)} (the flags give {expected[key]})" for key in expected
                 if key in state_dict and tuple(state_dict[key].shape) != expected[key]]
    if not (missing or unexpected or misshaped):
        return
    differences = [f"{label} {_listed(keys)}" for label, keys in
                   (("missing keys", missing), ("unexpected keys", unexpected), ("mis-shaped", misshaped)) if keys]
    detail = f"the checkpoint does not fit the {flags.codebase.name} flags: {'; '.join(differences)}"
    suspect = likely_flag(state_dict, flags)
    if suspect is None:
        raise ParameterError("checkpoint", f"{detail}. Check the flags against the checkpoint's MODEL_FLAGS")
    flag, shows = suspect
    raise ParameterError(flag, f"is most likely wrong ({shows}, given {_as_flag(flag, flags.values[flag])}): {detail}")
