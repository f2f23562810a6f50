"""openai's ``UNetModel`` → diffusers' ``UNet2DModel`` (hf_ddpm.convert): the converted network computes what
guided-diffusion's computes, on random-weight tiny models over the grid of architecture flags; improved-diffusion's
layout; half-precision checkpoints; the saved folder in plain diffusers; what cannot be expressed is refused by name.
"""

import itertools
import shlex
from pathlib import Path

import pytest
import torch
from convert_support import TINY, openai_model_and_diffusion, random_weights, relative_error
from diffusers import UNet2DModel
from guided_diffusion.script_util import create_model, create_model_and_diffusion, model_and_diffusion_defaults

from hf_ddpm import DDPMDocPipeline
from hf_ddpm.convert import CODEBASES, from_guided_diffusion, from_improved_diffusion
from hf_ddpm.convert.flags import GUIDED_DIFFUSION_DEFAULTS, IMPROVED_DIFFUSION_DEFAULTS
from hf_ddpm.convert.unet_mapping import expected_keys, key_maps, unet_config
from hf_ddpm.errors import ParameterError

pytestmark = pytest.mark.numerics

TOLERANCE = 1e-5  # relative, float32


def _outputs(openai_model, unet, flags, seed=0, timesteps=(0.0, 1.0, 517.0, 999.0)):
    """Both networks on the same x_t, timesteps (integers, and rescaled floats t·1000/T as rescale_timesteps feeds
    them) and labels."""
    generator = torch.Generator().manual_seed(seed)
    size = flags.get("image_size", TINY["image_size"])
    t = torch.tensor(timesteps + (0.25 * 3999,))
    x = torch.randn(len(t), 3, size, size, generator=generator)
    y = torch.randint(1000, (len(t),), generator=generator) if flags.get("class_cond") else None
    with torch.no_grad():
        reference = openai_model(x, t, y=y)
        ours = unet(x, t, class_labels=y).sample
    return ours, reference


ARCHITECTURES = list(itertools.product([False, True], repeat=6))


@pytest.mark.parametrize(
    "learn_sigma, class_cond, resblock_updown, use_new_attention_order, head_channels, use_scale_shift_norm",
    ARCHITECTURES,
)
def test_output_equals_guided_diffusion(learn_sigma, class_cond, resblock_updown, use_new_attention_order,
                                        head_channels, use_scale_shift_norm):
    """Every combination of the architecture flags: heads set by num_head_channels (16: 2 and 4 heads) or by
    num_heads (2: heads of 32 channels); with two heads or more the legacy head order is a real permutation."""
    heads = dict(num_head_channels=16) if head_channels else dict(num_heads=2)
    flags = dict(TINY, learn_sigma=learn_sigma, class_cond=class_cond, resblock_updown=resblock_updown,
                 use_new_attention_order=use_new_attention_order, use_scale_shift_norm=use_scale_shift_norm, **heads)
    model, _ = openai_model_and_diffusion(**flags)
    pipe = from_guided_diffusion(model.state_dict(), **flags)
    ours, reference = _outputs(model, pipe.unet, flags)
    assert ours.shape == reference.shape == (5, 6 if learn_sigma else 3, 8, 8)
    assert reference.std() > 0.1  # random weights everywhere: a mapping error cannot hide behind a zero output
    assert relative_error(ours, reference) <= TOLERANCE


def test_attention_at_several_widths_and_three_levels():
    """Attention at levels of 32 and 64 channels with a fixed head width, three levels, two ResBlocks each."""
    flags = dict(image_size=16, num_channels=32, num_res_blocks=2, channel_mult="1,2,2", attention_resolutions="16,8",
                 num_head_channels=16, resblock_updown=True, learn_sigma=True)
    model, _ = openai_model_and_diffusion(**flags)
    pipe = from_guided_diffusion(model.state_dict(), **flags)
    assert pipe.unet.config.down_block_types == ("AttnDownBlock2D", "AttnDownBlock2D", "ResnetDownsampleBlock2D")
    ours, reference = _outputs(model, pipe.unet, flags)
    assert relative_error(ours, reference) <= TOLERANCE


def test_improved_diffusion_layout():
    """improved-diffusion's ``UNetModel`` is guided-diffusion's with the legacy attention (its ``AttentionBlock``
    reshapes qkv to [B·heads, 3·C/heads, T] before splitting q, k, v, as ``QKVAttentionLegacy`` does), conv
    up/downsampling (no ResBlock up/down), heads from num_heads only, and channel_mult from image_size (32 →
    1,2,2,2): its checkpoints have the keys and shapes of such a guided-diffusion model, which stands in for one here.
    With 4 heads the legacy order matters; the attention widths are all 64."""
    flags = dict(image_size=32, num_channels=32, num_res_blocks=1, attention_resolutions="16,8", num_heads=4,
                 learn_sigma=True, class_cond=True, dropout=0.3)
    model, _ = openai_model_and_diffusion(**flags, channel_mult="1,2,2,2", use_new_attention_order=False,
                                          resblock_updown=False)
    pipe = from_improved_diffusion(model.state_dict(), **flags)
    assert pipe.unet.config.down_block_types == ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "DownBlock2D")
    assert pipe.unet.config.attention_head_dim == 16
    ours, reference = _outputs(model, pipe.unet, flags)
    assert relative_error(ours, reference) <= TOLERANCE


