"""``hf-ddpm evaluate`` across processes and from files (``hf_ddpm.distributed_eval``): the samples' quality (drawn
here with image i seeded by (--seed, i), or read with ``--samples``), against the held-out images or ``--reference``
stats, and the held-out bound with per-image ε; under ``accelerate launch`` each process takes its share and the
numbers are gathered, equal to a one-process run's."""

from __future__ import annotations

import torch

from ..errors import ParameterError


def add_scaled_arguments(parser, quality) -> None:
    """``--samples``, ``--reference`` (in the sample-quality group ``quality``) and ``--no-bound``."""
    quality.add_argument("--samples", default=None, help="score saved samples instead of drawing --num-samples: a "
                         "folder of hf-ddpm sample --out-dir (or any folder of PNGs) or an .npz (arr_0 uint8 NHWC)")
    quality.add_argument("--reference", default=None, help="FD against these stats (hf-ddpm reference-stats) instead "
                         "of the held-out images' features; they must come from the same --feature-model")
    parser.add_argument("--no-bound", action="store_true", help="skip the held-out bound (only sample quality)")


def _sample_features(pipeline, args, models, steps: int, state, source):
    """The samples' features and probabilities gathered over the processes, with the class names each was asked for
    (None for an unconditional model or unknown labels) and a description; ``source``: the saved samples (None: draw
    them here)."""
    from ..distributed_eval import gathered_features
    from ..sample_files import SampleSpec, draw_images, scheduler_record

    conditioning = pipeline.conditioning
    if source is not None:
        count, labels, where = source.num_images, source.labels, f"from {source.description}"
        read = source.read
    else:
        labels = None if conditioning is None else conditioning.class_ids.tolist()  # cycling through the classes
        spec = SampleSpec(model=args.model, num_images=args.num_samples, seed=args.seed, num_inference_steps=steps,
                          scheduler=scheduler_record(pipeline.scheduler), class_labels=labels,
                          guidance_scale=args.guidance_scale)
        count, where = args.num_samples, f"({steps} steps, seed {args.seed})"
        labels = None if labels is None else spec.labels_of(range(count)).numpy()

        def read(start, stop):
            return draw_images(pipeline, range(start, stop), spec, batch_size=args.batch_size)[0]

    def compute(indices):
        images = torch.from_numpy(read(indices.start, indices.stop)).permute(0, 3, 1, 2)
        return models.sample_outputs(images) if len(images) else (None, None)

    features, probs = gathered_features(compute, count, state)
    asked = None if labels is None or conditioning is None else conditioning.names_of(labels)
    return features, probs, asked, f"{count} samples {where}"


def scaled_sample_quality(pipeline, held_out, args, steps: int, state) -> dict:
    """``--num-samples`` / ``--samples``: the samples' quality against the held-out images (their features, this
    process's share each) or ``--reference`` stats, on every process."""
    from ..distributed_eval import dataset_features
    from ..metrics.quality import QualityModels
    from ..metrics.reference_stats import ReferenceStats
    from ..sample_files import open_samples

    source = None if args.samples is None else open_samples(args.samples)  # bad files fail here, before any work
    try:
        models = QualityModels(args.feature_model, args.classifier, device=pipeline.device,
                               progress=state.is_main_process)
    except OSError as error:  # a feature model or classifier that cannot be loaded
        raise ValueError(str(error)) from error
    if args.reference is not None:
        reference = ReferenceStats.load(args.reference, models.feature_model)
    else:
        reference = dataset_features(models, held_out, state)
    features, probs, asked, described = _sample_features(pipeline, args, models, steps, state, source)
    quality = models.numbers(features, probs, reference, requested_classes=asked)
    if state.is_main_process:
        score = "" if quality["inception_score"] is None else \
            f", {quality['score_name']} {quality['inception_score']:.3f}, classes {quality['class_histogram']}"
        if quality["label_accuracy"] is not None:
            score += f", label accuracy {quality['label_accuracy']:.3f} (guidance scale {args.guidance_scale:g})"
        against = f"the stats {args.reference} ({reference.source})" if args.reference else "the held-out images"
        pr = "" if quality["precision"] is None else \
            f", precision {quality['precision']:.3f}, recall {quality['recall']:.3f}"
        print(f"{described} against {against}: {quality['fd_name']} {quality['fd']:.4f}{pr}{score}")
    return dict(quality, num_inference_steps=None if args.samples else steps, seed=args.seed, samples=args.samples)


def scaled_bound(pipeline, images: torch.Tensor, labels, *, num_timesteps, steps: int, seed: int, batch_size: int,
                 state):
    """The held-out bound of ``images`` (model range, on the device) with their ``labels``: its plan made on the main
    process as :func:`~hf_ddpm.training.held_out.held_out_bound` makes it and broadcast, each image's ε seeded by
    (``seed``, index), the images split over the processes and gathered."""
    from ..distributed_eval import broadcast, gathered_bound
    from ..training.held_out import held_out_plan

    plan = None
    if state.is_main_process:
        plan = held_out_plan(pipeline.unet, pipeline.scheduler, images, num_timesteps=num_timesteps, seed=seed,
                             batch_size=batch_size, num_inference_steps=steps, class_labels=labels,
                             bound_proposal=pipeline.config.bound_proposal)
    plan = broadcast(plan, state)
    return gathered_bound(pipeline.unet, pipeline.scheduler, images, plan, seed=seed, batch_size=batch_size,
                          class_labels=labels, state=state, progress=False)  # run_evaluate's bar shows every call


def check_scaled_arguments(args) -> None:
    """Refuse contradictory flags before any work."""
    if args.samples is not None and args.num_samples:
        raise ParameterError("samples", "scores saved samples: leave --num-samples out (it draws new ones)")
    if args.no_bound and args.samples is None and not args.num_samples:
        raise ParameterError("no_bound", "leaves nothing to evaluate: give --samples or --num-samples")
