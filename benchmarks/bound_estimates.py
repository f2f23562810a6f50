"""How close the bound's estimate from K timesteps comes to the full bound, and how often its ±2 SE interval holds it
(issue 27; the table of docs/guides/bound-estimates.md).

Two steps. ``terms`` runs the model once over the held-out images (chosen as ``hf-ddpm evaluate`` chooses them, noise
from seed 0) and saves every term of the full chain per image, and of the sampling chains asked for, with the
proposal the model learned in training: the pipeline's ``bound_proposal``, or for a run saved before it existed the
importance sampler's history in its last checkpoint. ``table`` then draws the estimator's plans for many seeds and
reads each plan's terms from that file (the estimate from K timesteps is exactly those columns, weighted): the
relative error |estimate − full| / full, the share of seeds within 10 %, the share whose ±2 SE interval holds the
full bound, and the share the estimate warns about. The pilot pass is simulated from the saved terms of the pilot's
images (the real one draws fresh noise for them).

    python benchmarks/bound_estimates.py terms --model /work/models/ddpm-digits \\
        --out /work/models/ddpm-digits-bound-terms.pt --num-inference-steps 50 100
    python benchmarks/bound_estimates.py table --terms /work/models/ddpm-digits-bound-terms.pt --seeds 200
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import statistics

import torch

from hf_ddpm import TimestepPlan, VariationalBound
from hf_ddpm.timestep_plan import EXACT_STEPS
from hf_ddpm.timestep_proposal import PILOT_IMAGES, learned_proposal, pilot_proposal, pilot_timesteps

PROPOSALS = ("learned", "pilot", "log-spaced")


def sampler_history_scale(model: str) -> torch.Tensor | None:
    """√E[L_t²] from the importance sampler's state in the newest checkpoint of the run in ``model`` (the object
    registered for checkpointing whose state holds ``losses`` and ``counts``), or None."""
    from hf_ddpm.losses import ImportanceSampler

    checkpoints = sorted(glob.glob(os.path.join(model, "checkpoint-*")), key=lambda p: int(re.findall(r"\d+$", p)[0]))
    for path in sorted(glob.glob(os.path.join(checkpoints[-1], "custom_checkpoint_*.pkl"))) if checkpoints else []:
        state = torch.load(path, weights_only=False)
        if isinstance(state, dict) and set(state) == {"losses", "counts"}:
            sampler = ImportanceSampler(*state["losses"].shape)
            sampler.load_state_dict(state)
            scale = sampler.term_scale()
            return None if scale is None else torch.from_numpy(scale)
    return None


def save_terms(args) -> None:
    from hf_ddpm.cli import build_parser
    from hf_ddpm.cli.common import load_held_out, load_pipeline
    from hf_ddpm.training.held_out import held_out_bound

    pipe = load_pipeline(args.model, args.device)
    held_out, origin = load_held_out(build_parser().parse_args(["evaluate", "--model", args.model]), pipe)
    images = held_out.tensor().to(pipe.device, pipe.unet.dtype)
    saved = pipe.config.bound_proposal
    scale = torch.tensor(saved, dtype=torch.float64) if saved is not None else sampler_history_scale(args.model)
    T = pipe.scheduler.config.num_train_timesteps
    record = {"model": args.model, "data": f"{held_out.name}, split {held_out.split} ({origin})", "chains": {},
              "num_train_timesteps": T, "bound_proposal": scale,
              "proposal_from": "the pipeline" if saved is not None else "the last checkpoint"}
    for steps in (T, *args.num_inference_steps):
        bound = held_out_bound(pipe.unet, pipe.scheduler, images, seed=0, num_inference_steps=steps).cpu()
        record["chains"][steps] = {"chain": bound.plan.chain, "prior": bound.prior.double(),
                                   "terms": bound.terms.double()}
        print(f"{steps}-step chain: {bound.bits_per_dim:.4f} ± {bound.standard_error:.4f} bits/dim")
    torch.save(record, args.out)
    print(f"wrote {args.out} ({record['data']}; proposal from {record['proposal_from']})")


def proposal(name: str, chain: torch.Tensor, terms: torch.Tensor, scale, generator) -> torch.Tensor:
    """q over ``chain``'s steps as the estimator makes it (``learned``, ``pilot``), or the fixed log-spaced one it
    was measured against."""
    if name == "learned":
        return learned_proposal(scale, chain)
    if name == "pilot":
        chosen = torch.randperm(len(terms), generator=generator)[:PILOT_IMAGES]
        steps = pilot_timesteps(chain, num_exact=EXACT_STEPS)
        columns = torch.searchsorted(chain, steps)
        return pilot_proposal(chain, steps, terms[chosen][:, columns].mean(0))
    gaps = torch.diff(chain.double(), prepend=torch.tensor([-1.0], dtype=torch.float64))
    return gaps / (chain.double() + 1)


def table(args) -> None:
    record = torch.load(args.terms, weights_only=False)
    print(f"{record['model']} on {record['data']}; {args.seeds} seeds per row; learned proposal from "
          f"{record['proposal_from']}\n")
    print("| chain | proposal | K | median error | 90th percentile | within 10 % | ±2 SE holds the bound | warned |")
    print("|---|---|--:|--:|--:|--:|--:|--:|")
    for steps, saved in record["chains"].items():
        chain, prior, terms = saved["chain"], saved["prior"], saved["terms"]
        full = float(prior.mean() + terms.mean(0).sum())
        for name in PROPOSALS:
            if name == "learned" and record["bound_proposal"] is None:
                continue
            for K in args.timesteps:
                if K >= len(chain):
                    continue
                errors, covered, warned = [], 0, 0
                for seed in range(args.seeds):
                    generator = torch.Generator().manual_seed(seed)
                    q = proposal(name, chain, terms, record["bound_proposal"], generator)
                    plan = TimestepPlan.importance(record["num_train_timesteps"], K, q, chain=chain,
                                                   generator=generator, description=name)
                    columns = torch.searchsorted(chain, plan.timesteps)
                    bound = VariationalBound(plan, prior, terms[:, columns])
                    error = abs(bound.bits_per_dim - full)
                    errors.append(error / full)
                    covered += error <= 2 * bound.standard_error
                    warned += bound.warning is not None
                errors.sort()
                print(f"| {len(chain)} steps ({full:.4f}) | {name} | {K} | {statistics.median(errors):.1%} | "
                      f"{errors[int(0.9 * len(errors))]:.1%} | {sum(e < 0.1 for e in errors) / len(errors):.1%} | "
                      f"{covered / args.seeds:.1%} | {warned / args.seeds:.1%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    terms = commands.add_parser("terms", help="evaluate every term once and save them")
    terms.add_argument("--model", required=True)
    terms.add_argument("--out", required=True)
    terms.add_argument("--num-inference-steps", type=int, nargs="*", default=[], help="sampling chains as well")
    terms.add_argument("--device", default=None)
    terms.set_defaults(func=save_terms)
    rows = commands.add_parser("table", help="simulate the estimator from the saved terms")
    rows.add_argument("--terms", required=True)
    rows.add_argument("--seeds", type=int, default=200)
    rows.add_argument("--timesteps", type=int, nargs="+", default=[10, 20, 50, 100])
    rows.set_defaults(func=table)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
