"""The README's K-step table: for each number of sampling steps K, the held-out bound of the K-step sampler and the
quality of its samples, so that a user chooses K by numbers. One `hf-ddpm evaluate --num-inference-steps K` per K.

    python benchmarks/steps_tradeoff.py --model ddpm-digits      # K = 1000 250 100 50 20 10, 400 samples each
    python benchmarks/steps_tradeoff.py --model out --steps 1000 100 --num-samples 1000 --json tradeoff.json

Each row is the exact bound (every term of the K-step chain: the distribution `pipe(num_inference_steps=K)` samples
from, spaced by the model's `timestep_spacing`) on the held-out images `hf-ddpm evaluate` chooses, and FD, score and
class balance of `--num-samples` samples drawn with K steps from `--seed` (digits evaluator by default). Prints a
Markdown table headed by the model's settings.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import torch

from hf_ddpm.cli import main as hf_ddpm
from hf_ddpm.metrics import class_balance_chi2

STEPS = (1000, 250, 100, 50, 20, 10)


def evaluate(model: str, steps: int, args) -> dict:
    """The record `hf-ddpm evaluate --num-inference-steps steps` writes, with its wall time."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "evaluate.json")
        argv = ["evaluate", "--model", model, "--num-inference-steps", str(steps), "--timesteps", args.timesteps,
                "--num-samples", str(args.num_samples), "--seed", str(args.seed), "--json", path]
        argv += ["--feature-model", args.feature_model] if args.feature_model else []
        started = time.time()
        hf_ddpm(argv)
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
    record["seconds"] = time.time() - started
    return record


MODEL_SETTINGS = ("fourier_periods", "variance_type", "beta_start", "beta_end", "loss_type", "timestep_sampler",
                  "max_train_steps", "train_batch_size", "learning_rate", "use_ema", "seed")


def settings(model: str) -> str:
    """What the table is of: the model's sampling process and, where the folder has its training run, the settings
    that make the model and those that differ from this checkout's defaults."""
    from hf_ddpm.training.config import RunConfig
    from hf_ddpm.training.record import RunRecord

    with open(os.path.join(model, "scheduler", "scheduler_config.json"), encoding="utf-8") as handle:
        process = json.load(handle)
    keys = ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "variance_type", "prediction_type",
            "clip_sample", "timestep_spacing", "steps_offset")
    lines = [f"model: {model}; scheduler: " + ", ".join(f"{key}={process.get(key)!r}" for key in keys)]
    record = RunRecord.load(model)
    if record is not None:
        flags, defaults = record.config.settings(), RunConfig.from_settings({}).settings()
        lines.append("trained with " + ", ".join(f"{key}={flags[key]}" for key in MODEL_SETTINGS))
        lines.append("flags other than this checkout's defaults: " + (", ".join(
            f"{key}={value}" for key, value in flags.items() if defaults.get(key) != value) or "none"))
    if record is not None and record.results is not None:
        results = record.results
        lines.append(f"its own final bound: {results.test_bits_per_dim:.4f} ± {results.test_bits_per_dim_stderr:.4f} "
                     f"bits/dim ({results.test_bits_per_dim_method})")
    return "\n".join(lines)


def row(record: dict) -> str:
    bound, quality = record["bound"], record["sample_quality"]
    histogram = quality["class_histogram"]
    score = "–" if quality["inception_score"] is None else f"{quality['inception_score']:.2f}"
    classes = "–" if histogram is None else f"{class_balance_chi2(histogram):.1f} ({' '.join(map(str, histogram))})"
    return (f"| {record['num_inference_steps']} | {bound['bits_per_dim']:.3f} ± {bound['standard_error']:.3f} "
            f"| {bound['decoder']:.3f} | {bound['prior']:.1e} | {quality['fd']:.2f} | {score} | {classes} "
            f"| {record['seconds']:.0f} s |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a saved DDPMDocPipeline folder")
    parser.add_argument("--steps", type=int, nargs="+", default=list(STEPS), help="the K to compare")
    parser.add_argument("--num-samples", type=int, default=400, help="samples per K (≥ 400 to judge class balance)")
    parser.add_argument("--timesteps", default="all", help="`hf-ddpm evaluate --timesteps` (all: the exact bound)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--feature-model", default=None, help="default: the digits evaluator")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine may be shared)")
    parser.add_argument("--json", default=None, help="also write every evaluate record here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    records = [evaluate(args.model, steps, args) for steps in args.steps]
    first = records[0]
    print()
    print(settings(args.model))
    print(f"held-out: {first['dataset']}, split {first['split']!r}, {first['bound']['num_images']} images; "
          f"{args.num_samples} samples per K from seed {args.seed}; {first['sample_quality']['fd_name']}")
    print()
    print("| K | bound of the K-step sampler (bits/dim) | L_0 (decoder) | L_T (prior) | FD | score | class χ² "
          "(9 d.o.f.; counts 0–9) | time |")
    print("|--:|--:|--:|--:|--:|--:|--|--:|")
    for record in records:
        print(row(record))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(records, handle, indent=2)


if __name__ == "__main__":
    main()
