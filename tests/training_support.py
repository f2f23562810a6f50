"""Tiny training runs for the tests: one settings dict, run in this process through the library
(``Trainer(RunConfig).run()``) or as the command line users run (``training/train.py`` with the same settings as
flags, in a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from safetensors.torch import load_file

from hf_ddpm.training.config import RunConfig
from hf_ddpm.training.trainer import Trainer
from helpers import TINY_UNET

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_PY = os.path.join(REPO, "training", "train.py")
TINY_LEARNED_UNET = {**TINY_UNET, "out_channels": 2}  # the digits' default learns its variances
DEFAULTS = RunConfig().settings()


def write_tiny_config(folder) -> str:
    """The tiny UNet's config as a file, for model_config_name_or_path."""
    path = os.path.join(folder, "tiny_unet.json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(TINY_LEARNED_UNET, handle)
    return path


def tiny_settings(config: str, output_dir, **extra) -> dict:
    """A run that takes seconds: 20 timesteps (so the importance sampler leaves its warm-up within the first step),
    batches of 256 (5 steps per epoch), short chains for the sample grid and the evaluations' samples, a 4-timestep
    final bound, no paper's figures (tests/test_figures.py runs them)."""
    return dict(output_dir=str(output_dir), model_config_name_or_path=config, num_train_timesteps=20,
                train_batch_size=256, learning_rate=1e-3, lr_warmup_steps=2, eval_steps=0, final_eval_timesteps=4,
                num_samples=4, num_inference_steps=5, eval_samples=8, eval_inference_steps=5, seed=3,
                figures=False) | extra


def train_tiny(config: str, output_dir, **extra):
    """Run :func:`tiny_settings` in this process; the run's record."""
    return Trainer(RunConfig.from_settings(tiny_settings(config, output_dir, **extra))).run()


def as_flags(settings: dict) -> list[str]:
    """The command line of ``settings`` (True booleans as bare flags, False as ``--no-`` flags where the default is
    not False, tuples comma-separated)."""
    flags = []
    for name, value in settings.items():
        if value is True:
            flags.append(f"--{name}")
        elif value is False and DEFAULTS[name] is not False:
            flags.append(f"--no-{name}")
        elif value is not False and value is not None:
            flags += [f"--{name}", ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)]
    return flags


def accelerate_launch(arguments: list[str], env_extra: dict, *, processes: int = 2,
                      timeout: int = 240) -> subprocess.CompletedProcess:
    """``accelerate launch --multi_gpu --num_processes N`` of ``arguments`` (a script and its flags, or ``-m module
    …``), one thread per process, offline."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **env_extra}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", *arguments]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def launch(settings: dict, env_extra: dict, *, processes: int = 2, timeout: int = 240) -> subprocess.CompletedProcess:
    """``accelerate launch --multi_gpu --num_processes N training/train.py`` with ``settings`` as flags."""
    return accelerate_launch([TRAIN_PY, *as_flags(settings)], env_extra, processes=processes, timeout=timeout)


def raw_weights(checkpoint) -> dict:
    return load_file(os.path.join(checkpoint, "model.safetensors"))
