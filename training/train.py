#!/usr/bin/env python
"""Train a DDPM (Ho et al. 2020) with 🤗 Accelerate.

    accelerate launch training/train.py                  # the built-in digits: about 8 minutes on 2 CPU cores
    accelerate launch training/train.py --dataset_name cifar10 --resolution 32 --variance_type fixed_large \
        --loss_type simple --timestep_sampler uniform --beta_start 1e-4
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 training/train.py   # 2-process DDP on CPU
    accelerate launch --config_file training/configs/multi_gpu.yaml training/train.py ...

The file reads top to bottom: the flags, the run's configuration (``hf_ddpm.training.config``: every value checked
before any work), building the run (``Trainer``: data, model, optimizer, a checkpoint to resume), the loop, the
outputs, the push. Bad input ends in one ``error:`` line naming the flag; the work lives in ``hf_ddpm.training``.
"""

from __future__ import annotations

import argparse
import sys

from hf_ddpm.errors import ParameterError
from hf_ddpm.hub import HubPushError
from hf_ddpm.losses import LOSS_TYPES, TIMESTEP_SAMPLERS
from hf_ddpm.scheduler import BETA_SCHEDULES, PREDICTION_TYPES, VARIANCE_TYPES
from hf_ddpm.training.config import LOGGERS, LR_SCHEDULERS, MIXED_PRECISIONS, RunConfig
from hf_ddpm.training.trainer import Trainer

DEFAULTS = RunConfig().settings(secrets=True)  # the flags' defaults: the tuned run for the built-in digits (README)


