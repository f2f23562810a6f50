"""``hf-ddpm evaluate``: the held-out bound of a pipeline (of the full chain, or of the K-step sampler) with its terms,
and the quality of its samples."""

from __future__ import annotations

import json

from ..errors import ParameterError
from ..timestep_plan import MIN_STRATIFIED_TIMESTEPS
from .common import add_held_out_arguments, load_held_out, load_pipeline, positive_int


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
    quality.add_argument("--num-samples", type=int, default=0, help="draw N samples (seeded by --seed) and report "
                         "FD, score, class histogram, precision/recall (default 0: skip)")
    quality.add_argument("--feature-model", default=None, help="transformers image model (Hub id or folder) for FD "
                         "and precision/recall, e.g. facebook/dinov2-small (default: the built-in digits evaluator)")
    quality.add_argument("--classifier", default=None, help="image classifier (Hub id, folder or 'digits') for the "
                         "score (default: the digits evaluator when --feature-model is not given, else none)")
    parser.add_argument("--guidance-scale", type=float, default=1.0,
                        help="a class-conditional model: also the bound of the chain guided with this s (ε̃ in every "
                             "term), and the --num-samples samples drawn with it (default 1: the conditional model)")
    parser.add_argument("--json", default=None, help="write the numbers and settings to this JSON file")
    parser.add_argument("--plot", default=None, help="save a plot of L_t against t to this PNG")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
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


def sample_quality_of(pipeline, held_out, args, num_inference_steps: int) -> dict:
    """``--num-samples``: draw the samples with ``num_inference_steps`` steps and judge them against the held-out
    images (``hf_ddpm.metrics``)."""
    from ..guidance_figures import guided_samples
    from ..images import sample_grid
    from ..metrics import sample_quality
    from ..pipelines.paper_experiments import to_unit_range

    asked = None  # a class-conditional model's samples: labels cycling through the classes, guided with s
    if pipeline.is_class_conditional:
        samples, labels = guided_samples(pipeline, args.num_samples, args.guidance_scale,
                                         num_inference_steps=num_inference_steps, seed=args.seed)
        asked = pipeline.conditioning.names_of(labels)
    else:
        samples, _ = sample_grid(pipeline, args.num_samples, num_inference_steps, args.seed)
    try:
        quality = sample_quality(samples, to_unit_range(held_out.tensor()), feature_model=args.feature_model,
                                 classifier=args.classifier, device=pipeline.device, requested_classes=asked)
    except OSError as error:  # a feature model or classifier that cannot be loaded
        raise ValueError(str(error)) from error
    score = "" if quality["inception_score"] is None else \
        f", {quality['score_name']} {quality['inception_score']:.3f}, classes {quality['class_histogram']}"
    if quality["label_accuracy"] is not None:
        score += f", label accuracy {quality['label_accuracy']:.3f} (guidance scale {args.guidance_scale:g})"
    print(f"{args.num_samples} samples ({num_inference_steps} steps, seed {args.seed}): {quality['fd_name']} "
          f"{quality['fd']:.4f}, precision {quality['precision']:.3f}, recall {quality['recall']:.3f}{score}")
    return dict(quality, num_inference_steps=num_inference_steps, seed=args.seed)


def run_evaluate(args) -> None:
    from ..evaluation import plot_terms
    from ..training.held_out import held_out_bound
    from .conditional import class_bounds_of, guided_bound_of

    pipeline = load_pipeline(args.model, args.device)
    process = pipeline.scheduler.config
    T = process.num_train_timesteps
    num_timesteps = timestep_count(args.timesteps, T)
    steps = T if args.num_inference_steps is None else args.num_inference_steps
    if steps > T:
        raise ParameterError("num_inference_steps", f"must be at most the model's num_train_timesteps={T}, got {steps}")
    if args.num_samples < 0:
        raise ValueError(f"--num-samples must be ≥ 0 (0 skips sample quality), got {args.num_samples}")
    conditioning = pipeline.conditioning
    if conditioning is None and args.guidance_scale != 1.0:
        raise ParameterError("guidance_scale", f"is {args.guidance_scale}, but this model takes no labels to guide")
    if conditioning is not None:
        conditioning.check_guidance(args.guidance_scale)
    held_out, origin = load_held_out(args, pipeline)
    quality = sample_quality_of(pipeline, held_out, args, steps) if args.num_samples else None
    images = held_out.tensor().to(pipeline.device, pipeline.unet.dtype)
    labels = held_out.label_tensor()  # a class-conditional model's: the images' true labels
    labels = None if labels is None else labels.to(pipeline.device)
    bound = held_out_bound(
        pipeline.unet,
        pipeline.scheduler,
        images,
        num_timesteps=num_timesteps,
        seed=args.seed,
        batch_size=args.batch_size,
        num_inference_steps=steps,
        bound_proposal=pipeline.config.bound_proposal,
        class_labels=labels,
    )
    print(f"{held_out.name}, split {held_out.split!r} (chosen by {origin})")
    print(("conditional (true labels) " if labels is not None else "") + bound.describe())
    class_bounds = guided = None
    if labels is not None:
        class_bounds = class_bounds_of(pipeline, images, labels, bound, args, steps)
        guided = guided_bound_of(pipeline, images, labels, args, steps, num_timesteps)
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
