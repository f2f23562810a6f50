"""``hf-ddpm evaluate``: the held-out bound of a pipeline (of the full chain, or of the K-step sampler) with its terms,
and the quality of its samples."""

from __future__ import annotations

import json

from ..errors import ParameterError
from ..timestep_plan import MIN_STRATIFIED_TIMESTEPS
from .common import (add_held_out_arguments, announce_cost, load_held_out, load_pipeline, non_negative_int, output_file,
                     positive_int, process_state, torch_device)
from .scaled_evaluation import add_scaled_arguments, check_scaled_arguments, scaled_bound, scaled_sample_quality


def add_evaluate_parser(subparsers) -> None:
    parser = subparsers.add_parser("evaluate", help="the held-out variational bound in bits/dim, with its terms")
    parser.add_argument("--model", required=True, help="a saved DDPMDocPipeline (folder or Hub id)")
    add_held_out_arguments(parser)
    parser.add_argument("--num-images", type=positive_int, default=None, help="default: the whole split")
    parser.add_argument(
        "--num-inference-steps",
        type=positive_int,
        default=None,
        help="the sampler judged: the bound (and the --num-samples samples) of the pipeline with this many ancestral "
        "steps, on the chain its scheduler's timestep_spacing gives (default: the full T-step chain)",
    )
    parser.add_argument(
        "--timesteps",
        default="all",
        help=f"'all' (the exact bound) or K ≥ {MIN_STRATIFIED_TIMESTEPS}: an unbiased estimate from K of the chain's "
        "timesteps, drawn by importance from the proposal the model learned in training (else from a short pilot "
        "pass), with a warning when it cannot be trusted (all of them when the chain has no more than K steps; see "
        "docs/guides/bound-estimates.md for the accuracy per K)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the noise and the timestep subset")
    parser.add_argument("--batch-size", type=positive_int, default=256, help="images per UNet call")
    quality = parser.add_argument_group("sample quality (hf_ddpm.metrics), against the held-out images")
    quality.add_argument("--num-samples", type=non_negative_int, default=0, help="draw N samples (seeded by --seed) "
                         "and report FD, score, class histogram, precision/recall (default 0: skip)")
    quality.add_argument("--feature-model", default=None, help="transformers image model (Hub id or folder) for FD "
                         "and precision/recall, e.g. facebook/dinov2-small; 'inception' (or the path of "
                         "inception-2015-12-05.pt): the FID and IS of papers (default: the built-in digits evaluator)")
    quality.add_argument("--classifier", default=None, help="image classifier (Hub id, folder or 'digits') for the "
                         "score (default: the digits evaluator when --feature-model is not given, else none)")
    add_scaled_arguments(parser, quality)
    parser.add_argument("--guidance-scale", type=float, default=1.0,
                        help="a class-conditional model: also the bound of the chain guided with this s (ε̃ in every "
                             "term), and the --num-samples samples drawn with it (default 1: the conditional model)")
    parser.add_argument("--json", type=output_file(), default=None, help="write the numbers and settings to this JSON file")
    parser.add_argument("--plot", type=output_file("plot"), default=None,
                        help="save a plot of L_t against t to this image (PNG, PDF, SVG, …)")
    parser.add_argument("--device", type=torch_device, default=None, help="torch device (default: cuda if available, else cpu)")
    parser.set_defaults(func=run_evaluate)


def timestep_count(spec: str, num_train_timesteps: int, flag: str = "--timesteps") -> int | None:
    """``--timesteps`` (or another ``flag`` of its kind): ``"all"`` → None (every timestep, the exact bound); ``"K"``
    → K (at least ``MIN_STRATIFIED_TIMESTEPS``, at most T; see :func:`hf_ddpm.likelihood.bound_plan`)."""
    if spec == "all":
        return None
    try:
        count = int(spec)
    except ValueError:
        count = 0
    if not MIN_STRATIFIED_TIMESTEPS <= count <= num_train_timesteps:
        raise ValueError(
            f"{flag} must be 'all' or an integer in [{MIN_STRATIFIED_TIMESTEPS}, {num_train_timesteps}], "
            f"got {spec!r}"
        )
    return count


