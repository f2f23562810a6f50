"""Class-conditional training (classifier-free guidance): the label dropout as drawn, exact resume with labels, a run on
an image folder's class sub-folders whose saved UNet plain diffusers calls with labels, and bad settings refused by
name before any work, through the library and the command line."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import UNet2DModel
from PIL import Image

from hf_ddpm import DDPMDocPipeline, DDPMDocScheduler, UniformSampler
from hf_ddpm.data import digits_split, load_image_data
from hf_ddpm.errors import ParameterError
from hf_ddpm.training.config import RunConfig
from hf_ddpm.training.step import training_step
from helpers import TINY_UNET
from training_support import REPO, TRAIN_PY, raw_weights, train_tiny

pytestmark = pytest.mark.usefixtures("hub_offline")


class LabelRecorder(torch.nn.Module):
    """The tiny UNet, keeping the labels each call received (the dropout under test happens before the call)."""

    def __init__(self, unet):
        super().__init__()
        self.unet, self.seen = unet, []

    def forward(self, sample, timestep, class_labels=None):
        self.seen.append(class_labels.clone())
        return self.unet(sample, timestep, class_labels=class_labels)


def _step_labels(recorder, labels, *, micro_step, rank=0, processes=1, p=0.25, null=3):
    accelerator = SimpleNamespace(process_index=rank, num_processes=processes)
    scheduler, sampler = DDPMDocScheduler(num_train_timesteps=20), UniformSampler(20)
    clean = torch.zeros(len(labels), 1, 8, 8)
    training_step(accelerator, recorder, scheduler, sampler, clean, seed=5, micro_step=micro_step, loss_type="simple",
                  importance=False, class_labels=labels, label_dropout=p, null_class_label=null)
    return recorder.seen[-1]


def test_the_observed_label_dropout_rate_and_its_draws():
    """Over 3,200 labels, p = 0.25 of them become the null label (within 4 standard errors), the others are kept; the
    draws are a function of (seed, micro-step), and two processes' slices make the one-process draw."""
    torch.manual_seed(0)
    recorder = LabelRecorder(UNet2DModel.from_config({**TINY_UNET, "num_class_embeds": 4}))
    labels = torch.arange(32) % 3
    seen = torch.stack([_step_labels(recorder, labels, micro_step=i) for i in range(100)])
    dropped = seen == 3
    n = dropped.numel()
    assert abs(float(dropped.double().mean()) - 0.25) < 4 * math.sqrt(0.25 * 0.75 / n)
    assert torch.equal(seen[~dropped], labels.expand_as(seen)[~dropped])
    assert torch.equal(_step_labels(recorder, labels, micro_step=7), seen[7])
    halves = [_step_labels(recorder, labels[r * 16:(r + 1) * 16], micro_step=7, rank=r, processes=2) for r in (0, 1)]
    assert torch.equal(torch.cat(halves), seen[7])
    assert not _step_labels(recorder, labels, micro_step=0, p=0.0).eq(3).any()


def test_resume_with_labels_is_bit_exact(tmp_path, tiny_config):
    """A class-conditional run of 8 steps == 3 steps, then a fresh run resuming from the checkpoint: identical raw and
    EMA weights, label embeddings included — and those did train, null label included."""
    settings = dict(class_conditional=True, label_dropout=0.3, max_train_steps=8)
    straight, interrupted, resumed = tmp_path / "straight", tmp_path / "interrupted", tmp_path / "resumed"
    train_tiny(tiny_config, straight, checkpointing_steps=4, **settings)
    train_tiny(tiny_config, interrupted, checkpointing_steps=3, checkpoints_total_limit=5, **settings)
    os.makedirs(resumed)
    os.rename(interrupted / "checkpoint-3", resumed / "checkpoint-3")
    train_tiny(tiny_config, resumed, checkpointing_steps=3, resume_from_checkpoint="latest", **settings)
    a, b = raw_weights(straight / "checkpoint-8"), raw_weights(resumed / "checkpoint-8")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ema_a = DDPMDocPipeline.from_pretrained(straight).unet.state_dict()
    ema_b = DDPMDocPipeline.from_pretrained(resumed).unet.state_dict()
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)
    torch.manual_seed(3)  # the tiny run's seed: its initial weights
    initial = UNet2DModel.from_config({**TINY_UNET, "out_channels": 2, "num_class_embeds": 11}).state_dict()
    embedding = a["class_embedding.weight"]
    assert embedding.shape == (11, 32)  # the ten digits and the null label 10
    assert ((embedding - initial["class_embedding.weight"]).abs().amax(dim=1) > 0).all()


def _class_folders(root, counts=(("zero", 0, 12), ("one", 1, 12))):
    images, labels = digits_split("train")
    for name, digit, count in counts:
        folder = root / "train" / name
        folder.mkdir(parents=True)
        for i, image in enumerate(images[labels == digit][:count, 0]):
            Image.fromarray(image).save(folder / f"{i}.png")
    return root


