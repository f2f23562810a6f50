"""The K-step table and the samplers table: for each sampler and number of sampling steps K, the held-out bound of
that K-step sampler (where it has one) and the quality of its samples, so that a user chooses a sampler and K by
numbers (``hf_ddpm.steps_tradeoff``, as ``hf-ddpm figures`` writes it to steps_tradeoff.csv), printed as Markdown.

    python benchmarks/steps_tradeoff.py --model ddpm-digits      # K = 1000 250 100 50 20 10, 400 samples each
    python benchmarks/steps_tradeoff.py --model out --steps 1000 100 --num-samples 1000 --json tradeoff.json
    python benchmarks/steps_tradeoff.py --model ddpm-digits --compare-samplers   # docs/guides/samplers.md's table:
        # ddpm, ddim (η = 0), ddim:1 (η = 1) and dpmsolver++ at K = 100 50 20 10

The time column is the wall clock of drawing the samples alone (not the bound), on whatever else the machine runs.

Each row is the exact bound (every term of the K-step chain: the distribution `pipe(num_inference_steps=K)` samples
from, spaced by the model's `timestep_spacing`) on the held-out images `hf-ddpm evaluate` chooses, and FD, score and
class balance of `--num-samples` samples drawn with K steps from `--seed` (digits evaluator by default). Prints a
Markdown table headed by the model's settings.
"""

from __future__ import annotations

import argparse
import json
import os

import torch

from hf_ddpm import DDPMDocPipeline
from hf_ddpm.cli.common import held_out_source
from hf_ddpm.data import load_eval_images
from hf_ddpm.steps_tradeoff import DEFAULT_STEPS, SAMPLER_COMPARISON, SAMPLER_STEPS, steps_tradeoff


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
    histogram = record["class_histogram"]
    score = "–" if record["score"] is None else f"{record['score']:.2f}"
    classes = "–" if histogram is None else f"{record['class_chi2']:.1f} ({' '.join(map(str, histogram))})"
    sampler = record["sampler"] + (f" η={record['eta']:g}" if record["sampler"] == "ddim" else "")
    if record["bits_per_dim"] is None:
        bound = "none (deterministic)" if "deterministic" in record["no_bound"] else "none"
        decoder = prior = "–"
    else:
        bound = f"{record['bits_per_dim']:.3f} ± {record['standard_error']:.3f}"
        decoder, prior = f"{record['decoder']:.3f}", f"{record['prior']:.1e}"
    seconds = "–" if record["sampling_seconds"] is None else f"{record['sampling_seconds']:.1f} s"
    return (f"| {sampler} | {record['num_inference_steps']} | {bound} | {decoder} | {prior} | {record['fd']:.2f} "
            f"| {score} | {classes} | {seconds} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a saved DDPMDocPipeline folder")
    parser.add_argument("--steps", type=int, nargs="+", default=None,
                        help=f"the K to compare (default {' '.join(map(str, DEFAULT_STEPS))}; with --compare-samplers "
                             f"{' '.join(map(str, SAMPLER_STEPS))})")
    parser.add_argument("--samplers", nargs="+", default=None,
                        help="samplers of hf_ddpm.samplers (ddpm, ddim, ddim:1 for η = 1, dpmsolver++, unipc, euler, "
                             "pndm; default ddpm)")
    parser.add_argument("--compare-samplers", action="store_true",
                        help=f"the samplers table: --samplers {' '.join(SAMPLER_COMPARISON)} at the K above")
    parser.add_argument("--num-samples", type=int, default=400, help="samples per K (≥ 400 to judge class balance)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--feature-model", default=None, help="default: the digits evaluator")
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args()

    pipeline = DDPMDocPipeline.from_pretrained(args.model)
    pipeline.set_progress_bar_config(disable=True)
    held_out = load_eval_images(**held_out_source(argparse.Namespace(
        model=args.model, dataset=None, train_data_dir=None, dataset_config=None, label_column=None,
        validation_fraction=None, split_seed=None))[0])
    steps = args.steps or list(SAMPLER_STEPS if args.compare_samplers else DEFAULT_STEPS)
    samplers = args.samplers or list(SAMPLER_COMPARISON if args.compare_samplers else ("ddpm",))
    rows = steps_tradeoff(pipeline, held_out.tensor(), steps, samplers=samplers, num_samples=args.num_samples,
                          seed=args.seed, feature_model=args.feature_model)
    print()
    print(settings(args.model))
    print(f"held-out: {held_out.name}, split {held_out.split!r}, {len(held_out)} images; {args.num_samples} samples "
          f"per sampler and K from seed {args.seed}; {rows[0]['fd_name']}; torch threads {torch.get_num_threads()}")
    print()
    print("| sampler | K | bound of the K-step sampler (bits/dim) | L_0 (decoder) | L_T (prior) | FD | score "
          "| class χ² (9 d.o.f.; counts 0–9) | sampling time |")
    print("|--|--:|--:|--:|--:|--:|--:|--|--:|")
    for record in rows:
        print(row(record))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(rows, handle, indent=2)


if __name__ == "__main__":
    main()
