"""Every public entry point refuses what it cannot mean, once, at its boundary: a ParameterError (a ValueError) that
names its own argument, before any work."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch

from hf_ddpm import (DDPMDocPipeline, DDPMDocScheduler, TimestepPlan, VariationalBound, bits_per_dim, estimate_bound,
                     training_loss)
from hf_ddpm.data import uint8_to_model_range
from hf_ddpm.errors import ParameterError
from hf_ddpm.image_inputs import read_images

from helpers import tiny_unet

T = 10


def grid_images(n: int = 2, channels: int = 1, size: int = 8, seed: int = 0) -> torch.Tensor:
    """8-bit images mapped to the grid of [−1, 1], as the bound takes them."""
    levels = torch.randint(0, 256, (n, channels, size, size), generator=torch.Generator().manual_seed(seed))
    return uint8_to_model_range(levels.to(torch.uint8))


def refused(parameter: str, call, match: str | None = None) -> ParameterError:
    with pytest.raises(ParameterError, match=match) as error:
        call()
    assert isinstance(error.value, ValueError) and error.value.parameter == parameter, str(error.value)
    return error.value


# Images the bound cannot score, each with a word its message must hold.
BAD_X0 = {
    "pixel values 0..255": (lambda x: (x + 1) * 127.5, "uint8_to_model_range"),
    "[0, 1] floats": (lambda x: (x + 1) / 2, r"\[0, 1\]"),
    "off the 8-bit grid": (lambda x: x.clamp(-0.99, 0.99) + 0.002, "off the 8-bit grid"),
    "beyond [-1, 1]": (lambda x: x * 3, r"\[−1, 1\]"),
    "NaN": (lambda x: x.index_put((torch.tensor([0]),), torch.tensor(float("nan"))), "NaN"),
    "inf": (lambda x: x.index_put((torch.tensor([0]),), torch.tensor(float("inf"))), "inf"),
    "empty batch": (lambda x: x[:0], "empty"),
    "3 channels": (lambda x: x.repeat(1, 3, 1, 1), "channels"),
    "wrong size": (lambda x: x[..., :4, :4], "sample_size"),
    "not a batch": (lambda x: x[0], r"\[N, C, H, W\]"),
    "integer levels": (lambda x: ((x + 1) * 127.5).round().to(torch.uint8), "uint8_to_model_range"),
    "numpy array": (lambda x: x.numpy(), "tensor"),
}


@pytest.mark.parametrize("case", sorted(BAD_X0))
def test_bits_per_dim_and_estimate_bound_refuse_images_they_cannot_score(case):
    unet, scheduler = tiny_unet(), DDPMDocScheduler(num_train_timesteps=T)
    bad, words = BAD_X0[case]
    x0 = bad(grid_images())
    refused("x0", lambda: bits_per_dim(unet, scheduler, x0), words)
    refused("x0", lambda: estimate_bound(unet, scheduler, x0, TimestepPlan.full_chain(T)), words)


def test_the_grid_is_read_within_rounding_and_at_half_precision():
    unet, scheduler = tiny_unet(), DDPMDocScheduler(num_train_timesteps=T)
    x0 = grid_images()
    # k/127.5 − 1 computed another way in float32, and the grid in float16, are accepted; 0.4 of a step is not
    bits_per_dim(unet, scheduler, (x0 + 1) / 2 * 2 - 1, timesteps=[0])
    bits_per_dim(lambda x, t: unet(x.float(), t).sample, scheduler, x0.half(), timesteps=[0])
    refused("x0", lambda: bits_per_dim(unet, scheduler, x0.half() + 0.4 * 2 / 255, timesteps=[0]), "off the 8-bit")


def test_the_bound_refuses_bad_noise_timesteps_plan_and_batch_size():
    unet, scheduler = tiny_unet(), DDPMDocScheduler(num_train_timesteps=T)
    x0 = grid_images()
    refused("noise", lambda: bits_per_dim(unet, scheduler, x0, noise=torch.randn(3, 1, 8, 8)), "images' shape")
    refused("noise", lambda: bits_per_dim(unet, scheduler, x0, noise=np.zeros((2, 1, 8, 8))), "float tensor")
    for timesteps in ([T], [-1], [1, 1], [], [0.5]):
        refused("timesteps", lambda: bits_per_dim(unet, scheduler, x0, timesteps=timesteps))
    refused("num_timesteps", lambda: bits_per_dim(unet, scheduler, x0, num_timesteps=1))
    refused("plan", lambda: estimate_bound(unet, scheduler, x0, TimestepPlan.full_chain(T + 1)))
    refused("batch_size", lambda: estimate_bound(unet, scheduler, x0, TimestepPlan.full_chain(T), batch_size=0))
    generators = [torch.Generator().manual_seed(i) for i in range(3)]
    refused("generator", lambda: bits_per_dim(unet, scheduler, x0, generator=generators, timesteps=[0]), "one per image")
    # one generator per image draws that image's ε, whether the images go through the network together or in chunks
    per_image = lambda: [torch.Generator().manual_seed(i) for i in range(len(x0))]  # noqa: E731
    together = estimate_bound(unet, scheduler, x0, TimestepPlan.full_chain(T), generator=per_image())
    chunked = estimate_bound(unet, scheduler, x0, TimestepPlan.full_chain(T), generator=per_image(), batch_size=1)
    torch.testing.assert_close(together.terms, chunked.terms, rtol=1e-5, atol=1e-7)  # the same ε; batch-size rounding


LOSS_SHAPES = [
    ("model_output", dict(model_output=torch.zeros(2, 3, 8, 8))),
    ("x_t", dict(x_t=torch.zeros(2, 1, 4, 4))),
    ("noise", dict(noise=torch.zeros(3, 1, 8, 8))),
    ("timesteps", dict(timesteps=torch.zeros(3, dtype=torch.long))),
    ("x0", dict(x0=np.zeros((2, 1, 8, 8)))),
]


@pytest.mark.parametrize("parameter, change", LOSS_SHAPES, ids=[p for p, _ in LOSS_SHAPES])
def test_training_loss_names_the_tensor_that_does_not_fit(parameter, change):
    scheduler = DDPMDocScheduler(num_train_timesteps=T)
    x0 = grid_images()
    args = dict(model_output=torch.zeros_like(x0), x0=x0, x_t=x0.clone(), noise=torch.zeros_like(x0),
                timesteps=torch.tensor([1, 2]))
    refused(parameter, lambda: training_loss(scheduler, **{**args, **change}))


def test_training_loss_refuses_an_unknown_loss_type_and_takes_a_learned_variance():
    scheduler = DDPMDocScheduler(num_train_timesteps=T, variance_type="learned_range")
    x0 = grid_images()
    args = (scheduler, torch.zeros(2, 2, 8, 8), x0, x0.clone(), torch.zeros_like(x0), torch.tensor([1, 2]))
    error = refused("loss_type", lambda: training_loss(*args, "wobbly"))
    assert "'hybrid'" in str(error) and "'wobbly'" in str(error)
    assert training_loss(*args, "hybrid").per_example.shape == (2,)


def test_the_timestep_samplers_name_their_bad_settings():
    from hf_ddpm import ImportanceSampler, UniformSampler

    for num_timesteps in (0, 2.5, None):
        refused("num_timesteps", lambda: UniformSampler(num_timesteps))
        refused("num_timesteps", lambda: ImportanceSampler(num_timesteps))
    refused("history", lambda: ImportanceSampler(T, history=0))
    for mix in (0.0, 1.5, float("nan")):
        refused("uniform_mix", lambda: ImportanceSampler(T, uniform_mix=mix))


def pipeline(channels: int = 1) -> DDPMDocPipeline:
    pipe = DDPMDocPipeline(unet=tiny_unet(channels=channels), scheduler=DDPMDocScheduler(num_train_timesteps=T))
    pipe.set_progress_bar_config(disable=True)
    return pipe


BAD_IMAGES = {
    "floats beyond [0, 1]": (torch.rand(2, 1, 8, 8) * 255, r"read as images in \[0, 1\].*uint8"),
    "negative floats": (torch.rand(2, 1, 8, 8) * 2 - 1, r"\[0, 1\]"),
    "NaN": (torch.full((2, 1, 8, 8), float("nan")), "NaN"),
    "empty batch": (torch.zeros(0, 1, 8, 8), "empty"),
    "3 channels": (torch.rand(2, 3, 8, 8), "channels"),
    "wrong size": (np.zeros((2, 4, 4), dtype=np.uint8), "sample_size"),
    "integers beyond 255": (torch.full((2, 1, 8, 8), 300), "8-bit"),
    "a list of numbers": ([0.5, 0.5], "PIL images"),
    "a 2-d array": (np.zeros((8, 8)), r"\(N, H, W\)"),
    "booleans": (torch.ones(2, 1, 8, 8, dtype=torch.bool), "dtype"),
}


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_log_likelihood_refuses_images_it_cannot_read(case):
    images, words = BAD_IMAGES[case]
    refused("images", lambda: pipeline().log_likelihood(images), words)


def test_log_likelihood_refuses_bad_noise_and_timesteps():
    pipe, images = pipeline(), torch.rand(2, 1, 8, 8)
    refused("noise", lambda: pipe.log_likelihood(images, noise=torch.randn(1, 1, 8, 8)))
    refused("timesteps", lambda: pipe.log_likelihood(images, timesteps=[T + 5]))


def test_images_are_read_by_their_type():
    """PIL images and uint8 arrays/tensors as 8-bit values, floats as [0, 1]: each gives the same x_0."""
    levels = torch.randint(0, 256, (2, 3, 8, 8), generator=torch.Generator().manual_seed(1)).to(torch.uint8)
    expected = levels.double() / 127.5 - 1
    unet = tiny_unet(channels=3)
    hwc = np.ascontiguousarray(levels.permute(0, 2, 3, 1).numpy())
    formats = {
        "PIL": [PIL.Image.fromarray(image) for image in hwc],
        "uint8 array": hwc,
        "uint8 tensor": levels,
        "float array in [0, 1]": hwc.astype(np.float32) / 255,
        "float tensor in [0, 1]": levels.float() / 255,
    }
    for name, images in formats.items():
        torch.testing.assert_close(read_images(images, "images", unet).double(), expected, atol=1e-6, rtol=0,
                                   msg=name)


def test_the_metrics_name_the_images_features_and_probabilities_they_cannot_use():
    from hf_ddpm.metrics import (class_balance_chi2, frechet_distance, inception_score, precision_recall,
                                 sample_quality)
    from hf_ddpm.metrics.statistics import inception_score_splits, label_accuracy

    good = torch.rand(4, 1, 8, 8)
    nan = torch.full((4, 1, 8, 8), float("nan"))
    for images, words in [(good * 2 - 1, r"\[0, 1\]"), (good[:0], "N ≥ 1"), (torch.rand(4, 8, 8, 3), "channels-last"),
                          (good.int(), "dtype"), ([1, 2], "PIL images"), (nan, r"\[0, 1\]")]:
        refused("generated", lambda: sample_quality(images, torch.rand(4, 1, 8, 8)), words)
    refused("reference", lambda: sample_quality(torch.rand(4, 1, 8, 8), torch.rand(4, 2, 8, 8)))
    refused("k", lambda: sample_quality(torch.rand(3, 1, 8, 8), torch.rand(4, 1, 8, 8), k=3))
    features = np.random.default_rng(0).normal(size=(5, 3))
    refused("b", lambda: frechet_distance(features, features[:, :2]), "feature dimension")
    refused("a", lambda: frechet_distance(features[:1], features), "at least 2")
    refused("a", lambda: frechet_distance(features * np.nan, features), "non-finite")
    refused("a", lambda: frechet_distance(features[0], features), r"\(N, D\)")
    refused("generated", lambda: precision_recall(features, features[:, :2]))
    refused("k", lambda: precision_recall(features, features, k=5))
    probs = np.full((4, 2), 0.5)
    refused("probs", lambda: inception_score(features), "softmax")
    refused("probs", lambda: inception_score(probs[0]))
    refused("splits", lambda: inception_score_splits(probs, splits=5))
    refused("requested", lambda: label_accuracy(probs, [0, 1, 2, 0]))
    refused("histogram", lambda: class_balance_chi2([3]))


def test_sampling_and_the_experiments_name_their_bad_arguments():
    from diffusers import DDIMScheduler

    pipe = pipeline()
    for steps in (0, T + 1, 2.5, "10", True):
        refused("num_inference_steps", lambda: pipe(num_inference_steps=steps))
        refused("num_inference_steps", lambda: pipe.progressive(2, num_inference_steps=steps))
    for batch_size in (0, -1, 1.5, True):
        refused("batch_size", lambda: pipe(batch_size=batch_size, num_inference_steps=2))
    refused("output_type", lambda: pipe(num_inference_steps=2, output_type="tensor"), "'pil'")
    refused("latents", lambda: pipe(num_inference_steps=2, latents=torch.zeros(1, 1, 8, 8, dtype=torch.long)))
    refused("latents", lambda: pipe(num_inference_steps=2, latents=np.zeros((1, 1, 8, 8), dtype=np.float32)))
    refused("latents", lambda: pipe(batch_size=2, num_inference_steps=2, latents=torch.zeros(1, 1, 8, 8)))
    refused("noise", lambda: pipe.rate_distortion(torch.rand(2, 1, 8, 8), noise=torch.zeros(2, 1, 4, 4)))
    refused("images", lambda: pipe.rate_distortion(torch.rand(2, 1, 8, 8) * 255))
    refused("images", lambda: pipe.shared_latents(np.zeros((2, 4, 4), dtype=np.uint8)))
    refused("other_images", lambda: pipe.interpolate(torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8) - 1))
    pipe.scheduler = DDIMScheduler(num_train_timesteps=T)
    for steps in (0, T + 1, 2.5):  # diffusers' schedulers are refused by the pipeline before they see the steps
        refused("num_inference_steps", lambda: pipe(num_inference_steps=steps))


def test_a_timestep_plan_names_its_bad_fields():
    refused("timesteps", lambda: TimestepPlan.uniform(T, [1, 1]), "distinct")
    refused("timesteps", lambda: TimestepPlan.uniform(T, [T]), r"\[0, 10\)")
    refused("timesteps", lambda: TimestepPlan.uniform(T, [3], chain=[0, 5, 9]), "not steps of the chain")
    refused("chain", lambda: TimestepPlan.full_chain(T, chain=[5, 2]), "ascending")
    refused("num_exact", lambda: TimestepPlan(T, torch.arange(T), torch.tensor([0, 5]), num_exact=2), "num_exact=2")


def test_a_variational_bound_names_the_field_that_does_not_fit():
    """VariationalBound(plan, prior, terms), the exported result type: a ParameterError naming the field."""
    plan = TimestepPlan.uniform(10, [2, 7, 4])
    cases = [((plan, torch.zeros(2), torch.zeros(2, 4)), r"terms must be \[images, 3\]"),
             ((plan, torch.zeros(3), torch.zeros(2, 3)), r"prior must be \[images\] = \(2,\) like terms, got \(3,\)"),
             ((plan, [0.0, 0.0], torch.zeros(2, 3)), r"prior must be a tensor, got list"),
             (([2, 4, 7], torch.zeros(2), torch.zeros(2, 3)), r"plan must be a TimestepPlan, got list")]
    for arguments, message in cases:
        with pytest.raises(ParameterError, match=message):
            VariationalBound(*arguments)
