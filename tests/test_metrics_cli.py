"""`hf-ddpm evaluate --num-samples`: sample quality of a tiny pipeline's samples, wired to hf_ddpm.metrics."""

import json

import pytest
import torch
from helpers import tiny_unet
from test_metrics_models import _tiny_dinov2

from hf_ddpm import DDPMDocPipeline, DDPMDocScheduler
from hf_ddpm.cli import main
from hf_ddpm.data import digits_split
from hf_ddpm.image_seeds import image_generators
from hf_ddpm.metrics import sample_quality


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    model = tmp_path_factory.mktemp("tiny-pipeline")
    DDPMDocPipeline(unet=tiny_unet(), scheduler=DDPMDocScheduler(num_train_timesteps=20)).save_pretrained(model)
    features = tmp_path_factory.mktemp("tiny-dinov2")
    _tiny_dinov2(features)
    return str(model), str(features)


def test_evaluate_reports_sample_quality_of_the_seeded_samples(folders, tmp_path):
    model, features = folders
    out = tmp_path / "metrics.json"
    main(["evaluate", "--model", model, "--timesteps", "4", "--num-samples", "12", "--num-inference-steps", "3",
          "--seed", "4", "--feature-model", features, "--json", str(out)])
    record = json.loads(out.read_text())["sample_quality"]

    pipe = DDPMDocPipeline.from_pretrained(model)
    images = pipe(batch_size=12, generator=image_generators(4, range(12)), num_inference_steps=3,
                  output_type="pt").images  # image i from its generator seeded by (4, i)
    samples = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    expected = sample_quality(samples, digits_split("test")[0], feature_model=features, progress=False)
    assert record["fd"] == pytest.approx(expected["fd"], rel=1e-6)
    assert (record["precision"], record["recall"]) == (expected["precision"], expected["recall"])
    assert record["fd_name"] == "FD_DINOv2" and record["inception_score"] is None
    assert record["num_samples"] == 12 and record["num_reference"] == 359 and record["num_inference_steps"] == 3


@pytest.mark.parametrize("argv,message", [
    (["--num-samples", "-1"], "argument --num-samples: must be an integer ≥ 0, got -1"),
    (["--num-samples", "4", "--num-inference-steps", "2", "--feature-model", "./no/such/folder"],
     "feature_model: './no/such/folder' is neither an existing folder"),
])
def test_evaluate_bad_sample_quality_options_exit_with_a_named_error(folders, argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--model", folders[0], "--timesteps", "4", *argv])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
