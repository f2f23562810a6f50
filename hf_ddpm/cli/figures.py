"""``hf-ddpm figures``: the paper's experiments for a trained pipeline (``hf_ddpm.figures``)."""

from __future__ import annotations

import os

from ..errors import ParameterError
from ..guidance_figures import GRID_SAMPLES, TRADEOFF_STEPS
from ..steps_tradeoff import DEFAULT_STEPS
from .common import (add_held_out_arguments, announce_cost, load_held_out, load_pipeline, non_negative_int, positive_int,
                     torch_device)


def add_figures_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "figures", help="the paper's experiments: progressive generation, shared latents, interpolation, "
                        "rate–distortion (Figs. 5–8, Table 4)",
        description="Write progressive.png (Fig. 6), shared_latents.png (Fig. 7), interpolation.png (Fig. 8), "
                    "rate_distortion.csv/.png (Table 4, Fig. 5) and figures.json (settings and summary) for a trained "
                    "pipeline, on held-out images chosen as by hf-ddpm evaluate. (steps_tradeoff.csv/.png, the bound "
                    "and sample quality against the number of sampling steps K, is not written yet: it needs the "
                    "K-step bound.) When the output folder lies inside the model folder and the model has a "
                    "training_run.json, the record gains the progressive figure and the rate–distortion summary, so "
                    "that hf-ddpm push shows them on the model card. A class-conditional model's figures use the "
                    "held-out images' labels, and one with a null label also gets class_grid.png and "
                    "guidance_tradeoff.csv/.png (hf_ddpm.guidance_figures).")
    parser.add_argument("--model", required=True, help="a saved DDPMDocPipeline (folder or Hub id)")
    add_held_out_arguments(parser)
    parser.add_argument("--num-images", type=positive_int, default=None,
                        help="held-out images of the rate–distortion table (default: the whole split); the first "
                             "few are also encoded for the shared-latent and interpolation figures")
    parser.add_argument("--out", default=None, help="output folder (default: MODEL/figures for a model folder, "
                                                    "else ./figures)")
    parser.add_argument("--seed", type=int, default=0, help="seeds every figure (progressive.png's samples are "
                                                            "hf-ddpm sample --seed's)")
    parser.add_argument("--batch-size", type=positive_int, default=256, help="images per UNet call (rate–distortion)")
    parser.add_argument("--steps", default=None,
                        help="comma-separated numbers of sampling steps K for steps_tradeoff.csv/.png ('none': skip it; "
                             f"default: those of {','.join(map(str, DEFAULT_STEPS))} the model's T allows)")
    parser.add_argument("--num-samples", type=non_negative_int, default=400, help="samples judged at each K (0: the bound only)")
    parser.add_argument("--samplers", default="ddpm",
                        help="comma-separated samplers of steps_tradeoff.csv/.png (hf_ddpm.samplers: ddpm, ddim, "
                             "ddim:1 for η = 1, dpmsolver++, unipc, euler, pndm; default: ddpm, the model's own chain)")
    parser.add_argument("--feature-model", default=None, help="as for evaluate (default: the digits evaluator)")
    parser.add_argument("--classifier", default=None, help="as for evaluate")
    guidance = parser.add_argument_group("a class-conditional model's guidance figures (hf_ddpm.guidance_figures)")
    guidance.add_argument("--guidance-samples", type=non_negative_int, default=400,
                          help="samples judged at each guidance scale of guidance_tradeoff.csv (0: the bound only)")
    guidance.add_argument("--guidance-steps", type=positive_int, default=None,
                          help=f"sampling steps of the guidance figures, whose bound is that chain's (default: "
                               f"{TRADEOFF_STEPS}, or T if fewer)")
    guidance.add_argument("--guidance-timesteps", default="all",
                          help="terms of that chain in each guided bound: 'all' or K (an estimate, as --timesteps of "
                               "evaluate)")
    guidance.add_argument("--grid-samples", type=positive_int, default=GRID_SAMPLES,
                          help="samples per class and guidance scale in class_grid.png")
    parser.add_argument("--device", type=torch_device, default=None, help="torch device (default: cuda if available, else cpu)")
    parser.set_defaults(func=run_figures)


def steps_list(spec: str | None, num_train_timesteps: int) -> list[int] | None:
    """``--steps``: 'none' → None; None → the default K that are at most T (T itself if none is); else the
    comma-separated numbers of sampling steps."""
    if spec is None:
        return [k for k in DEFAULT_STEPS if k <= num_train_timesteps] or [num_train_timesteps]
    if spec == "none":
        return None
    try:
        steps = [int(k) for k in spec.split(",")]
    except ValueError:
        steps = []
    if not steps or not all(1 <= k <= num_train_timesteps for k in steps):
        raise ParameterError("steps", f"must be 'none' or comma-separated numbers of steps in [1, "
                                      f"{num_train_timesteps}] (the model's T), got {spec!r}")
    return steps


def run_figures(args) -> None:
    from ..cost import figure_phases
    from ..figures import FIGURES_DIR, add_to_record, write_figures
    from ..pipelines.paper_experiments import to_unit_range
    from ..rate_distortion import describe_summary
    from .evaluate import timestep_count

    pipeline = load_pipeline(args.model, args.device)
    held_out, origin = load_held_out(args, pipeline)
    out = args.out or (os.path.join(args.model, FIGURES_DIR) if os.path.isdir(args.model) else FIGURES_DIR)
    settings = {"model": args.model, "dataset": held_out.name, "split": held_out.split, "data_chosen_by": origin}
    T = pipeline.scheduler.config.num_train_timesteps
    steps = steps_list(args.steps, T)
    guidance = dict(grid_samples=args.grid_samples, num_samples=args.guidance_samples,
                    num_inference_steps=args.guidance_steps,
                    num_timesteps=timestep_count(args.guidance_timesteps, T, "--guidance-timesteps"))
    conditioning = pipeline.conditioning
    guided = conditioning is not None and conditioning.null_class_label is not None  # the guidance figures too
    phases = figure_phases(pipeline.scheduler, len(held_out), steps=steps, samplers=args.samplers.split(","),
                           steps_samples=args.num_samples, batch_size=args.batch_size,
                           guidance=guidance if guided else None,
                           num_classes=conditioning.num_classes if guided else None)
    progress = announce_cost(pipeline, phases, shorter="--num-images, --steps, --num-samples, --samplers"
                             + (", --guidance-samples, --guidance-steps" if guided else ""))
    progress.start(*phases)
    summary = write_figures(pipeline, to_unit_range(held_out.tensor()), out, seed=args.seed, settings=settings,
                            batch_size=args.batch_size, steps=steps, steps_samples=args.num_samples,
                            steps_samplers=args.samplers.split(","),
                            feature_model=args.feature_model, classifier=args.classifier,
                            class_labels=held_out.label_tensor(), guidance_options=guidance)
    progress.close()
    print(f"{held_out.name}, split {held_out.split!r} (chosen by {origin}): {len(held_out)} images")
    for name, seconds in summary["seconds"].items():
        print(f"  {name:16s} {seconds:7.1f} s")
    print(describe_summary(summary["rate_distortion"]))
    print(f"wrote the figures to {out}")
    if os.path.isdir(args.model) and add_to_record(args.model, out, summary):
        print(f"added the figures the card shows and the summary to {args.model}'s training_run.json")
