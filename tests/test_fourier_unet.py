"""FourierUNet2DModel: the features against float64, the wiring against a plain UNet2DModel, save/load, pipelines."""

import json
import math

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline, UNet2DModel

from hf_ddpm import DDPMDocPipeline, DDPMDocScheduler, FourierUNet2DModel
from hf_ddpm.fourier_unet import fourier_features
from hf_ddpm.presets import build_unet
from helpers import TINY_UNET

pytestmark = pytest.mark.numerics  # run again under ATEN_CPU_CAPABILITY=default in CI (.ci/run)

TINY = {key: value for key, value in TINY_UNET.items() if key not in ("in_channels", "out_channels")}
PERIODS = (1.0, 4.0, 16.0)


def tiny_fourier_unet(channels=1, seed=0) -> FourierUNet2DModel:
    torch.manual_seed(seed)
    return FourierUNet2DModel(fourier_periods=PERIODS, in_channels=channels, out_channels=channels, **TINY).eval()


def features_float64(x: np.ndarray, periods) -> np.ndarray:
    """sin, cos of 2π u / P per period, u = 127.5 (x + 1), in float64."""
    u = (x.astype(np.float64) + 1.0) * 127.5
    parts = []
    for period in periods:
        parts += [np.sin(2 * np.pi * u / period), np.cos(2 * np.pi * u / period)]
    return np.concatenate(parts, axis=1)


def test_features_match_float64_and_see_the_offset_from_the_8bit_grid():
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(3, 2, 4, 4, generator=generator) * 2 - 1
    got = fourier_features(x, PERIODS)
    assert got.shape == (3, 2 * len(PERIODS) * 2, 4, 4) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), features_float64(x.numpy(), PERIODS), atol=2e-4)  # phase ≤ 2π·255
    exact = fourier_features(x.double(), PERIODS)  # float64 input stays float64
    assert exact.dtype == torch.float64
    np.testing.assert_allclose(exact.numpy(), features_float64(x.double().numpy(), PERIODS), atol=1e-10)
    # on the 8-bit grid the P = 1 pair is (0, 1); an offset δ (in 8-bit units) turns it to (sin 2πδ, cos 2πδ)
    grid = torch.tensor([0.0, 17.0, 128.0, 255.0]).reshape(1, 1, 2, 2) / 127.5 - 1
    offset = 0.1
    shifted = fourier_features(grid + offset / 127.5, (1.0,))
    torch.testing.assert_close(shifted[:, 0], torch.full((1, 2, 2), math.sin(2 * math.pi * offset)), atol=3e-4, rtol=0)
    torch.testing.assert_close(shifted[:, 1], torch.full((1, 2, 2), math.cos(2 * math.pi * offset)), atol=3e-4, rtol=0)


def test_the_model_is_a_unet_reading_the_image_and_its_features():
    model = tiny_fourier_unet(channels=3)
    assert isinstance(model, UNet2DModel) and model.config.in_channels == 3
    assert model.conv_in.in_channels == 3 * (1 + 2 * len(PERIODS))
    # the same weights in a plain UNet2DModel fed [x, features computed in float64] give the same output
    plain = UNet2DModel(in_channels=3 * (1 + 2 * len(PERIODS)), out_channels=3, **TINY).eval()
    plain.load_state_dict(model.state_dict())
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    t = torch.tensor([3, 700])
    expected_input = torch.from_numpy(np.concatenate([x.numpy(), features_float64(x.numpy(), PERIODS)], axis=1))
    with torch.no_grad():
        torch.testing.assert_close(model(x, t).sample, plain(expected_input.float(), t).sample, atol=1e-4, rtol=0)


def test_save_and_load_keep_the_unet_config_and_the_periods(tmp_path):
    model = tiny_fourier_unet()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["_class_name"] == "FourierUNet2DModel" and config["fourier_periods"] == list(PERIODS)
    assert config["block_out_channels"] == [8, 16] and config["norm_num_groups"] == 4
    loaded = FourierUNet2DModel.from_pretrained(tmp_path).eval()
    assert loaded.config.block_out_channels == (8, 16) or list(loaded.config.block_out_channels) == [8, 16]
    x, t = torch.rand(2, 1, 8, 8) * 2 - 1, torch.tensor([1, 500])
    with torch.no_grad():
        assert torch.equal(loaded(x, t).sample, model(x, t).sample)
    rebuilt = FourierUNet2DModel.from_config(model.config)
    assert rebuilt.conv_in.weight.shape == model.conv_in.weight.shape


def test_pipelines_load_the_model_class_and_sample_the_same_images(tmp_path):
    scheduler = DDPMDocScheduler(num_train_timesteps=20)
    pipeline = DDPMDocPipeline(unet=tiny_fourier_unet(), scheduler=scheduler)
    pipeline.set_progress_bar_config(disable=True)
    pipeline.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "model_index.json").read_text())["unet"][1] == "FourierUNet2DModel"
    generated = pipeline(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=20, output_type="np").images
    for loader in (DDPMDocPipeline, DiffusionPipeline):
        loaded = loader.from_pretrained(tmp_path)
        loaded.set_progress_bar_config(disable=True)
        assert type(loaded.unet) is FourierUNet2DModel
        again = loaded(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=20, output_type="np").images
        np.testing.assert_array_equal(again, generated)


def test_build_unet_adds_or_drops_the_features(tmp_path):
    with_features = build_unet(8, 1, learned_variance=True, fourier_periods=(2.0, 8.0))
    assert type(with_features) is FourierUNet2DModel and with_features.conv_in.in_channels == 5
    assert with_features.config.out_channels == 2
    with_features.save_pretrained(tmp_path)  # a config naming periods: the argument decides
    plain = build_unet(8, 1, learned_variance=True, config_name_or_path=str(tmp_path))
    assert type(plain) is UNet2DModel and plain.conv_in.in_channels == 1
    other = build_unet(8, 1, learned_variance=True, config_name_or_path=str(tmp_path), fourier_periods=(1.0,))
    assert other.config.fourier_periods == [1.0] and other.conv_in.in_channels == 3


@pytest.mark.parametrize("periods", [(), (0.0, 1.0), (-2.0,), (float("nan"),), ("a",)])
def test_bad_periods_are_named(periods):
    with pytest.raises(ValueError, match="fourier_periods"):
        FourierUNet2DModel(fourier_periods=periods, in_channels=1, out_channels=1, **TINY)