def evaluation_phases(pipeline, args, steps: int, num_timesteps: int | None, num_images: int, state) -> dict:
    """The work of :func:`run_evaluate` on this process (its shares of the samples and the held-out images): the
    samples, the bound of the ``steps``-step chain from ``num_timesteps`` of its terms (None: all), and for a
    class-conditional model the class bounds (:func:`.conditional.class_bounds_of`) and the guided chain's bound."""
    from ..cost import Phase, bound, branches, chain_calls
    from ..distributed_eval import share
    from ..training.estimate import class_bounds_phase

    conditioning, T = pipeline.conditioning, pipeline.scheduler.config.num_train_timesteps
    scale = 1.0 if conditioning is None else args.guidance_scale
    drawn = len(share(args.num_samples, state)) if args.num_samples and not args.samples else 0
    calls = chain_calls(pipeline.scheduler, steps)
    terms = steps if num_timesteps is None else min(num_timesteps, steps)
    images = 0 if args.no_bound else len(share(num_images, state))
    labelled = conditioning is not None and not args.no_bound and state.is_main_process
    guided = bound("guided chain's bound", num_images if labelled and scale != 1.0 else 0, terms,
                   batch_size=args.batch_size)
    return {
        "samples": Phase("samples", branches(scale) * drawn * calls, -(-drawn // args.batch_size) * calls,
                         f"{drawn} images × {calls} steps"),
        "bound": bound("held-out bound", images, terms, batch_size=args.batch_size),
        "class bounds": class_bounds_phase(T, num_images, conditioning.num_classes if labelled and steps == T and
                                           conditioning.null_class_label is not None else None, None),
        "guided bound": Phase(guided.name, branches(scale) * guided.images, guided.calls, guided.detail),
    }


def run_evaluate(args) -> None:
    from ..evaluation import plot_terms
    from .conditional import class_bounds_of, guided_bound_of

    pipeline = load_pipeline(args.model, args.device)
    process = pipeline.scheduler.config
    T = process.num_train_timesteps
    num_timesteps = timestep_count(args.timesteps, T)
    steps = T if args.num_inference_steps is None else args.num_inference_steps
    if steps > T:
        raise ParameterError("num_inference_steps", f"must be at most the model's num_train_timesteps={T}, got {steps}")
    conditioning = pipeline.conditioning
    if conditioning is None and args.guidance_scale != 1.0:
        raise ParameterError("guidance_scale", f"is {args.guidance_scale}, but this model takes no labels to guide")
    if conditioning is not None:
        conditioning.check_guidance(args.guidance_scale)
    check_scaled_arguments(args)
    state = process_state()
    held_out, origin = (None, None) if args.no_bound and args.reference else load_held_out(args, pipeline)
    phases = evaluation_phases(pipeline, args, steps, num_timesteps, 0 if held_out is None else len(held_out), state)
    progress = announce_cost(pipeline, phases.values(), enabled=state.is_main_process,
                             shorter="--num-images, --timesteps K, --num-samples, --num-inference-steps")
    progress.start(phases["samples"])
    quality = scaled_sample_quality(pipeline, held_out, args, steps, state) if args.num_samples or args.samples \
        else None
    if args.no_bound:
        progress.close()
        if args.json and state.is_main_process:
            with open(args.json, "w", encoding="utf-8") as handle:
                json.dump({"model": args.model, "seed": args.seed, "sample_quality": quality}, handle, indent=2)
            print(f"wrote {args.json}")
        return
    images = held_out.tensor().to(pipeline.device, pipeline.unet.dtype)
    labels = held_out.label_tensor()  # a class-conditional model's: the images' true labels
    labels = None if labels is None else labels.to(pipeline.device)
    progress.start(phases["bound"])
    bound = scaled_bound(pipeline, images, labels, num_timesteps=num_timesteps, steps=steps, seed=args.seed,
                         batch_size=args.batch_size, state=state)
    if not state.is_main_process:
        progress.close()
        return
    print(f"{held_out.name}, split {held_out.split!r} (chosen by {origin})")
    print(("conditional (true labels) " if labels is not None else "") + bound.describe())
    class_bounds = guided = None
    if labels is not None:
        progress.start(phases["class bounds"])
        class_bounds = class_bounds_of(pipeline, images, labels, bound, args, steps)
        progress.start(phases["guided bound"])
        guided = guided_bound_of(pipeline, images, labels, args, steps, num_timesteps)
    progress.close()
    if args.json:
        record = {
            "model": args.model,
            "dataset": held_out.name,
            "split": held_out.split,
            "data_chosen_by": origin,
            "seed": args.seed,
            "num_inference_steps": steps,
            "timestep_spacing": process.timestep_spacing,
            "steps_offset": process.steps_offset,
            "bound_of": bound.plan.describe_chain(),
            "timesteps": args.timesteps,
            "bound": bound.to_dict(),
        }
        if labels is not None:  # the bound above is the conditional one
            record.update(class_bounds=class_bounds, guidance_scale=args.guidance_scale,
                          guided_bound=None if guided is None else guided.to_dict())
        if quality is not None:
            record["sample_quality"] = quality
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(record, handle, indent=2)
        print(f"wrote {args.json}")
    if args.plot:
        plot_terms(bound, args.plot)
        print(f"wrote {args.plot}")