def test_a_conditional_run_on_an_image_folder_with_class_subfolders(tmp_path, tiny_config):
    """The sub-folders are the classes: the saved pipeline names them, has the null label K = 2 and the training
    label frequencies; plain diffusers loads the UNet and calls it with labels; the final evaluation reports the
    conditional, marginal and null-label bounds and the generative classifier, and the pipeline samples by class
    name; --figures adds the class grid and the guidance trade-off."""
    root = _class_folders(tmp_path / "images", (("zero", 0, 15), ("one", 1, 9)))
    data = dict(train_data_dir=str(root), validation_fraction=0.25, train_batch_size=6, max_train_steps=2,
                checkpointing_steps=0, class_conditional=True, fourier_periods=(), figures=True)  # the plain preset
    record = train_tiny(tiny_config, tmp_path / "out", **data)
    pipe = DDPMDocPipeline.from_pretrained(tmp_path / "out")
    expected = load_image_data(train_data_dir=str(root), validation_fraction=0.25, seed=3, label_column="label")
    counts = np.bincount(expected.train.labels, minlength=2)
    assert pipe.conditioning.class_names == ("one", "zero") == expected.class_names
    assert pipe.config.null_class_label == 2 and pipe.unet.config.num_class_embeds == 3
    assert pipe.conditioning.class_frequencies == pytest.approx(tuple(counts / counts.sum()))
    plain = UNet2DModel.from_pretrained(tmp_path / "out", subfolder="unet")
    x, t, y = torch.randn(2, 1, 8, 8), torch.tensor([3, 9]), torch.tensor([0, 1])
    torch.testing.assert_close(plain(x, t, class_labels=y).sample, pipe.unet(x, t, class_labels=y).sample)
    assert not torch.allclose(plain(x, t, class_labels=y).sample, plain(x, t, class_labels=1 - y).sample)
    bounds = record.results.class_bounds
    assert set(bounds) == {"conditional", "marginal", "null_label", "classifier_accuracy", "classifier_timesteps"}
    assert bounds["conditional"]["bits_per_dim"] == record.results.test_bits_per_dim
    assert 0.0 <= bounds["classifier_accuracy"] <= 1.0
    assert bounds["classifier_timesteps"] == 4  # at least 4 (T // 4K = 20 // 8 = 2), at most the tiny run's final_eval_timesteps 4
    images = pipe(class_labels=["zero", "one"], num_inference_steps=3, output_type="pt")
    assert images.class_labels.tolist() == [1, 0]
    # --figures: the class grid and the guidance trade-off, with the card's figures named in the record; Figs. 7–8
    # are left to `hf-ddpm figures`
    assert {"progressive", "class_grid", "guidance_tradeoff"} <= set(record.images)
    drawn = {path.name for path in (tmp_path / "out" / "figures").iterdir()}
    assert "rate_distortion.csv" in drawn and not {"shared_latents.png", "interpolation.png"} & drawn
    rows = (tmp_path / "out" / "figures" / "guidance_tradeoff.csv").read_text().splitlines()
    assert rows[0].split(",")[0] == "guidance_scale" and len(rows) == 1 + 7


def test_labels_that_are_missing_or_wrong_are_refused_before_training(tmp_path, tiny_config):
    unlabelled = tmp_path / "flat" / "train"
    unlabelled.mkdir(parents=True)
    for i, image in enumerate(digits_split("train")[0][:8, 0]):
        Image.fromarray(image).save(unlabelled / f"{i}.png")
    labelled = _class_folders(tmp_path / "labelled")
    common = dict(validation_fraction=0.25, train_batch_size=4, max_train_steps=1, class_conditional=True)
    cases = [
        (dict(train_data_dir=str(tmp_path / "flat")), "label_column", "'label' is not a column"),
        (dict(train_data_dir=str(labelled), label_column="species"), "label_column", "'species' is not a column"),
        (dict(train_data_dir=str(labelled), label_column="image"), "label_column", "not integer class labels"),
    ]
    for settings, parameter, message in cases:
        with pytest.raises(ParameterError, match=message) as error:
            train_tiny(tiny_config, tmp_path / "out", **common, **settings)
        assert error.value.parameter == parameter
        assert not (tmp_path / "out" / "unet").exists()
    for value in (1.0, -0.1, float("nan")):
        with pytest.raises(ParameterError, match=r"must lie in \[0, 1\)") as error:
            RunConfig.from_settings(dict(class_conditional=True, label_dropout=value))
        assert error.value.parameter == "label_dropout"


def test_bad_labels_on_the_command_line_are_one_error_line_naming_the_flag(tmp_path):
    _class_folders(tmp_path / "labelled")
    cases = {
        "--label_dropout must lie in [0, 1), got 1.0": ["--class_conditional", "--label_dropout", "1"],
        "--label_column 'species' is not a column": ["--class_conditional", "--train_data_dir",
                                                      str(tmp_path / "labelled"), "--label_column", "species"],
    }
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    for expected, flags in cases.items():
        result = subprocess.run([sys.executable, TRAIN_PY, "--output_dir", str(tmp_path / "out"), *flags], env=env,
                                capture_output=True, text=True, cwd=REPO, timeout=240)
        lines = [line for line in result.stderr.splitlines() if "error:" in line]
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert len(lines) == 1 and lines[0].startswith("train.py: error: " + expected), result.stderr[-2000:]