def main(argv: list[str] | None = None):
    """Flags → configuration → the run (built and checked before the first step) → its record (None on processes
    other than the main one). Bad input: one ``error:`` line naming the flag, exit status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = RunConfig.from_settings(vars(args))
        trainer = Trainer(config)
    except ParameterError as error:
        parser.error(error.with_name(f"--{error.parameter}"))
    try:
        return trainer.run()
    except KeyboardInterrupt:  # a checkpoint was written (see Trainer.train)
        trainer.accelerator.end_training()
        sys.exit(130)
    except HubPushError as error:
        sys.exit(f"--push_to_hub: {error} (the local output in {config.output.output_dir} is complete)")


def fourier_periods(text: str) -> tuple[float, ...]:
    """``--fourier_periods``: 'none' or comma-separated positive numbers."""
    if text == "none":
        return ()
    try:
        return tuple(float(period) for period in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 'none' or comma-separated positive numbers, got {text!r}") from None


class Parser(argparse.ArgumentParser):
    """argparse, whose errors are one line: ``train.py: error: --flag …`` and exit status 2, without the usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The flags; each is a field of ``RunConfig`` (same name, same default), checked there."""
    p = Parser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d = DEFAULTS

    def flag(group, name, **kwargs):
        group.add_argument(f"--{name}", default=d[name], **kwargs)

    data = p.add_argument_group("data (default: scikit-learn's digits, held-out split i % 5 == 4)")
    flag(data, "dataset_name", help="a Hub dataset id or a local dataset folder; 'digits' = the built-in digits")
    flag(data, "dataset_config_name")
    flag(data, "train_data_dir", help="an image folder (datasets' imagefolder)")
    flag(data, "image_column", help="the image column (default: the only Image column)")
    flag(data, "resolution", type=int, help="image size (default: the data's own, 8 for the digits)")
    flag(data, "center_crop", action="store_true", help="centre-crop (default: random crop)")
    flag(data, "random_flip", action="store_true")
    flag(data, "validation_fraction", type=float, help="held out when the dataset has no test/validation split")
    flag(data, "max_eval_images", type=int, help="evaluate the bound on at most this many held-out images")
    flag(data, "cache_dir")
    flag(data, "class_conditional", action="store_true",
         help="train on the data's class labels (classifier-free guidance: see --label_dropout)")
    flag(data, "label_column", help="the class-label column with --class_conditional (an image folder's class "
                                    "sub-folders give 'label')")

    model = p.add_argument_group("model and diffusion process")
    flag(model, "model_config_name_or_path", help="a UNet2DModel config (default: the preset for the resolution)")
    model.add_argument("--fourier_periods", type=fourier_periods, default=d["fourier_periods"],
                   help="comma-separated periods (8-bit units) of the Fourier features the UNet reads; 'none': a "
                        "plain UNet2DModel")
    flag(model, "num_train_timesteps", type=int)
    flag(model, "beta_schedule", choices=BETA_SCHEDULES)
    flag(model, "beta_start", type=float)
    flag(model, "beta_end", type=float)
    flag(model, "variance_type", choices=VARIANCE_TYPES)
    flag(model, "prediction_type", choices=PREDICTION_TYPES)
    flag(model, "clip_sample", action=argparse.BooleanOptionalAction,
         help="clip x̂_0 to [−1, 1] in sampling, and so in the losses and the bound (the bound is the clipped "
              "sampler's)")
    flag(model, "loss_type", choices=LOSS_TYPES)
    flag(model, "simple_weight", type=float, help="c of --loss_type vlb_simple: T·L_t + c·L_simple")
    flag(model, "timestep_sampler", choices=TIMESTEP_SAMPLERS)
    flag(model, "importance_uniform_mix", type=float,
         help="share of the uniform distribution in the importance sampler's p_t (every t keeps a weight ≤ 1/share)")
    flag(model, "label_dropout", type=float,
         help="with --class_conditional: the probability of replacing a label by the null label (classifier-free "
              "guidance's p_uncond)")

    opt = p.add_argument_group("optimisation")
    flag(opt, "seed", type=int)
    flag(opt, "train_batch_size", type=int, help="per process")
    flag(opt, "num_epochs", type=int, help="passes over the data, when --max_train_steps is not given")
    flag(opt, "max_train_steps", type=int,
         help="optimizer steps (overrides --num_epochs; default without either: 3500 on the digits' budget, 3000 with "
              "--class_conditional, whose final evaluation costs about a minute more)")
    flag(opt, "gradient_accumulation_steps", type=int)
    flag(opt, "learning_rate", type=float)
    flag(opt, "lr_scheduler", choices=LR_SCHEDULERS)
    flag(opt, "lr_warmup_steps", type=int)
    for name in ("adam_beta1", "adam_beta2", "adam_weight_decay", "adam_epsilon"):
        flag(opt, name, type=float)
    flag(opt, "max_grad_norm", type=float, help="0 disables clipping")
    flag(opt, "use_ema", action=argparse.BooleanOptionalAction)
    for name in ("ema_max_decay", "ema_inv_gamma", "ema_power"):
        flag(opt, name, type=float)

    compute = p.add_argument_group("computation")
    flag(compute, "mixed_precision", choices=MIXED_PRECISIONS)
    flag(compute, "gradient_checkpointing", action="store_true")
    flag(compute, "num_threads", type=int, help="CPU threads per process, fixed (default: OMP_NUM_THREADS if you set "
                                                "it, else this machine's usable cores / local processes, fewer while "
                                                "other processes keep cores busy)")
    flag(compute, "dataloader_num_workers", type=int)
    flag(compute, "keep_decoded_mib", type=int,
         help="decode the training images once and keep them if they fit in this many MiB (0: decode per item)")

    out = p.add_argument_group("outputs, checkpoints and evaluation")
    out.add_argument("--output_dir", default=None,
                     help="default: ddpm-digits, or ddpm-digits-cond with --class_conditional")
    flag(out, "checkpointing_steps", type=int, help="a checkpoint every N optimizer steps and at the end (0: none)")
    flag(out, "checkpoints_total_limit", type=int)
    flag(out, "resume_from_checkpoint", help="a checkpoint folder, or 'latest'")
    flag(out, "save_images_steps", type=int, help="a sample grid every N steps (0: only at the end)")
    flag(out, "eval_steps", type=int, help="a held-out bound estimate every N steps (0: only at the end)")
    flag(out, "eval_timesteps", type=int, help="timesteps of each bound estimate during training")
    flag(out, "eval_samples", type=int, help="samples judged at each evaluation during training (0: none)")
    flag(out, "eval_inference_steps", type=int, help="steps of the respaced chain that draws them (default: 100, or "
                                                     "--num_train_timesteps if fewer)")
    flag(out, "feature_model", help="transformers image model (Hub id or folder) for FD and precision/recall "
                                    "(default: the built-in digits evaluator)")
    flag(out, "classifier", help="image classifier (Hub id, folder or 'digits') for the score and class histogram "
                                 "(default: the digits evaluator when --feature_model is not given)")
    flag(out, "final_eval_timesteps", type=int, help="timesteps of the final bound (default: all T)")
    flag(out, "num_samples", type=int, help="images in each sample grid")
    out.add_argument("--num_inference_steps", type=int, default=None,
                     help="ancestral steps per sample (default: num_train_timesteps, the full chain)")
    flag(out, "figures", action=argparse.BooleanOptionalAction,
         help="end with the paper's figures in output_dir/figures (hf_ddpm.figures: progressive generation and "
              "rate–distortion, and a class-conditional model's class grid and guidance trade-off; hf-ddpm figures "
              "adds the shared latents and the interpolation); default (None): for the built-in digits only")
    flag(out, "logger", choices=LOGGERS)
    flag(out, "logging_dir", help="relative to --output_dir")

    hub = p.add_argument_group("Hugging Face Hub")
    flag(hub, "push_to_hub", action="store_true", help="push the final pipeline, model card and sample grids in one commit")
    flag(hub, "hub_model_id", help="repo to push to: 'user/name', 'org/name' or 'name' (your namespace); created if missing")
    flag(hub, "hub_token", help="Hub token (default: $HF_TOKEN or the token saved by `hf auth login`)")
    flag(hub, "hub_private_repo", action="store_true", help="create the repo as private")
    flag(hub, "push_every_checkpoint", action="store_true",
         help="also push the (EMA) pipeline at every checkpoint, in the background (needs --push_to_hub)")
    return p


if __name__ == "__main__":
    main()
