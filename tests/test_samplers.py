"""Every diffusers sampler on DDPMDocPipeline (hf_ddpm.samplers): each compatible scheduler samples our models or is
refused by name, DDIM against its equations, DDIM with η = 1 against our fixed_small chain, the bound only where it
is defined, and every sampler on Gaussian data with the closed-form optimal predictor."""

import inspect
import math
import types

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, PNDMScheduler, \
    UniPCMultistepScheduler
from diffusers.utils.torch_utils import randn_tensor
from helpers import tiny_unet
from PIL import Image

from hf_ddpm import DDPMDocPipeline, DDPMDocScheduler, bits_per_dim
from hf_ddpm.errors import ParameterError
from hf_ddpm.samplers import PAST_ZERO_SOLVERS, SAMPLERS, make_scheduler, scheduler_from_config


COMPATIBLES = sorted(DDPMDocScheduler().compatibles, key=lambda cls: cls.__name__)
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
VARIANCES = ("fixed_small", "learned_range")
# (scheduler, prediction type) pairs the pipeline refuses, and the exception diffusers itself raises for them
REFUSED_PREDICTION = {("PNDMScheduler", "sample"), ("EulerAncestralDiscreteScheduler", "sample"),
                      ("KDPM2DiscreteScheduler", "sample"), ("KDPM2AncestralDiscreteScheduler", "sample"),
                      ("DPMSolverSDEScheduler", "sample")}
NOT_DDPM = {"EDMEulerScheduler"}
NUMERICS = pytest.mark.numerics  # float32 against float64: run again under ATEN_CPU_CAPABILITY=default in CI (.ci/run)


def quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


def needs_torchsde(cls) -> bool:
    try:
        import torchsde  # noqa: F401
    except ImportError:
        return cls.__name__ == "DPMSolverSDEScheduler"
    return False


_UNETS = {}


def unet_for(channels: int, learned: bool):
    key = (channels, learned)
    if key not in _UNETS:
        _UNETS[key] = tiny_unet(channels=channels, out_channels=channels * (2 if learned else 1))
    return _UNETS[key]


