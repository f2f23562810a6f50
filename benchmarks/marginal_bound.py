"""A class-conditional model's marginal bound against an unconditional model's bound, paired on the same held-out
images (issue 20: "the marginal bound is within 0.01 bits/dim of" the unconditional default's).

Both models' bounds are evaluated on every timestep of the full chain, each term with a fresh ε (seeded), so the
unconditional bound and the conditional bound (true labels) are exact up to ε; the marginal bound
−log₂ Σ_y π(y) 2^(−D·L_y) / D takes every class's L_y from T/(4K) timesteps, anchored on that conditional bound, as
the trainer's final evaluation does (``hf_ddpm.training.class_bounds``). Prints JSON: each bound with its standard
error, and the per-image difference marginal − unconditional with the standard error of its mean (the spread of the
paired differences and, in quadrature, the marginal's timestep error).

    python benchmarks/marginal_bound.py ddpm-digits ddpm-digits-cond      # ≈ 4 min on 2 cores for the 359 test digits
"""

from __future__ import annotations

import argparse
import json
import math

from hf_ddpm import DDPMDocPipeline
from hf_ddpm.cli import build_parser
from hf_ddpm.cli.common import load_held_out
from hf_ddpm.training.class_bounds import anchored_marginal, class_bound_timesteps
from hf_ddpm.training.held_out import held_out_bound
from hf_ddpm.variational_bound import variance_of_mean


def load(folder: str) -> DDPMDocPipeline:
    pipeline = DDPMDocPipeline.from_pretrained(folder)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("unconditional", help="an unconditional pipeline folder (e.g. ddpm-digits)")
    parser.add_argument("conditional", help="a class-conditional one with a null label (e.g. ddpm-digits-cond)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    plain, model = load(args.unconditional), load(args.conditional)
    held_out, _ = load_held_out(build_parser().parse_args(["evaluate", "--model", args.conditional]), model)
    x0, labels = held_out.tensor(), held_out.label_tensor()
    unconditional = held_out_bound(plain.unet, plain.scheduler, x0, num_timesteps=None, seed=args.seed)
    conditional = held_out_bound(model.unet, model.scheduler, x0, num_timesteps=None, seed=args.seed,
                                 class_labels=labels)
    count, _ = class_bound_timesteps(model.conditioning.num_classes, model.scheduler.config.num_train_timesteps)
    marginal = anchored_marginal(model, x0, labels, conditional, seed=args.seed, num_timesteps=count)
    difference = marginal.total - unconditional.total.double()
    error = math.sqrt(variance_of_mean(difference) + marginal.timestep_variance)
    print(json.dumps({
        "images": f"{held_out.name}, split {held_out.split!r}, {len(x0)} images",
        "unconditional": [unconditional.bits_per_dim, unconditional.standard_error],
        "conditional": [conditional.bits_per_dim, conditional.standard_error],
        "marginal": [marginal.bits_per_dim, marginal.standard_error],
        "marginal_minus_unconditional": [float(difference.mean()), error],
        "classifier_accuracy": marginal.accuracy(labels),
    }, indent=1))


if __name__ == "__main__":
    main()
