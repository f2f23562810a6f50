"""The parts of evaluation at scale (hf_ddpm.distributed_eval, hf_ddpm.metrics.reference_stats,
hf_ddpm.metrics.inception): per-image bounds with per-image noise, reference statistics, a TorchScript Inception."""

import numpy as np
import pytest
import torch
from helpers import tiny_unet

from hf_ddpm import DDPMDocPipeline, DDPMDocScheduler
from hf_ddpm.cli import main
from hf_ddpm.data import digits_split
from hf_ddpm.distributed_eval import gathered_bound
from hf_ddpm.errors import ParameterError
from hf_ddpm.image_seeds import BOUND, image_generators
from hf_ddpm.likelihood import estimate_bound
from hf_ddpm.metrics import frechet_distance
from hf_ddpm.metrics.quality import QualityModels
from hf_ddpm.metrics.reference_stats import ReferenceStats
from hf_ddpm.timestep_plan import TimestepPlan


def test_the_gathered_bound_is_each_images_bound_with_its_own_noise():
    pipe = DDPMDocPipeline(unet=tiny_unet(), scheduler=DDPMDocScheduler(num_train_timesteps=20))
    x0 = torch.from_numpy(digits_split("test")[0][:10]).float() / 127.5 - 1.0
    plan = TimestepPlan.uniform(20, [0, 3, 11, 19])
    bound = gathered_bound(pipe.unet, pipe.scheduler, x0, plan, seed=6, batch_size=4)
    for j in (0, 5, 9):  # image j alone, ε from its generator (seed, j): the batches it went in do not matter
        alone = estimate_bound(pipe.unet, pipe.scheduler, x0[j:j + 1], plan,
                               generator=image_generators(6, [j], BOUND))
        torch.testing.assert_close(bound.terms[j], alone.terms[0], rtol=1e-6, atol=1e-9)
        assert float(bound.total[j]) == pytest.approx(float(alone.total[0]), rel=1e-6)


def test_reference_stats_round_trip_and_refuse_other_features(tmp_path):
    stats_path = str(tmp_path / "stats.npz")
    main(["reference-stats", "--dataset", "digits", "--split", "test", "--out", stats_path])
    models = QualityModels()
    features = models.features(digits_split("test")[0])
    stats = ReferenceStats.load(stats_path, models.feature_model)
    np.testing.assert_allclose(stats.mean, features.mean(axis=0), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(stats.covariance, np.cov(features, rowvar=False), rtol=1e-9, atol=1e-15)
    assert stats.num_images == 359 and stats.feature_model == models.feature_model and "split 'test'" in stats.source
    samples = models.features(digits_split("train")[0][:40])
    assert stats.frechet_distance(samples) == pytest.approx(frechet_distance(samples, features), rel=1e-9)
    refused = (r"reference '.*stats\.npz' was computed with the features of 'hf-ddpm digits evaluator v\d+', but "
               r"this evaluation uses 'other/model'")
    with pytest.raises(ParameterError, match=refused):
        ReferenceStats.load(stats_path, "other/model")


def test_a_torchscript_inception_plugs_in_as_feature_model_and_classifier(tmp_path):
    """The plumbing of the papers' Inception (its TorchScript interface: images in [0, 255] of any size,
    ``return_features`` → pool features, ``no_output_bias`` → softmax) with a scripted network of that interface:
    the real file cannot be downloaded here."""

    class PoolAndClassify(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.features = torch.nn.Linear(3, 16)
            self.output = torch.nn.Linear(16, 5)

        def forward(self, img: torch.Tensor, return_features: bool = False, use_fp16: bool = False,
                    no_output_bias: bool = False) -> torch.Tensor:
            pooled = self.features(img.mean(dim=(2, 3)) / 255.0)
            if return_features:
                return pooled
            logits = pooled @ self.output.weight.t() if no_output_bias else self.output(pooled)
            return torch.softmax(logits, dim=1)

    torch.manual_seed(0)
    network = PoolAndClassify()
    path = str(tmp_path / "stand-in.pt")
    torch.jit.script(network).save(path)
    grey = digits_split("test")[0][:12]
    models = QualityModels(path, device="cpu", progress=False)
    features, probs = models.sample_outputs(grey)
    rgb = torch.from_numpy(grey).float().expand(-1, 3, -1, -1)
    with torch.no_grad():
        np.testing.assert_allclose(features, network(rgb, return_features=True).double().numpy(), rtol=1e-6)
        np.testing.assert_allclose(probs, network(rgb, no_output_bias=True).double().numpy(), rtol=1e-6)
    numbers = models.numbers(features, probs, models.features(digits_split("test")[0][12:30]))
    assert numbers["fd_name"] == "FD (stand-in.pt)" and numbers["score_name"] == "IS (stand-in.pt)"
    assert len(numbers["inception_score_10_splits"]) == 2 and numbers["class_histogram"] is not None