def test_half_precision_checkpoint_loads_in_float32():
    """A ``use_fp16`` model's state dict holds its torso in float16: the converted weights are float32 and compute
    what openai's model computes with those (rounded) weights in float32."""
    flags = dict(TINY, num_head_channels=16, resblock_updown=True, learn_sigma=True)
    model, _ = openai_model_and_diffusion(**flags)
    model.convert_to_fp16()
    state_dict = model.state_dict()
    assert {v.dtype for v in state_dict.values()} == {torch.float16, torch.float32}
    pipe = from_guided_diffusion(state_dict, **flags, use_fp16=True)
    assert {p.dtype for p in pipe.unet.parameters()} == {torch.float32}
    model.convert_to_fp32()  # the rounded weights, in float32
    ours, reference = _outputs(model, pipe.unet, flags)
    assert relative_error(ours, reference) <= TOLERANCE


def test_converted_weights_are_copies_of_the_checkpoints():
    """The pipeline's UNet shares no memory with the state dict it was converted from (a float32 checkpoint's
    tensors included)."""
    model, _ = openai_model_and_diffusion(**TINY, num_heads=2)
    state_dict = model.state_dict()
    before = {key: value.clone() for key, value in state_dict.items()}
    pipe = from_guided_diffusion(state_dict, **TINY, num_heads=2)
    with torch.no_grad():
        for parameter in pipe.unet.parameters():
            parameter.fill_(7.0)
    assert all(torch.equal(state_dict[key], value) for key, value in before.items())


def test_saved_folder_loads_in_plain_diffusers(tmp_path):
    flags = dict(TINY, num_heads=2, class_cond=True, learn_sigma=True, resblock_updown=True)
    model, _ = openai_model_and_diffusion(**flags)
    from_guided_diffusion(model.state_dict(), **flags).save_pretrained(tmp_path)
    unet = UNet2DModel.from_pretrained(tmp_path, subfolder="unet")
    ours, reference = _outputs(model, unet, flags)
    assert relative_error(ours, reference) <= TOLERANCE
    pipe = DDPMDocPipeline.from_pretrained(tmp_path)
    assert pipe.num_classes == 1000 and pipe.config.null_class_label is None
    assert relative_error(_outputs(model, pipe.unet, flags)[0], reference) <= TOLERANCE


def test_defaults_are_openais():
    """guided-diffusion's ``model_and_diffusion_defaults()``, plus the samplers' ``clip_denoised``; improved-diffusion
    differs (read from its script_util.py: it is not installable) where the module says."""
    assert GUIDED_DIFFUSION_DEFAULTS == {**model_and_diffusion_defaults(), "clip_denoised": True}
    differences = {k for k in GUIDED_DIFFUSION_DEFAULTS.keys() | IMPROVED_DIFFUSION_DEFAULTS.keys()
                   if GUIDED_DIFFUSION_DEFAULTS.get(k) != IMPROVED_DIFFUSION_DEFAULTS.get(k)}
    assert differences == {"num_head_channels", "channel_mult", "resblock_updown", "use_fp16",
                           "use_new_attention_order", "sigma_small", "rescale_timesteps", "rescale_learned_sigmas"}


def _state_dict(**flags):
    return random_weights(create_model(**flags)).state_dict()


@pytest.mark.parametrize("flags, parameter", [
    (dict(image_size=512, num_channels=32, num_res_blocks=1, num_head_channels=32), "channel_mult"),
    # improved-diffusion's ImageNet-64 flags: 4 heads over attention of 96·3 and 96·4 channels
    (dict(image_size=64, num_channels=96, num_res_blocks=1, num_heads=4), "num_heads"),
    (dict(TINY, num_heads=2, num_heads_upsample=4), "num_heads_upsample"),
    (dict(TINY, num_head_channels=24), "num_head_channels"),
    (dict(TINY, num_channels=48), "num_channels"),
    (dict(TINY, image_size=48, channel_mult=""), "image_size"),
    (dict(TINY, timestep_respacing="250"), "timestep_respacing"),
    (dict(TINY, noise_schedule="sqrt"), "noise_schedule"),
    (dict(TINY, use_ddim=True), "use_ddim"),
    (dict(TINY, learn_sigma="True"), "learn_sigma"),
    (dict(TINY, num_channels=32.0), "num_channels"),
])
def test_what_cannot_be_expressed_is_refused_by_name(flags, parameter):
    state_dict = _state_dict(image_size=8, num_channels=32, num_res_blocks=1, channel_mult="1,2")
    with pytest.raises(ParameterError) as error:
        from_guided_diffusion(state_dict, **flags)
    assert error.value.parameter == parameter


def test_improved_diffusion_has_only_its_flags():
    with pytest.raises(ParameterError) as error:
        from_improved_diffusion({}, image_size=32, resblock_updown=True)
    assert error.value.parameter == "resblock_updown"


