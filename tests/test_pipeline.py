"""DDPMDocPipeline against diffusers' DDPMPipeline, save/load, callbacks, failures, and the bound of images."""

import json

import numpy as np
import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler

from hf_ddpm import DDPMDocPipeline, DDPMDocScheduler, bits_per_dim
from helpers import tiny_unet

pytestmark = pytest.mark.numerics  # run again under ATEN_CPU_CAPABILITY=default in CI (.ci/run)


def quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize(
    "channels, config, steps",
    [(1, {}, 1000), (3, {"variance_type": "fixed_large", "clip_sample": False}, 50), (1, {"prediction_type": "v_prediction"}, 20)],
)
def test_images_equal_diffusers_ddpm_pipeline(channels, config, steps):
    unet = tiny_unet(channels=channels)
    ours = quiet(DDPMDocPipeline(unet=unet, scheduler=DDPMDocScheduler(**config)))
    theirs = quiet(DDPMPipeline(unet=unet, scheduler=DDPMScheduler(**config)))
    kwargs = dict(batch_size=3, num_inference_steps=steps, output_type="np")
    a = ours(generator=torch.Generator().manual_seed(0), **kwargs).images
    b = theirs(generator=torch.Generator().manual_seed(0), **kwargs).images
    assert a.shape == (3, 8, 8, channels)
    np.testing.assert_allclose(a, b, atol=1e-4)
    pil_ours = ours(generator=torch.Generator().manual_seed(0), batch_size=3, num_inference_steps=steps).images
    pil_theirs = theirs(generator=torch.Generator().manual_seed(0), batch_size=3, num_inference_steps=steps).images
    for x, y in zip(pil_ours, pil_theirs):
        assert np.abs(np.asarray(x, dtype=int) - np.asarray(y, dtype=int)).max() <= 1


def test_output_types_agree_and_tuple_return():
    pipe = quiet(DDPMDocPipeline(unet=tiny_unet(), scheduler=DDPMDocScheduler()))
    run = lambda **kw: pipe(batch_size=2, num_inference_steps=10, generator=torch.Generator().manual_seed(1), **kw)  # noqa: E731
    pt = run(output_type="pt").images
    np_images = run(output_type="np").images
    (pil,) = run(return_dict=False)
    assert pt.shape == (2, 1, 8, 8) and 0 <= float(pt.min()) and float(pt.max()) <= 1
    np.testing.assert_allclose(pt.permute(0, 2, 3, 1).numpy(), np_images)
    np.testing.assert_array_equal(np.asarray(pil[0]), (np_images[0, ..., 0] * 255).round().astype(np.uint8))


def test_per_image_generators_make_images_independent_of_the_batch():
    pipe = quiet(DDPMDocPipeline(unet=tiny_unet(), scheduler=DDPMDocScheduler()))
    both = pipe(batch_size=2, num_inference_steps=10, output_type="np", generator=[torch.Generator().manual_seed(s) for s in (5, 6)]).images
    second = pipe(batch_size=1, num_inference_steps=10, output_type="np", generator=[torch.Generator().manual_seed(6)]).images
    # The UNet sees a batch of 2 or of 1, whose kernels round differently (≈ 1e-6 here after 10 steps); noise drawn
    # from a shared generator instead of each image's own would move the image by O(0.1).
    np.testing.assert_allclose(both[1:], second, atol=1e-4)


def test_save_and_load_round_trip(tmp_path):
    pipe = quiet(DDPMDocPipeline(unet=tiny_unet(channels=3), scheduler=DDPMDocScheduler(variance_type="fixed_large")))
    pipe.save_pretrained(tmp_path)
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["_class_name"] == "DDPMDocPipeline" and index["scheduler"][1] == "DDPMDocScheduler"
    loaded = quiet(DDPMDocPipeline.from_pretrained(tmp_path))
    assert isinstance(loaded.scheduler, DDPMDocScheduler) and loaded.scheduler.config.variance_type == "fixed_large"
    run = lambda p: p(batch_size=2, num_inference_steps=5, output_type="np", generator=torch.Generator().manual_seed(0)).images  # noqa: E731
    np.testing.assert_array_equal(run(pipe), run(loaded))


def test_loads_a_folder_saved_by_diffusers_ddpm_pipeline(tmp_path):
    unet = tiny_unet()
    quiet(DDPMPipeline(unet=unet, scheduler=DDPMScheduler(variance_type="fixed_large", beta_end=0.03))).save_pretrained(tmp_path)
    pipe = quiet(DDPMDocPipeline.from_pretrained(tmp_path))
    assert type(pipe.scheduler) is DDPMDocScheduler
    assert pipe.scheduler.config.variance_type == "fixed_large" and pipe.scheduler.config.beta_end == 0.03
    for name, param in unet.state_dict().items():
        torch.testing.assert_close(pipe.unet.state_dict()[name], param)