class UNetLike(torch.nn.Module):
    """What the pipeline reads of its UNet besides calling it and its ``config``: ``dtype`` and ``device`` (those of
    a buffer, which moves with ``.to()``)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("anchor", torch.zeros(()))

    @property
    def dtype(self):
        return self.anchor.dtype

    @property
    def device(self):
        return self.anchor.device


class Probe(UNetLike):
    """A UNet seen through a probe: it counts the calls (a refusal must come before any), and with ``mean_only``
    it is the network of the prediction channels alone (``out_channels`` = ``in_channels``)."""

    def __init__(self, unet, mean_only=False):
        super().__init__()
        self.inner, self.calls, self.mean_only = unet, 0, mean_only
        channels = unet.config.in_channels if mean_only else unet.config.out_channels
        self.config = types.SimpleNamespace(**{**unet.config, "out_channels": channels})

    def forward(self, sample, timestep, class_labels=None):
        self.calls += 1
        output = self.inner(sample, timestep, class_labels=class_labels).sample
        return output[:, : self.config.in_channels] if self.mean_only else output


def reference_images(unet, scheduler, num_images, steps, seed, mean_only):
    """diffusers' documented sampling loop, written here: set_timesteps, x_T · init_noise_sigma, and per step
    scale_model_input → network (its prediction channels when the scheduler models no variance) → step (with the
    generator where step takes one; DDIM re-deriving ε from the clipped x̂_0, as openai's DDIM and our pipeline do)."""
    scheduler.set_timesteps(steps)
    generator = torch.Generator().manual_seed(seed)
    size = unet.config.sample_size
    x = randn_tensor((num_images, unet.config.in_channels, size, size), generator=generator)
    x = x * scheduler.init_noise_sigma
    accepted = inspect.signature(scheduler.step).parameters
    kwargs = {"use_clipped_model_output": True} if "use_clipped_model_output" in accepted else {}
    for t in scheduler.timesteps:
        output = unet(scheduler.scale_model_input(x, t), t).sample
        if mean_only:
            output = output[:, : x.shape[1]]
        x = scheduler.step(output, t, x, **kwargs, **({"generator": generator} if "generator" in accepted else {}))
        x = x.prev_sample
    return (x / 2 + 0.5).clamp(0, 1)


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
@pytest.mark.parametrize("channels", (1, 3))
@pytest.mark.parametrize("variance_type", VARIANCES)
@pytest.mark.parametrize("scheduler_class", COMPATIBLES, ids=lambda cls: cls.__name__)
def test_every_compatible_scheduler_samples_or_is_refused_by_name(scheduler_class, variance_type, channels,
                                                                   prediction_type):
    name = scheduler_class.__name__
    learned = variance_type == "learned_range"
    config = DDPMDocScheduler(num_train_timesteps=50, variance_type=variance_type,
                              prediction_type=prediction_type).config
    if needs_torchsde(scheduler_class):  # diffusers refuses it by name before anything is built
        with pytest.raises(ImportError, match="torchsde"):
            scheduler_from_config(scheduler_class, config)
        return
    unet = Probe(unet_for(channels, learned))
    pipe = quiet(DDPMDocPipeline(unet=unet, scheduler=DDPMDocScheduler.from_config(config)))
    pipe.scheduler = scheduler_from_config(scheduler_class, config)  # swapped in as a user does
    kwargs = dict(batch_size=2, num_inference_steps=4, output_type="pt")
    if name in NOT_DDPM or (name, prediction_type) in REFUSED_PREDICTION:
        with pytest.raises(ParameterError, match=name) as refusal:
            pipe(generator=torch.Generator().manual_seed(0), **kwargs)
        assert refusal.value.parameter == "scheduler" and unet.calls == 0
        if name in NOT_DDPM:  # EDM's timesteps are c_noise = ¼ log σ, not training timesteps
            assert float(scheduler_from_config(scheduler_class, config).timesteps.min()) < 0
        else:  # the refusal is needed: diffusers' own loop fails for this prediction type
            with pytest.raises((ValueError, NotImplementedError)):
                reference_images(unet.inner, scheduler_from_config(scheduler_class, config), 2, 4, 0, learned)
        return
    images = pipe(generator=torch.Generator().manual_seed(0), **kwargs).images
    models_variance = name == "DDPMScheduler" and learned
    expected = reference_images(unet.inner, scheduler_from_config(scheduler_class, config), 2, 4, 0,
                                learned and not models_variance)
    assert images.shape == (2, channels, 8, 8) and torch.isfinite(images).all()
    torch.testing.assert_close(images, expected, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------------- DDIM


def alphas_cumprod64(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """ᾱ_t of the linear schedule, float64, from its definition."""
    return np.cumprod(1.0 - np.linspace(beta_start, beta_end, T, dtype=np.float64))


@NUMERICS
def test_ddim_eta_0_equals_a_hand_written_ddim_loop():
    """DDIM (Song et al. 2021, Eq. 12 with σ = 0): x_{t'} = √ᾱ_{t'} x̂_0 + √(1 − ᾱ_{t'}) ε_θ(x_t, t) with
    x̂_0 = (x_t − √(1 − ᾱ_t) ε_θ)/√ᾱ_t, ᾱ = 1 after the last step; timesteps every ⌊T/K⌋-th from 0 ("leading")."""
    T, K = 100, 10
    unet = unet_for(1, False)
    pipe = quiet(DDPMDocPipeline(unet=unet, scheduler=DDPMDocScheduler(num_train_timesteps=T, clip_sample=False)))
    pipe.scheduler = make_scheduler("ddim", pipe.scheduler.config)
    x_T = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    finals = []
    pipe(batch_size=3, latents=x_T, num_inference_steps=K, output_type="pt",
         callback_on_step_end=lambda p, i, t, kw: finals.append(kw["image"]) or {})
    abar = alphas_cumprod64(T)
    timesteps = list(range(0, T, T // K))[::-1]
    x = x_T.double()
    for i, t in enumerate(timesteps):
        eps = unet(x.float(), torch.tensor([t])).sample.double()
        x0 = (x - math.sqrt(1 - abar[t]) * eps) / math.sqrt(abar[t])
        abar_prev = abar[timesteps[i + 1]] if i + 1 < K else 1.0
        x = math.sqrt(abar_prev) * x0 + math.sqrt(1 - abar_prev) * eps
    torch.testing.assert_close(finals[-1].double(), x, rtol=0, atol=1e-5)


@NUMERICS
@pytest.mark.parametrize("variance_type", VARIANCES)
@pytest.mark.parametrize("config", [{}, {"clip_sample": False}, {"prediction_type": "v_prediction"},
                                    {"timestep_spacing": "trailing", "steps_offset": 0}, {"steps_offset": 1}])
def test_ddim_eta_1_is_our_fixed_small_chain_step_by_step(config, variance_type):
    """Each step of DDIM with η = 1 is N(μ̃′(x_t, x̂_0), β̃′) of our respaced fixed_small chain (hf_ddpm.samplers)."""
    T, K = 100, 10
    ours = DDPMDocScheduler(num_train_timesteps=T, variance_type="fixed_small", **config)
    ddim = scheduler_from_config(DDIMScheduler, DDPMDocScheduler(num_train_timesteps=T, variance_type=variance_type,
                                                                 **config).config)
    ddim.set_timesteps(K)
    chain = ours.chain(K)
    torch.testing.assert_close(chain.timesteps.flip(0), ddim.timesteps)
    unet = unet_for(1, variance_type == "learned_range")
    x_t = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 1.5
    for t in ddim.timesteps.tolist():
        output = unet(x_t, torch.tensor([t])).sample[:, :1]  # DDIM and fixed_small both take the prediction only
        step = dict(eta=1.0, use_clipped_model_output=True)
        mean = ddim.step(output, t, x_t, variance_noise=torch.zeros_like(x_t), **step).prev_sample
        mean_plus_std = ddim.step(output, t, x_t, variance_noise=torch.ones_like(x_t), **step).prev_sample
        p = ours.p_mean_variance(output.double(), x_t.double(), t, chain=chain)
        torch.testing.assert_close(mean.double(), p.mean, rtol=1e-5, atol=1e-5)
        std = (mean_plus_std - mean).double()  # float32 values of order 1: compare σ, not σ²
        # the last step adds no noise in either (Algorithm 2); p's variance there is the decoder's, for L_0 only
        sampled_variance = p.variance if t != ddim.timesteps[-1] else torch.zeros((), dtype=torch.float64)
        torch.testing.assert_close(std, torch.as_tensor(sampled_variance).sqrt().expand_as(std), rtol=1e-5, atol=1e-6)


@NUMERICS
def test_ddim_eta_1_samples_are_our_fixed_small_chains_samples():
    """Both draw their noise as diffusers does, step by step: with one seed the images agree."""
    unet = unet_for(1, True)
    config = DDPMDocScheduler(num_train_timesteps=100, variance_type="learned_range").config
    ddim = quiet(DDPMDocPipeline(unet=unet, scheduler=DDPMDocScheduler.from_config(config)))
    ddim.scheduler = make_scheduler("ddim", config)
    kwargs = dict(batch_size=4, num_inference_steps=10, output_type="pt")
    a = ddim(generator=torch.Generator().manual_seed(2), eta=1.0, **kwargs).images
    ours = quiet(DDPMDocPipeline(unet=Probe(unet, mean_only=True), scheduler=DDPMDocScheduler.from_config(
        {**config, "variance_type": "fixed_small"})))
    b = ours(generator=torch.Generator().manual_seed(2), **kwargs).images
    torch.testing.assert_close(a, b, rtol=0, atol=2e-5)


# ---------------------------------------------------------------------------------------------------- the bound


@pytest.fixture(scope="module")
def x0_digits():
    generator = torch.Generator().manual_seed(3)
    return torch.randint(0, 256, (4, 1, 8, 8), generator=generator).float() / 255.0


@NUMERICS
def test_bound_of_ddim_eta_1_is_the_fixed_small_chains_bound(x0_digits):
    unet = unet_for(1, True)
    config = DDPMDocScheduler(num_train_timesteps=100, variance_type="learned_range").config
    pipe = quiet(DDPMDocPipeline(unet=unet, scheduler=DDPMDocScheduler.from_config(config)))
    pipe.scheduler = make_scheduler("ddim", config)
    noise = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    for K in (10, None):
        got = pipe.log_likelihood(x0_digits, num_inference_steps=K, eta=1.0, noise=noise)
        fixed_small = DDPMDocScheduler.from_config({**config, "variance_type": "fixed_small"})
        expected = bits_per_dim(lambda x, t: unet(x, t).sample[:, :1], fixed_small,
                                torch.round(x0_digits * 255) / 127.5 - 1, noise=noise, num_inference_steps=K)
        torch.testing.assert_close(got.total, expected.total)
        assert len(got.plan.chain) == (K or 100)


@pytest.mark.parametrize("name, eta, parameter, reason", [
    ("ddim", 0.0, "eta", "deterministic"),
    ("ddim", 0.5, "eta", "η = 1"),
    ("dpmsolver++", 0.0, "scheduler", "deterministic"),
    ("unipc", 0.0, "scheduler", "deterministic"),
    ("euler", 0.0, "scheduler", "deterministic"),
    ("pndm", 0.0, "scheduler", "deterministic"),
])
def test_bound_is_refused_for_samplers_without_one(name, eta, parameter, reason, x0_digits):
    unet = Probe(unet_for(1, False))
    pipe = quiet(DDPMDocPipeline(unet=unet, scheduler=DDPMDocScheduler(num_train_timesteps=100)))
    pipe.scheduler = make_scheduler(name, pipe.scheduler.config)
    with pytest.raises(ParameterError, match=reason) as refusal:
        pipe.log_likelihood(x0_digits, num_inference_steps=10, eta=eta)
    assert refusal.value.parameter == parameter and unet.calls == 0
    if parameter == "scheduler":
        assert type(pipe.scheduler).__name__ in str(refusal.value)


def test_eta_for_a_scheduler_without_eta_is_refused_by_the_bound_as_by_sampling(x0_digits):
    pipe = quiet(DDPMDocPipeline(unet=unet_for(1, False), scheduler=DDPMDocScheduler(num_train_timesteps=100)))
    with pytest.raises(ParameterError, match="takes no eta"):
        pipe(num_inference_steps=5, eta=1.0)
    with pytest.raises(ParameterError, match="takes no eta"):
        pipe.log_likelihood(x0_digits, eta=1.0)


# ---------------------------------------------------------------------------------------------------- the names


@pytest.mark.parametrize("name", SAMPLERS)
def test_named_samplers_keep_the_models_process(name):
    """Built from a scheduler made in memory, every sampler keeps its β (diffusers' from_config would give, e.g.,
    DPM-Solver its own spacing and Heun its own β for the values the model's scheduler took by default)."""
    ours = DDPMDocScheduler(num_train_timesteps=100)
    scheduler = make_scheduler(name, ours.config)
    assert isinstance(scheduler, SAMPLERS[name].scheduler_class)
    torch.testing.assert_close(scheduler.alphas_cumprod.double(), ours.alphas_cumprod, rtol=1e-5, atol=0)
    assert scheduler.config.timestep_spacing == ours.config.timestep_spacing
    for key, value in SAMPLERS[name].overrides.items():
        assert scheduler.config[key] == value


def test_cli_samples_with_the_named_scheduler(tmp_path):
    from hf_ddpm.cli import main
    from hf_ddpm.images import make_grid

    folder = tmp_path / "model"
    DDPMDocPipeline(unet=unet_for(1, True), scheduler=DDPMDocScheduler(
        num_train_timesteps=100, variance_type="learned_range")).save_pretrained(folder)
    for name, eta in (("dpmsolver++", 0.0), ("ddim", 1.0)):
        out = tmp_path / f"{name}.png"
        main(["sample", "--model", str(folder), "--num-images", "4", "--steps", "5", "--scheduler", name,
              "--eta", str(eta), "--out", str(out)])
        pipe = quiet(DDPMDocPipeline.from_pretrained(folder))
        pipe.scheduler = make_scheduler(name, pipe.scheduler.config)
        images = pipe(batch_size=4, num_inference_steps=5, eta=eta, generator=torch.Generator().manual_seed(0),
                      output_type="np").images
        np.testing.assert_array_equal(np.asarray(Image.open(out)), np.asarray(make_grid(images)))


def test_cli_steps_default_to_the_full_chain_for_ddpm_and_the_recommended_count_otherwise(tmp_path, capsys):
    """`hf-ddpm sample --scheduler dpmsolver++` without --steps samples (DPM-Solver++ refuses the full chain)."""
    from hf_ddpm.cli import main
    from hf_ddpm.samplers import RECOMMENDED

    folder = tmp_path / "model"
    DDPMDocPipeline(unet=unet_for(1, False), scheduler=DDPMDocScheduler(num_train_timesteps=30)).save_pretrained(folder)
    for name, steps in (("dpmsolver++", RECOMMENDED[1]), ("ddpm", 30)):
        main(["sample", "--model", str(folder), "--num-images", "2", "--scheduler", name, "--out",
              str(tmp_path / f"{name}.png")])
        assert f"{steps} steps" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------- Gaussian data


class OptimalGaussianPredictor(UNetLike):
    """The exact minimiser of the training loss for data x_0 ~ N(μ, s²) per pixel, with UNet2DModel's call
    signature and the config attributes the pipeline reads.

    x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε is jointly Gaussian with ε: E[x_t] = √ᾱ_t μ, Var(x_t) = ᾱ_t s² + 1 − ᾱ_t and
    Cov(ε, x_t) = √(1 − ᾱ_t), so the optimal ε-predictor is the regression of ε on x_t,
    ε*(x_t, t) = E[ε | x_t] = (x_t − √ᾱ_t μ) · √(1 − ᾱ_t) / (ᾱ_t s² + 1 − ᾱ_t); x̂_0 = (x_t − √(1 − ᾱ_t) ε*)/√ᾱ_t
    and v* = √ᾱ_t ε* − √(1 − ᾱ_t) x̂_0 follow (both linear in ε*, so also the conditional means). A fractional
    timestep (σ-space schedulers) reads σ_t = √((1 − ᾱ_t)/ᾱ_t) interpolated in log σ, as those schedulers map σ to t.
    A learned-variance output appends v = −1 (learned_range: σ_t² = β̃_t). It records the first input it gets."""

    def __init__(self, alphas_cumprod, mean, std, channels, prediction_type, learned=False):
        super().__init__()
        self.log_sigmas = 0.5 * np.log((1 - alphas_cumprod) / alphas_cumprod)
        self.mean, self.std, self.prediction_type, self.learned = mean, std, prediction_type, learned
        self.config = types.SimpleNamespace(in_channels=channels, out_channels=channels * (1 + learned),
                                            sample_size=8, num_class_embeds=None)
        self.first_input = None

    def forward(self, sample, timestep, class_labels=None):
        if self.first_input is None:
            self.first_input = sample.clone()
        t = torch.as_tensor(timestep, dtype=torch.float64).reshape(-1).numpy()
        sigma = np.exp(np.interp(t, np.arange(len(self.log_sigmas)), self.log_sigmas))
        abar = torch.as_tensor(1.0 / (1.0 + sigma**2)).view(-1, 1, 1, 1)
        x = sample.double()
        eps = (x - abar.sqrt() * self.mean) * (1 - abar).sqrt() / (abar * self.std**2 + 1 - abar)
        x0 = (x - (1 - abar).sqrt() * eps) / abar.sqrt()
        output = {"epsilon": eps, "sample": x0, "v_prediction": abar.sqrt() * eps - (1 - abar).sqrt() * x0}[
            self.prediction_type]
        if self.learned:
            output = torch.cat([output, -torch.ones_like(output)], dim=1)
        return output.to(sample.dtype)


GAUSSIAN_CASES = [(cls, prediction_type, "fixed_small") for cls in COMPATIBLES for prediction_type in PREDICTION_TYPES
                  if cls.__name__ not in NOT_DDPM and (cls.__name__, prediction_type) not in REFUSED_PREDICTION] + \
                 [(cls, "epsilon", "learned_range") for cls in COMPATIBLES if cls.__name__ not in NOT_DDPM]


@pytest.mark.parametrize("scheduler_class, prediction_type, variance_type", GAUSSIAN_CASES,
                         ids=lambda value: getattr(value, "__name__", value))
def test_every_sampler_draws_gaussian_data_with_the_optimal_predictor(scheduler_class, prediction_type, variance_type):
    """x_0 ~ N(0.5, 1) per pixel, T = 1000 (linear β), K = 100 "leading" steps, 256 images of 8×8 from one x_T.

    The network's first input is x_T itself (init_noise_sigma of the installed chain, undone by scale_model_input:
    a σ-space scheduler's state is x_T·√(σ²+1)), within float32 rounding. Tolerances of the samples: the mean within
    0.04 (the sampling error of 16 384 values is 0.008), the standard deviation within 6 % (the coarsest samplers'
    discretisation error at K = 100 is 4 %: the ancestral chains with β̃′, which ignore Var(x_0 | x_t)). A missing
    scale_model_input feeds a σ-space network 158× its input; a missing or stale init_noise_sigma starts its chain
    at the wrong noise level."""
    if needs_torchsde(scheduler_class):
        pytest.skip("DPMSolverSDEScheduler needs torchsde")
    mean, std, K = 0.5, 1.0, 100
    config = DDPMDocScheduler(clip_sample=False, prediction_type=prediction_type, variance_type=variance_type).config
    model = OptimalGaussianPredictor(DDPMDocScheduler.from_config(config).alphas_cumprod.numpy(), mean, std, 1,
                                     prediction_type, learned=variance_type == "learned_range")
    pipe = quiet(DDPMDocPipeline(unet=model, scheduler=DDPMDocScheduler.from_config(config)))
    pipe.scheduler = scheduler_from_config(scheduler_class, config)
    x_T = torch.randn(256, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    finals = []  # x_0 before the pipeline's clamp to [0, 1]
    pipe(batch_size=256, latents=x_T, num_inference_steps=K, generator=torch.Generator().manual_seed(1),
         output_type="pt", callback_on_step_end=lambda p, i, t, kw: finals.append(kw["image"]) or {})
    torch.testing.assert_close(model.first_input, x_T, rtol=1e-5, atol=1e-5)
    x = finals[-1].double()
    assert abs(float(x.mean()) - mean) < 0.04
    assert abs(float(x.std()) / std - 1) < 0.06


def test_steps_tradeoff_rows_per_sampler_with_the_bound_where_it_exists(x0_digits, tmp_path):
    import csv

    from hf_ddpm.figures import STEPS_TRADEOFF_CSV, write_steps_tradeoff
    from hf_ddpm.steps_tradeoff import steps_tradeoff

    unet = unet_for(1, True)
    pipe = quiet(DDPMDocPipeline(unet=unet, scheduler=DDPMDocScheduler(num_train_timesteps=100,
                                                                       variance_type="learned_range")))
    ours = pipe.scheduler
    images = torch.round(x0_digits * 255) / 127.5 - 1
    rows = steps_tradeoff(pipe, images, (10, 5), samplers=("ddpm", "ddim", "ddim:1", "dpmsolver++"), num_samples=0,
                          seed=7)
    assert pipe.scheduler is ours
    assert [(row["sampler"], row["eta"], row["num_inference_steps"]) for row in rows] == [
        (name, eta, k) for name, eta in (("ddpm", 0.0), ("ddim", 0.0), ("ddim", 1.0), ("dpmsolver++", 0.0))
        for k in (10, 5)]
    for row in rows:
        if (row["sampler"], row["eta"]) in (("ddim", 0.0), ("dpmsolver++", 0.0)):
            assert row["bits_per_dim"] is None and "deterministic" in row["no_bound"]
            continue
        sampler = quiet(DDPMDocPipeline(unet=unet, scheduler=ours))
        sampler.scheduler = make_scheduler(row["sampler"], ours.config)
        expected = sampler.log_likelihood(x0_digits, num_inference_steps=row["num_inference_steps"], eta=row["eta"],
                                          generator=torch.Generator().manual_seed(7))
        assert row["bits_per_dim"] == pytest.approx(expected.bits_per_dim, rel=1e-12) and row["no_bound"] is None
    # DDIM η = 1 is another chain than the learned-variance model's own: its bound differs
    assert rows[4]["bits_per_dim"] != pytest.approx(rows[0]["bits_per_dim"], rel=1e-3)
    write_steps_tradeoff(rows, tmp_path)  # hf-ddpm figures --samplers: one CSV row per sampler and K
    with open(tmp_path / STEPS_TRADEOFF_CSV, newline="") as handle:
        written = list(csv.DictReader(handle))
    assert [(row["sampler"], float(row["eta"]), int(row["num_inference_steps"])) for row in written] == \
        [(row["sampler"], row["eta"], row["num_inference_steps"]) for row in rows]
    assert [row["bits_per_dim"] == "" for row in written] == [row["bits_per_dim"] is None for row in rows]


def test_paper_experiments_with_another_sampler(x0_digits):
    """progressive needs x̂_0 from step (refused by name before any work where the scheduler returns none); the
    rate–distortion of DDIM with η = 1 is that of our fixed_small chain, refused for a deterministic sampler."""
    unet = unet_for(1, True)
    config = DDPMDocScheduler(num_train_timesteps=100, variance_type="learned_range").config
    probe = Probe(unet)
    pipe = quiet(DDPMDocPipeline(unet=probe, scheduler=DDPMDocScheduler.from_config(config)))
    pipe.scheduler = make_scheduler("dpmsolver++", config)
    with pytest.raises(ParameterError, match="DPMSolverMultistepScheduler.*returns no x̂_0"):
        pipe.progressive(2, num_columns=3, num_inference_steps=5)
    with pytest.raises(ParameterError, match="deterministic"):
        pipe.rate_distortion(x0_digits)
    assert probe.calls == 0
    pipe.scheduler = make_scheduler("ddim", config)
    shown = pipe.progressive(2, num_columns=3, num_inference_steps=5, generator=torch.Generator().manual_seed(0))
    assert shown.images.shape == (2, 3, 1, 8, 8) and shown.timesteps.tolist() == [80, 40]
    noise = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    got = pipe.rate_distortion(x0_digits, noise=noise, eta=1.0)
    ours = quiet(DDPMDocPipeline(unet=Probe(unet, mean_only=True), scheduler=DDPMDocScheduler.from_config(
        {**config, "variance_type": "fixed_small"})))
    expected = ours.rate_distortion(x0_digits, noise=noise)
    torch.testing.assert_close(got.bound.total, expected.bound.total)


@pytest.mark.parametrize("spacing", ("leading", "linspace", "trailing"))
@pytest.mark.parametrize("scheduler_class", COMPATIBLES, ids=lambda cls: cls.__name__)
def test_every_step_of_the_chain_samples_or_is_refused_by_name(scheduler_class, spacing):
    """K = T: the multistep solvers that step on to σ = 0 cannot take it with leading or linspace spacing (diffusers
    fails inside them: an index past the end, or NaN); they are refused by name, before any work."""
    name = scheduler_class.__name__
    if needs_torchsde(scheduler_class) or name in NOT_DDPM:
        return
    config = DDPMDocScheduler(num_train_timesteps=20, timestep_spacing=spacing).config
    unet = Probe(unet_for(1, False))
    pipe = quiet(DDPMDocPipeline(unet=unet, scheduler=DDPMDocScheduler.from_config(config)))
    pipe.scheduler = scheduler_from_config(scheduler_class, config)
    if name in PAST_ZERO_SOLVERS and spacing != "trailing":
        with pytest.raises(ParameterError, match=f"{name} with timestep_spacing='{spacing}' takes at most T − 1 = 19"):
            pipe(batch_size=1, num_inference_steps=20, output_type="pt")
        assert unet.calls == 0
        with pytest.raises((IndexError, AssertionError, FloatingPointError)):  # why: diffusers' own loop fails
            images = reference_images(unet.inner, scheduler_from_config(scheduler_class, config), 1, 20, 0, False)
            if not torch.isfinite(images).all():
                raise FloatingPointError("NaN")
        pipe(batch_size=1, num_inference_steps=19, output_type="pt")  # T − 1 steps sample
        return
    images = pipe(batch_size=1, num_inference_steps=20, output_type="pt").images
    assert torch.isfinite(images).all()


@pytest.mark.parametrize("steps", (1, 2, 3))
def test_pndm_with_fewer_steps_than_its_runge_kutta_start_is_refused_by_name(steps):
    """PNDM's default start takes 4 Runge–Kutta steps: with fewer, diffusers fails inside ``set_timesteps`` (a numpy
    broadcast error); refused by name before any work, and ``skip_prk_steps=True`` samples them."""
    config = DDPMDocScheduler(num_train_timesteps=20).config
    unet = Probe(unet_for(1, False))
    pipe = quiet(DDPMDocPipeline(unet=unet, scheduler=make_scheduler("pndm", config)))
    with pytest.raises(ParameterError, match=f"is {steps}, but PNDMScheduler's Runge–Kutta start .* at least 4"):
        pipe(batch_size=1, num_inference_steps=steps, output_type="pt")
    assert unet.calls == 0
    with pytest.raises(ValueError, match="broadcast"):  # why: diffusers' own scheduler fails
        make_scheduler("pndm", config).set_timesteps(steps)
    pipe.scheduler = make_scheduler("pndm", config, skip_prk_steps=True)
    assert torch.isfinite(pipe(batch_size=1, num_inference_steps=steps, output_type="pt").images).all()
    assert unet.calls > 0