BASE = dict(image_size=16, num_channels=32, num_res_blocks=1, channel_mult="1,2", attention_resolutions="8",
            num_head_channels=16, resblock_updown=True, learn_sigma=True, class_cond=True)


@pytest.mark.parametrize("wrong, flag", [
    (dict(class_cond=False), "class_cond"),
    (dict(learn_sigma=False), "learn_sigma"),
    (dict(num_channels=64), "num_channels"),
    (dict(num_res_blocks=2), "num_res_blocks"),
    (dict(channel_mult="1,1"), "channel_mult"),
    (dict(channel_mult="1,2,2"), "channel_mult"),
    (dict(resblock_updown=False), "resblock_updown"),
    (dict(use_scale_shift_norm=False), "use_scale_shift_norm"),
    (dict(attention_resolutions="16"), "attention_resolutions"),
])
def test_a_checkpoint_that_does_not_fit_the_flags_names_the_flag(wrong, flag):
    model, _ = openai_model_and_diffusion(**BASE)
    with pytest.raises(ParameterError) as error:
        from_guided_diffusion(model.state_dict(), **{**BASE, **wrong})
    assert error.value.parameter == flag
    assert "does not fit" in error.value.detail and "\n" not in str(error.value)


# openai's published checkpoints, checked without their weights: the flags of every command of the docs page build a
# UNet2DModel whose parameters map onto exactly the keys and shapes of openai's UNetModel built from the same flags
# (both on the meta device); those the page says do not convert are refused by the flag it names.
DOCS_PAGE = Path(__file__).resolve().parents[1] / "docs" / "guides" / "openai-checkpoints.md"


def _documented_commands() -> list[list[str]]:
    text = DOCS_PAGE.read_text(encoding="utf-8").replace("\\\n", " ")
    return [shlex.split(line)[2:] for line in text.splitlines() if line.startswith("hf-ddpm convert ")]


def _openai_keys(codebase, resolved) -> dict:
    """openai's state-dict keys and shapes for the resolved flags: guided-diffusion's model, which for
    improved-diffusion's flags is built in its layout (legacy attention, conv resampling, its channel_mult)."""
    values = {k: v for k, v in resolved.values.items() if k in model_and_diffusion_defaults()}
    if codebase.name == "improved-diffusion":
        values.update(channel_mult=",".join(map(str, resolved.channel_mult)))
    with torch.device("meta"):
        model, _ = create_model_and_diffusion(**{**model_and_diffusion_defaults(), **values})
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


@pytest.mark.parametrize("command", _documented_commands(), ids=lambda c: c[1])
def test_documented_commands_fit_openais_models(command):
    codebase_name, _, _, _, separator, *argv = command
    assert separator == "--"
    codebase = CODEBASES[codebase_name]
    resolved = codebase.resolve(codebase.parse(argv))
    with torch.device("meta"):
        unet = UNet2DModel(**unet_config(resolved))
    assert expected_keys(key_maps(unet, resolved)) == _openai_keys(codebase, resolved)


REFUSED = [  # the published checkpoints the docs page lists as not converting, with their README flags
    ("guided-diffusion", "--attention_resolutions 32,16,8 --class_cond True --diffusion_steps 1000 --image_size 128 "
     "--learn_sigma True --noise_schedule linear --num_channels 256 --num_heads 4 --num_res_blocks 2 "
     "--resblock_updown True --use_fp16 True --use_scale_shift_norm True", "num_heads"),
    ("guided-diffusion", "--attention_resolutions 32,16,8 --class_cond True --diffusion_steps 1000 --image_size 512 "
     "--learn_sigma True --noise_schedule linear --num_channels 256 --num_head_channels 64 --num_res_blocks 2 "
     "--resblock_updown True --use_fp16 False --use_scale_shift_norm True", "channel_mult"),
    ("guided-diffusion", "--attention_resolutions 32,16,8 --class_cond True --diffusion_steps 1000 --large_size 256 "
     "--small_size 64 --learn_sigma True --noise_schedule linear --num_channels 192 --num_heads 4 "
     "--num_res_blocks 2 --resblock_updown True --use_fp16 True --use_scale_shift_norm True", "large_size"),
    ("improved-diffusion", "--image_size 64 --num_channels 128 --num_res_blocks 3 --learn_sigma True "
     "--diffusion_steps 4000 --noise_schedule cosine --use_kl True", "num_heads"),
    ("improved-diffusion", "--image_size 64 --num_channels 192 --num_res_blocks 3 --learn_sigma True --class_cond True "
     "--diffusion_steps 4000 --noise_schedule cosine --rescale_learned_sigmas False --rescale_timesteps False",
     "num_heads"),
]


@pytest.mark.parametrize("codebase_name, flags, parameter", REFUSED)
def test_published_checkpoints_that_do_not_convert_are_refused_by_name(codebase_name, flags, parameter):
    codebase = CODEBASES[codebase_name]
    with pytest.raises(ParameterError) as error:
        unet_config(codebase.resolve(codebase.parse(shlex.split(flags))))
    assert error.value.parameter == parameter
