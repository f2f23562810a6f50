"""The held-out bound estimate of hf_ddpm.training: unbiased over the drawn timesteps, with an unbiased variance
estimate, checked exhaustively over every possible subset; and equal to the full bound when K = T."""

from __future__ import annotations

import itertools

import torch
from diffusers import UNet2DModel

from hf_ddpm import DDPMDocScheduler, bits_per_dim
from hf_ddpm.likelihood import VariationalBound
from hf_ddpm.evaluation import summarize_bound
from hf_ddpm.training import estimate_timesteps, held_out_bound


def test_estimate_is_unbiased_and_its_variance_estimate_too():
    """T = 10, 4 exact + 3 drawn from the other 6: over all C(6, 3) = 20 subsets the estimate averages to the full
    sum, and the estimated variance (the squared standard error) averages to the estimate's true variance."""
    T, exact, drawn = 10, 4, 3
    generator = torch.Generator().manual_seed(0)
    all_terms = torch.rand(1, T, generator=generator, dtype=torch.float64) * torch.linspace(3, 0.1, T)
    prior = torch.tensor([1e-3], dtype=torch.float64)
    full = float(prior + all_terms.sum())
    estimates, variances = [], []
    for subset in itertools.combinations(range(exact, T), drawn):
        timesteps = torch.tensor(list(range(exact)) + list(subset))
        bound = VariationalBound(total=torch.zeros(1), prior=prior, terms=all_terms[:, timesteps], timesteps=timesteps)
        summary = summarize_bound(bound, T, exact=exact)
        estimates.append(summary.bits_per_dim)
        variances.append(summary.standard_error**2)
        parts_sum = summary.prior + (summary.decoder or 0.0) + summary.rate
        assert abs(parts_sum - summary.bits_per_dim) < 1e-12
    estimates = torch.tensor(estimates, dtype=torch.float64)
    assert abs(float(estimates.mean()) - full) < 1e-12
    true_variance = float(((estimates - full) ** 2).mean())
    assert abs(sum(variances) / len(variances) - true_variance) < 1e-12


def test_estimate_timesteps_layout():
    timesteps, exact = estimate_timesteps(1000, 100, seed=3)
    assert exact == 50 and len(timesteps) == 100 and len(set(timesteps.tolist())) == 100
    assert timesteps[:50].tolist() == list(range(50)) and int(timesteps[50:].min()) >= 50
    assert estimate_timesteps(1000, 1000, seed=3) is None


def test_full_bound_matches_bits_per_dim_and_chunking():
    """K = T: the plain full bound of hf_ddpm.likelihood, the same whether the images go through in one chunk or
    several (the noise stream is drawn per chunk, so compare against bits_per_dim chunk by chunk)."""
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=2, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4).eval()
    scheduler = DDPMDocScheduler(num_train_timesteps=12, variance_type="learned_range", beta_start=1e-5)
    images = torch.randint(0, 17, (6, 1, 8, 8)).float() * (255 / 16)
    images = images.round() / 127.5 - 1
    summary = held_out_bound(unet, scheduler, images, num_timesteps=None, seed=5, batch_size=4)
    generator = torch.Generator().manual_seed(5)
    reference = torch.cat([bits_per_dim(unet, scheduler, chunk, generator=generator).total for chunk in images.split(4)])
    assert abs(summary.bits_per_dim - float(reference.double().mean())) < 1e-9
    assert summary.num_timesteps == 12 and summary.num_images == 6
