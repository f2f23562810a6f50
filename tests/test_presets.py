"""UNet presets: the paper's CIFAR-10 network, learned-variance outputs, configs from files/folders/the Hub cache."""

import json

import huggingface_hub
import pytest
import torch
from diffusers import UNet2DModel
from diffusers.models.attention_processor import Attention

from hf_ddpm.errors import ParameterError
from hf_ddpm.presets import PRESET_RESOLUTIONS, build_unet, preset_unet_config


def _parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _attention_resolutions(model, channels, resolution):
    """The spatial sizes at which the model's attention layers run (recorded during a forward pass)."""
    seen = []
    def record(module, args, kwargs):
        seen.append(tuple(args[0].shape[-2:]))

    hooks = [
        module.register_forward_pre_hook(record, with_kwargs=True)
        for module in model.modules()
        if isinstance(module, Attention)
    ]
    with torch.no_grad():
        model(torch.zeros(1, channels, resolution, resolution), torch.tensor([10]))
    for hook in hooks:
        hook.remove()
    return seen


def test_cifar10_preset_is_the_papers_35_7m_unet():
    unet = build_unet(32, 3)
    # Ho et al. 2020, Appendix B: 35.7 million parameters for the CIFAR-10 model
    assert abs(_parameters(unet) - 35.7e6) < 0.05e6
    # ch=128 with multipliers (1, 2, 2, 2), two residual blocks per level, dropout 0.1
    assert tuple(unet.config.block_out_channels) == (128, 256, 256, 256)
    assert unet.config.layers_per_block == 2 and unet.config.dropout == 0.1
    # self-attention only at the 16×16 feature maps (down and up paths), plus the middle block at 4×4
    sizes = _attention_resolutions(unet, 3, 32)
    assert set(sizes) == {(16, 16), (4, 4)} and sizes.count((4, 4)) == 1


def test_small_digits_preset_and_attention_placement():
    unet = build_unet(8, 1)
    assert 1e5 < _parameters(unet) < 1e6  # a few hundred thousand: trains on a CPU in minutes
    assert set(_attention_resolutions(unet, 1, 8)) == {(4, 4)}
    out = unet(torch.randn(2, 1, 8, 8), torch.tensor([0, 999])).sample
    assert out.shape == (2, 1, 8, 8)


@pytest.mark.parametrize("resolution", [16, 64])
def test_attention_sits_at_the_advertised_resolutions(resolution):
    config = preset_unet_config(resolution, 3)
    narrow = tuple(c // 8 for c in config["block_out_channels"])  # same layout, cheaper forward pass
    unet = UNet2DModel(**{**config, "block_out_channels": narrow, "norm_num_groups": 4})
    expected = {16: {(8, 8)}, 64: {(16, 16), (8, 8)}}[resolution]
    deepest = resolution // 2 ** (len(config["block_out_channels"]) - 1)
    assert set(_attention_resolutions(unet, 3, resolution)) == expected | {(deepest, deepest)}


def test_learned_variance_doubles_the_output_channels():
    unet = build_unet(8, 3, learned_variance=True)
    assert unet.config.out_channels == 6
    assert unet(torch.randn(1, 3, 8, 8), torch.tensor([5])).sample.shape == (1, 6, 8, 8)


def test_a_resolution_without_preset_names_the_parameter_and_the_choices():
    with pytest.raises(ParameterError, match=r"resolution 12 .*\[8, 16, 32, 64, 128, 256\].*model_config_name_or_path") as error:
        build_unet(12, 3)
    assert error.value.parameter == "resolution"
    assert PRESET_RESOLUTIONS == (8, 16, 32, 64, 128, 256)


def test_config_from_json_file_folder_and_pipeline_folder(tmp_path):
    config = {**preset_unet_config(8, 1), "block_out_channels": (16, 32), "norm_num_groups": 4}
    reference = UNet2DModel(**config)
    reference.save_config(tmp_path / "unet_only")
    reference.save_config(tmp_path / "pipeline" / "unet")
    with open(tmp_path / "unet.json", "w") as handle:
        json.dump(dict(reference.config), handle)
    for source in ("unet_only", "pipeline", "unet.json"):
        unet = build_unet(8, 1, config_name_or_path=str(tmp_path / source))
        assert tuple(unet.config.block_out_channels) == (16, 32)
        assert _parameters(unet) == _parameters(reference)


def test_config_conflicting_with_the_data_is_refused(tmp_path):
    UNet2DModel(**{**preset_unet_config(8, 1), "norm_num_groups": 8}).save_config(tmp_path)
    with pytest.raises(ParameterError, match=r"model_config_name_or_path .* sample_size=8.*resolution 16"):
        build_unet(16, 1, config_name_or_path=str(tmp_path))
    with pytest.raises(ValueError, match=r"in_channels=1.*3 channel"):
        build_unet(8, 3, config_name_or_path=str(tmp_path))
    with pytest.raises(ValueError, match=r"out_channels=1.*learned variances"):
        build_unet(8, 1, learned_variance=True, config_name_or_path=str(tmp_path))
    with pytest.raises(ParameterError, match=r"model_config_name_or_path .*no UNet2DModel config"):
        build_unet(8, 1, config_name_or_path=str(tmp_path / "missing"))


def test_config_by_hub_id_from_the_hub_cache_offline(tmp_path, monkeypatch):
    """A Hub id resolved offline from a Hub cache the test writes (models--org--name/snapshots/<commit>)."""
    commit = "0" * 40
    repo = tmp_path / "hub" / "models--tiny-org--tiny-unet"
    snapshot = repo / "snapshots" / commit
    config = {**preset_unet_config(8, 1), "block_out_channels": (16, 24), "norm_num_groups": 8}
    UNet2DModel(**config).save_config(snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    unet = build_unet(8, 1, config_name_or_path="tiny-org/tiny-unet")
    assert tuple(unet.config.block_out_channels) == (16, 24)
