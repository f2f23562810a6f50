"""training/train.py end to end, with a tiny UNet and a few steps: exact resume, the 2-process DDP run, the launch
check, Ctrl-C, outputs, and errors that name the flag."""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from hf_ddpm import DDPMDocPipeline
from hf_ddpm.training.checkpointing import latest_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_PY = os.path.join(REPO, "training", "train.py")
TINY_UNET = {
    "sample_size": 8, "in_channels": 1, "out_channels": 2, "block_out_channels": [8, 16], "layers_per_block": 1,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D"], "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
    "norm_num_groups": 4,
}


def load_train_module():
    spec = importlib.util.spec_from_file_location("hf_ddpm_train_script", TRAIN_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train_script = load_train_module()


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "tiny_unet.json"
    path.write_text(json.dumps(TINY_UNET))
    return str(path)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def tiny_args(config, output_dir, *extra):
    """Flags of a run that takes seconds: 20 timesteps (so the importance sampler leaves its warm-up within the
    first step), batches of 256 (5 steps per epoch), a short chain for the sample grid, a 4-timestep final bound."""
    return [
        "--output_dir", str(output_dir), "--model_config_name_or_path", config, "--num_train_timesteps", "20",
        "--train_batch_size", "256", "--learning_rate", "1e-3", "--lr_warmup_steps", "2", "--eval_steps", "0",
        "--final_eval_timesteps", "4", "--num_samples", "4", "--num_inference_steps", "5", "--seed", "3",
        *extra,
    ]


def raw_weights(checkpoint):
    return load_file(os.path.join(checkpoint, "model.safetensors"))


def assert_same_tensors(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resume_is_bit_exact(tmp_path, tiny_config):
    """8 steps straight == 3 steps, a fresh process resuming from the checkpoint, 5 more steps: identical raw
    weights, EMA weights and optimizer moments. The resume point is mid-epoch (5 steps per epoch), so the data
    order after an epoch boundary and skip_first_batches are both exercised; the importance sampler is active."""
    straight, interrupted, resumed = tmp_path / "straight", tmp_path / "interrupted", tmp_path / "resumed"
    train_script.main(tiny_args(tiny_config, straight, "--max_train_steps", "8", "--checkpointing_steps", "4"))
    train_script.main(tiny_args(tiny_config, interrupted, "--max_train_steps", "8", "--checkpointing_steps", "3",
                                "--checkpoints_total_limit", "5"))
    os.makedirs(resumed)
    os.rename(interrupted / "checkpoint-3", resumed / "checkpoint-3")  # only the 3-step state survives
    metrics = train_script.main(
        tiny_args(tiny_config, resumed, "--max_train_steps", "8", "--checkpointing_steps", "3",
                  "--resume_from_checkpoint", "latest")
    )
    assert metrics["global_step"] == 8 and metrics["images_seen"] == 5 * 256
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
    and its standard error, a model card, a sample grid and a loss plot that are real PNGs, pruned checkpoints."""
    out = tmp_path / "run"
    metrics = train_script.main(
        tiny_args(tiny_config, out, "--max_train_steps", "6", "--checkpointing_steps", "2", "--checkpoints_total_limit",
                  "2", "--beta_schedule", "squaredcos_cap_v2", "--save_images_steps", "3", "--eval_steps", "3",
                  "--eval_timesteps", "5")
    )
    pipe = DDPMDocPipeline.from_pretrained(out)
    assert pipe.scheduler.config.beta_schedule == "squaredcos_cap_v2"
    assert pipe.scheduler.config.num_train_timesteps == 20
    assert pipe.unet.config.block_out_channels == [8, 16]
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["global_step"] == 6 and saved["global_batch_size"] == 256 and saved["num_processes"] == 1
    assert saved["test_bits_per_dim_timesteps"] == 4 and saved["num_test_images"] == 359
    assert saved["test_bits_per_dim"] == pytest.approx(metrics["test_bits_per_dim"])
    assert saved["test_bits_per_dim_stderr"] > 0
    assert [entry["step"] for entry in saved["eval_log"]] == [3]
    from PIL import Image

    grid = Image.open(out / "samples.png")
    assert grid.size == (88, 88)  # 2×2 images of 8 px with 2-px borders, enlarged 4× for viewing
    assert Image.open(out / "samples" / "step-000003.png").size == (88, 88)
    assert Image.open(out / "loss.png").format == "PNG"
    assert sorted(os.listdir(out)).count("README.md") == 1
    assert sorted(p for p in os.listdir(out) if p.startswith("checkpoint-")) == ["checkpoint-4", "checkpoint-6"]


def test_resume_from_another_configuration_names_the_flag(tmp_path, tiny_config):
    out = tmp_path / "run"
    train_script.main(tiny_args(tiny_config, out, "--max_train_steps", "2", "--checkpointing_steps", "2"))
    with pytest.raises(ValueError, match="--beta_schedule was 'linear' there, 'squaredcos_cap_v2' now"):
        train_script.main(tiny_args(tiny_config, out, "--max_train_steps", "4", "--resume_from_checkpoint", "latest",
                                    "--beta_schedule", "squaredcos_cap_v2"))
    with pytest.raises(ValueError, match="--resume_from_checkpoint .*no such checkpoint"):
        train_script.main(tiny_args(tiny_config, out, "--resume_from_checkpoint", str(tmp_path / "nowhere")))


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--loss_type", "simple", "--variance_type", "learned"], "--loss_type simple"),
        (["--loss_type", "hybrid", "--variance_type", "fixed_small"], "--loss_type hybrid"),
        (["--dataset_name", "digits", "--train_data_dir", "somewhere"], "--dataset_name or --train_data_dir"),
        (["--num_inference_steps", "2000"], "--num_inference_steps 2000"),
        (["--checkpoints_total_limit", "0"], "--checkpoints_total_limit"),
        (["--mixed_precision", "fp16"], "--mixed_precision fp16"),
        (["--fourier_periods", "16,0"], "--fourier_periods must be 'none' or comma-separated positive numbers"),
    ],
)
def test_contradictory_flags_are_refused_by_name(flags, named, capsys):
    if "fp16" in flags and torch.cuda.is_available():
        pytest.skip("fp16 is valid with a GPU")
    with pytest.raises(SystemExit):
        train_script.parse_args(flags)
    assert named in capsys.readouterr().err


def test_hub_flags_are_checked_before_training(capsys):
    with pytest.raises((SystemExit, ValueError)) as error:
        train_script.parse_args(["--push_to_hub"])
    assert "--hub_model_id" in str(error.value) + capsys.readouterr().err


def test_unservable_resolution_names_the_flag(tmp_path):
    with pytest.raises(ValueError, match="--resolution 12"):
        train_script.main(["--output_dir", str(tmp_path), "--resolution", "12", "--max_train_steps", "1"])
    assert not os.path.exists(tmp_path / "checkpoint-1")


def _launch(args, env_extra, timeout=240):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **env_extra}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", TRAIN_PY, *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def test_two_process_ddp_matches_one_process_with_the_global_batch(tmp_path, tiny_config):
    """ACCELERATE_USE_CPU=1 + --multi_gpu --num_processes 2: real DDP over gloo. Per-process batches of 128 make a
    global batch of 256, so the run must follow the 1-process run with batches of 256 (same images, same draws,
    gradients averaged by DDP) to float rounding; outputs are written once, by the main process."""
    two, one = tmp_path / "two", tmp_path / "one"
    flags = ["--max_train_steps", "3", "--checkpointing_steps", "3"]
    result = _launch(tiny_args(tiny_config, two, *flags, "--train_batch_size", "128"),
                     {"ACCELERATE_USE_CPU": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    train_script.main(tiny_args(tiny_config, one, *flags))
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
    return UNet2DModel.from_config(TINY_UNET).state_dict()[key]


def test_independent_processes_are_stopped(tmp_path, tiny_config):
    """--multi_gpu without a GPU or ACCELERATE_USE_CPU: two processes that do not form a group → a clear error."""
    if torch.cuda.is_available():
        pytest.skip("with GPUs, --multi_gpu forms a real process group")
    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}
    result = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
         "1", "--mixed_precision", "no", "--dynamo_backend", "no", TRAIN_PY,
         *tiny_args(tiny_config, tmp_path / "out", "--max_train_steps", "2")],
        env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=240, cwd=REPO,
    )
    assert result.returncode != 0
    assert "would train independently" in result.stderr and "ACCELERATE_USE_CPU=1" in result.stderr
    assert not os.path.exists(tmp_path / "out" / "model_index.json")


def test_ctrl_c_writes_a_checkpoint_that_resumes(tmp_path, tiny_config):
    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, TRAIN_PY, *tiny_args(tiny_config, out, "--max_train_steps", "100000",
                                              "--checkpointing_steps", "0", "--train_batch_size", "16")],
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
    metrics = train_script.main(tiny_args(tiny_config, out, "--max_train_steps", str(step + 1), "--checkpointing_steps",
                                          "0", "--train_batch_size", "16", "--resume_from_checkpoint", "latest"))
    assert metrics["global_step"] == step + 1 and metrics["images_seen"] == 16
