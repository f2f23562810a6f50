"""Training runs with a tiny UNet and a few steps, through the library (``Trainer``) and the command line: exact
resume, the 2-process DDP run, the launch check, Ctrl-C, outputs, and errors that name the setting."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from hf_ddpm import DDPMDocPipeline
from hf_ddpm.errors import ParameterError
from hf_ddpm.metrics import class_balance_chi2
from hf_ddpm.training.checkpointing import latest_checkpoint
from hf_ddpm.training.config import RunConfig
from hf_ddpm.training.trainer import Trainer
from helpers import TINY_UNET
from training_support import REPO, TRAIN_PY, as_flags, launch, raw_weights, tiny_settings, train_tiny


pytestmark = pytest.mark.usefixtures("hub_offline")


def assert_same_tensors(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resume_is_bit_exact(tmp_path, tiny_config):
    """8 steps straight == 3 steps, a fresh process resuming from the checkpoint, 5 more steps: identical raw
    weights, EMA weights and optimizer moments. The resume point is mid-epoch (5 steps per epoch), so the data
    order after an epoch boundary and skip_first_batches are both exercised; the importance sampler is active."""
    straight, interrupted, resumed = tmp_path / "straight", tmp_path / "interrupted", tmp_path / "resumed"
    train_tiny(tiny_config, straight, max_train_steps=8, checkpointing_steps=4)
    train_tiny(tiny_config, interrupted, max_train_steps=8, checkpointing_steps=3, checkpoints_total_limit=5)
    os.makedirs(resumed)
    os.rename(interrupted / "checkpoint-3", resumed / "checkpoint-3")  # only the 3-step state survives
    metrics = train_tiny(tiny_config, resumed, max_train_steps=8, checkpointing_steps=3,
                         resume_from_checkpoint="latest").results
    assert metrics.global_step == 8 and metrics.images_seen == 5 * 256
    assert_same_tensors(raw_weights(straight / "checkpoint-8"), raw_weights(resumed / "checkpoint-8"))
    optimizer_a = torch.load(straight / "checkpoint-8" / "optimizer.bin", weights_only=False)["state"]
    optimizer_b = torch.load(resumed / "checkpoint-8" / "optimizer.bin", weights_only=False)["state"]
    for index in optimizer_a:
        assert torch.equal(optimizer_a[index]["exp_avg"], optimizer_b[index]["exp_avg"])
    ema_a = DDPMDocPipeline.from_pretrained(straight).unet.state_dict()
    ema_b = DDPMDocPipeline.from_pretrained(resumed).unet.state_dict()
    assert_same_tensors(ema_a, ema_b)
    # the saved pipeline holds the EMA weights, not the raw ones
    with open(straight / "checkpoint-8" / "custom_checkpoint_0.pkl", "rb") as handle:
        shadow = torch.load(handle, weights_only=False)["shadow_params"]
    for saved, ema in zip(ema_a.values(), shadow):
        assert torch.equal(saved, ema)
    assert not all(torch.equal(ema_a[k], v) for k, v in raw_weights(straight / "checkpoint-8").items())
    # the importance sampler's history and the loss history came back too
    with open(resumed / "checkpoint-8" / "custom_checkpoint_2.pkl", "rb") as handle:
        history = torch.load(handle, weights_only=False)
    assert history["steps"] == list(range(1, 9))


def test_outputs_of_a_run(tmp_path, tiny_config):
    """The output folder: a loadable pipeline whose scheduler is the configured one, metrics with the held-out bound
    and its standard error, the evaluation during training with its sample quality, a model card, a sample grid, a
    loss plot and an evaluation plot that are real PNGs, pruned checkpoints."""
    out = tmp_path / "run"
    record = train_tiny(tiny_config, out, max_train_steps=6, checkpointing_steps=2, checkpoints_total_limit=2,
                        beta_schedule="squaredcos_cap_v2", save_images_steps=3, eval_steps=3, eval_timesteps=5)
    metrics = record.results
    pipe = DDPMDocPipeline.from_pretrained(out)
    # the importance sampler's √E[L_t²] at the end (as in the last checkpoint) is saved as the bound's proposal
    states = [torch.load(path, weights_only=False) for path in sorted((out / "checkpoint-6").glob("custom_*.pkl"))]
    (history,) = [state for state in states if isinstance(state, dict) and set(state) == {"losses", "counts"}]
    np.testing.assert_allclose(pipe.config.bound_proposal, np.sqrt((history["losses"] ** 2).mean(axis=1)), rtol=1e-15)
    assert pipe.scheduler.config.beta_schedule == "squaredcos_cap_v2"
    assert pipe.scheduler.config.num_train_timesteps == 20
    assert pipe.unet.config.block_out_channels == [8, 16]
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["global_step"] == 6 and saved["global_batch_size"] == 256 and saved["num_processes"] == 1
    assert saved["test_bits_per_dim_timesteps"] == 4 and saved["num_test_images"] == 359
    assert saved["test_bits_per_dim"] == pytest.approx(metrics.test_bits_per_dim)
    assert saved["test_bits_per_dim_stderr"] > 0
    assert saved["threads_per_process"] == 1  # OMP_NUM_THREADS=1, set for the tests (conftest), is a user's choice
    assert saved["threads_per_process"] == metrics.threads_per_process and "1 thread" in saved["hardware"]
    (evaluation,) = saved["eval_log"]
    assert evaluation["step"] == 3 and evaluation["eval_quality_setting"] == "8 samples, 5-step chain"
    assert sum(evaluation["eval_class_histogram"]) == 8 and evaluation["eval_fd_name"] == "FD (digits classifier)"
    assert evaluation["eval_class_chi2"] == pytest.approx(class_balance_chi2(evaluation["eval_class_histogram"]))
    assert evaluation["eval_fd"] > 0 and 1 <= evaluation["eval_score"] <= 10

    grid = Image.open(out / "samples.png")
    assert grid.size == (88, 88)  # 2×2 images of 8 px with 2-px borders, enlarged 4× for viewing
    assert Image.open(out / "samples" / "step-000003.png").size == (88, 88)
    assert Image.open(out / "loss.png").format == "PNG" and Image.open(out / "evaluations.png").format == "PNG"
    assert record.images == {"samples": "samples.png", "loss": "loss.png", "evaluations": "evaluations.png"}
    assert sorted(os.listdir(out)).count("README.md") == 1
    assert sorted(p for p in os.listdir(out) if p.startswith("checkpoint-")) == ["checkpoint-4", "checkpoint-6"]


def test_resume_from_another_configuration_names_the_setting(tmp_path, tiny_config):
    out = tmp_path / "run"
    train_tiny(tiny_config, out, max_train_steps=2, checkpointing_steps=2)
    with pytest.raises(ParameterError, match="beta_schedule was 'linear' there, 'squaredcos_cap_v2' now") as error:
        train_tiny(tiny_config, out, max_train_steps=4, resume_from_checkpoint="latest",
                   beta_schedule="squaredcos_cap_v2")
    assert error.value.parameter == "resume_from_checkpoint"
    with pytest.raises(ParameterError, match="resume_from_checkpoint .*no such checkpoint"):
        train_tiny(tiny_config, out, resume_from_checkpoint=str(tmp_path / "nowhere"))


@pytest.mark.parametrize(
    "settings, parameter, message",
    [
        (dict(loss_type="simple", variance_type="learned"), "loss_type", "'simple' does not train the variance"),
        (dict(loss_type="hybrid", variance_type="fixed_small"), "loss_type", "'hybrid' trains a learned variance"),
        (dict(dataset_name="digits", train_data_dir="somewhere"), "train_data_dir", "choose one source"),
        (dict(num_inference_steps=2000), "num_inference_steps", "must not exceed num_train_timesteps"),
        (dict(checkpoints_total_limit=0), "checkpoints_total_limit", "≥ 1"),
        (dict(mixed_precision="fp16"), "mixed_precision", "needs a GPU"),
        (dict(fourier_periods=(16.0, 0.0)), "fourier_periods", "positive numbers"),
        (dict(learning_rate=-1.0), "learning_rate", r"must lie in \(0, inf\), got -1.0"),
        (dict(ema_max_decay=1.0), "ema_max_decay", r"must lie in \(0, 1\)"),
        (dict(simple_weight=0.0), "simple_weight", r"must lie in \(0, inf\), got 0.0"),
        (dict(importance_uniform_mix=0.0), "importance_uniform_mix", r"must lie in \(0, 1\], got 0.0"),
        (dict(importance_uniform_mix=1.5), "importance_uniform_mix", r"must lie in \(0, 1\], got 1.5"),
        (dict(train_batch_size=0), "train_batch_size", "≥ 1"),
        (dict(eval_timesteps=3), "eval_timesteps", "≥ 4"),
        (dict(validation_fraction=1.5), "validation_fraction", r"\(0, 1\)"),
        (dict(push_to_hub=True), "hub_model_id", "needed by push_to_hub"),
        (dict(beta_start=0.5, beta_end=1.5), None, "betas must lie in"),
        (dict(num_samples=3), "num_samples", "≥ 4"),  # the digits' final samples are judged (FD with k = 3)
        (dict(max_eval_images=3), "max_eval_images", "≥ 4"),
        (dict(train_data_dir="somewhere", classifier="digits"), "classifier", "needs a feature_model"),
    ],
)
def test_bad_settings_are_refused_by_name_before_any_work(settings, parameter, message):
    if settings.get("mixed_precision") == "fp16" and torch.cuda.is_available():
        pytest.skip("fp16 is valid with a GPU")
    with pytest.raises(ValueError, match=message) as error:
        RunConfig.from_settings(settings)
    assert getattr(error.value, "parameter", None) == parameter or parameter is None


def test_unservable_resolution_names_the_setting_before_reading_data(tmp_path):
    with pytest.raises(ParameterError, match="resolution 12 has no UNet preset") as error:
        Trainer(RunConfig.from_settings(dict(output_dir=str(tmp_path), resolution=12, max_train_steps=1)))
    assert error.value.parameter == "resolution"
    assert not os.path.exists(tmp_path / "checkpoint-1")


def test_two_process_ddp_matches_one_process_with_the_global_batch(tmp_path, tiny_config):
    """ACCELERATE_USE_CPU=1 + --multi_gpu --num_processes 2: real DDP over gloo. Per-process batches of 128 make a
    global batch of 256, so the run must follow the 1-process run with batches of 256 (same images, same draws,
    gradients averaged by DDP) to float rounding; outputs are written once, by the main process."""
    two, one = tmp_path / "two", tmp_path / "one"
    steps = dict(max_train_steps=3, checkpointing_steps=3)
    result = launch(tiny_settings(tiny_config, two, **steps, train_batch_size=128), {"ACCELERATE_USE_CPU": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    train_tiny(tiny_config, one, **steps)
    metrics = json.loads((two / "metrics.json").read_text())
    assert metrics["num_processes"] == 2 and metrics["global_batch_size"] == 256
    assert metrics["global_step"] == 3 and metrics["images_seen"] == 3 * 256
    assert result.stdout.count("held-out bound:") == 1  # the final evaluation ran on the main process only
    assert sorted(f for f in os.listdir(two / "checkpoint-3") if f.startswith("random_states")) == [
        "random_states_0.pkl", "random_states_1.pkl"]
    w2, w1 = raw_weights(two / "checkpoint-3"), raw_weights(one / "checkpoint-3")
    for key in w1:
        torch.testing.assert_close(w2[key], w1[key], rtol=1e-4, atol=1e-5)
    moved = max((w1[k] - load_initial(k)).abs().max() for k in ["conv_in.weight"])
    assert moved > 1e-4  # the weights did train, so agreeing is not trivial
    assert DDPMDocPipeline.from_pretrained(two).unet.config.block_out_channels == [8, 16]


def load_initial(key):
    from diffusers import UNet2DModel

    torch.manual_seed(3)
    return UNet2DModel.from_config({**TINY_UNET, "out_channels": 2}).state_dict()[key]


def test_independent_processes_are_stopped(tmp_path, tiny_config):
    """--multi_gpu without a GPU or ACCELERATE_USE_CPU: two processes that do not form a group → a clear error."""
    if torch.cuda.is_available():
        pytest.skip("with GPUs, --multi_gpu forms a real process group")
    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}
    result = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
         "1", "--mixed_precision", "no", "--dynamo_backend", "no", TRAIN_PY,
         *as_flags(tiny_settings(tiny_config, tmp_path / "out", max_train_steps=2))],
        env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=240, cwd=REPO,
    )
    assert result.returncode != 0
    assert "would train independently" in result.stderr and "ACCELERATE_USE_CPU=1" in result.stderr
    assert not os.path.exists(tmp_path / "out" / "model_index.json")


def test_ctrl_c_writes_a_checkpoint_that_resumes(tmp_path, tiny_config):
    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, TRAIN_PY, *as_flags(tiny_settings(tiny_config, out, max_train_steps=100000,
                                                           checkpointing_steps=0, train_batch_size=16))],
        env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, cwd=REPO,
    )
    seen = ""
    deadline = time.time() + 180
    while "training:" not in seen or "/100000" not in seen.split("training:")[-1]:
        seen += process.stdout.read(1)
        assert time.time() < deadline and process.poll() is None, seen[-2000:]
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=120)
    assert process.returncode == 130, (seen + rest)[-2000:]
    checkpoint = latest_checkpoint(str(out))
    assert checkpoint is not None, (seen + rest)[-2000:]
    step = json.loads(open(os.path.join(checkpoint, "checkpoint.json")).read())["step"]
    assert step >= 1 and f"stopped on request at step {step}" in rest
    metrics = train_tiny(tiny_config, out, max_train_steps=step + 1, checkpointing_steps=0, train_batch_size=16,
                         resume_from_checkpoint="latest").results
    assert metrics.global_step == step + 1 and metrics.images_seen == 16


def test_bad_input_on_the_command_line_is_one_error_line_naming_the_flag(tmp_path, tiny_config):
    """What a user of training/train.py sees: exit status 2 and one `error:` line naming the flag, no traceback —
    for values refused by the configuration and for data, presets and checkpoints found wanting while building."""
    broken = tmp_path / "images" / "train"
    broken.mkdir(parents=True)
    (broken / "broken.png").write_bytes(b"not a png")
    for i in range(3):  # enough images to hold some out, so that every one is decoded
        Image.fromarray(np.full((8, 8), 50 * i, np.uint8)).save(broken / f"{i}.png")
    cases = {
        "--resolution 7 has no UNet preset": ["--resolution", "7"],
        "--dataset_name 'tiny-org/not-cached': could not be loaded": ["--dataset_name", "tiny-org/not-cached"],
        "--train_data_dir ": ["--train_data_dir", str(tmp_path / "images")],
        "--resume_from_checkpoint ": ["--resume_from_checkpoint", str(tmp_path / "nowhere")],
        "--learning_rate must lie in (0, inf), got -1.0": ["--learning_rate", "-1"],
        "argument --fourier_periods: must be 'none' or comma-separated positive numbers": ["--fourier_periods", "16,x"],
        "--loss_type 'simple' does not train the variance": ["--loss_type", "simple"],
    }
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    processes = {expected: subprocess.Popen([sys.executable, TRAIN_PY, "--output_dir", str(tmp_path / "out"), *flags],
                                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
                 for expected, flags in cases.items()}
    errors = {}
    for expected, process in processes.items():
        _, stderr = process.communicate(timeout=240)
        lines = [line for line in stderr.splitlines() if "error:" in line]
        assert process.returncode == 2 and "Traceback" not in stderr, stderr[-2000:]
        assert len(lines) == 1 and lines[0].startswith("train.py: error: " + expected), stderr[-2000:]
        errors[expected] = lines[0]
    assert "broken.png" in errors["--train_data_dir "] and "cannot be decoded" in errors["--train_data_dir "]
    assert "no such checkpoint folder" in errors["--resume_from_checkpoint "]
    assert not os.path.exists(tmp_path / "out" / "model_index.json")