def test_callback_sees_every_step_and_can_replace_the_image():
    pipe = quiet(DDPMDocPipeline(unet=tiny_unet(), scheduler=DDPMDocScheduler()))
    seen = []

    def callback(p, i, t, kwargs):
        seen.append((i, int(t), kwargs["pred_original_sample"].shape))
        return {"image": torch.zeros_like(kwargs["image"])} if i == 9 else {}

    images = pipe(
        num_inference_steps=10, output_type="np", callback_on_step_end=callback,
        callback_on_step_end_tensor_inputs=["image", "pred_original_sample"],
    ).images
    assert [s[:2] for s in seen] == [(i, 900 - 100 * i) for i in range(10)]
    np.testing.assert_array_equal(images, np.full_like(images, 0.5))  # x_0 = 0 ↦ grey 0.5


@pytest.mark.parametrize("bad_value", [float("nan"), float("inf")])
def test_non_finite_model_output_names_the_step(bad_value):
    pipe = quiet(DDPMDocPipeline(unet=tiny_unet(), scheduler=DDPMDocScheduler(clip_sample=False)))

    def poison(p, i, t, kwargs):  # one bad pixel in x_t: the UNet's output at the next step is non-finite
        image = kwargs["image"].clone()
        image[0, 0, 0, 0] = bad_value
        return {"image": image} if i == 3 else {}

    with pytest.raises(FloatingPointError, match=r"sampling step 4 \(timestep 500\)"):
        pipe(num_inference_steps=10, callback_on_step_end=poison)


def test_log_likelihood_of_pil_numpy_and_tensor_images_agree_with_bits_per_dim():
    pipe = DDPMDocPipeline(unet=tiny_unet(), scheduler=DDPMDocScheduler(num_train_timesteps=30, beta_end=0.2))
    pixels = np.random.default_rng(0).integers(0, 256, (3, 8, 8)).astype(np.uint8)
    from PIL import Image

    pil = [Image.fromarray(p) for p in pixels]
    as_float = pixels.astype(np.float32) / 255
    results = [
        pipe.log_likelihood(images, generator=torch.Generator().manual_seed(0), batch_size=2)
        for images in (pil, as_float, torch.from_numpy(as_float)[:, None])
    ]
    for r in results[1:]:
        torch.testing.assert_close(r.total, results[0].total)
    x0 = torch.from_numpy(pixels).float()[:, None] / 127.5 - 1
    unet = pipe.unet
    direct = torch.cat([
        bits_per_dim(lambda x, t: unet(x, t).sample, pipe.scheduler, chunk, generator=g)
        .total for chunk, g in [(x0[:2], torch.Generator().manual_seed(0))]
    ])
    torch.testing.assert_close(results[0].total[:2], direct)
    assert results[0].terms.shape == (3, 30)


def test_bad_arguments_are_named():
    pipe = DDPMDocPipeline(unet=tiny_unet(), scheduler=DDPMDocScheduler())
    with pytest.raises(ValueError, match="output_type must be one of"):
        pipe(output_type="tensor")
    with pytest.raises(ValueError, match="2 generators for batch_size=3"):
        pipe(batch_size=3, generator=[torch.Generator()] * 2)
    with pytest.raises(ValueError, match="the network takes 1"):
        pipe.log_likelihood(torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"read as images in \[0, 1\]"):
        pipe.log_likelihood(torch.rand(2, 1, 8, 8) * 255)
    with pytest.raises(ValueError, match="num_inference_steps must be"):
        pipe(num_inference_steps=0)


def test_single_definition_of_the_pipeline_class():
    import hf_ddpm
    import hf_ddpm.pipelines

    assert hf_ddpm.DDPMDocPipeline is hf_ddpm.pipelines.DDPMDocPipeline
    assert DDPMDocPipeline.__module__ == "hf_ddpm.pipelines.pipeline_ddpm_doc"


def test_plain_diffusion_pipeline_from_pretrained_resolves_our_classes(tmp_path):
    from diffusers import DiffusionPipeline

    quiet(DDPMDocPipeline(unet=tiny_unet(), scheduler=DDPMDocScheduler(variance_type="fixed_large"))).save_pretrained(tmp_path)
    pipe = DiffusionPipeline.from_pretrained(tmp_path)
    assert type(pipe) is DDPMDocPipeline and type(pipe.scheduler) is DDPMDocScheduler
    assert pipe.scheduler.config.variance_type == "fixed_large"
