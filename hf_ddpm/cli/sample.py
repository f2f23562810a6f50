"""``hf-ddpm sample``: draw images by ancestral sampling and save them as one grid PNG."""

from __future__ import annotations

import torch

from ..errors import ParameterError
from .common import class_labels_of, load_pipeline, positive_int


def add_sample_parser(subparsers) -> None:
    parser = subparsers.add_parser("sample", help="draw images by ancestral sampling and save them as one grid PNG")
    parser.add_argument("--model", required=True, help="a saved DDPMDocPipeline (folder or Hub id)")
    parser.add_argument("--num-images", type=positive_int, default=None,
                        help="default: one per --class-labels entry, else 64")
    parser.add_argument("--steps", type=positive_int, default=1000, help="sampling steps (1000: the full chain)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="grid.png", help="the grid PNG to write")
    parser.add_argument("--nrow", type=positive_int, default=None, help="images per row (default: ⌈√N⌉)")
    parser.add_argument("--class-labels", default=None,
                        help="a class-conditional model's labels, one per image: comma-separated class names or ids "
                             "(e.g. 3,7 or cat,dog; default: drawn uniformly)")
    parser.add_argument("--guidance-scale", type=float, default=1.0,
                        help="classifier-free guidance s ≥ 0: 1 the conditional model, 0 the null label, > 1 guided "
                             "(needs a model with a null label)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.set_defaults(func=run_sample)


def run_sample(args) -> None:
    from ..images import make_grid

    pipeline = load_pipeline(args.model, args.device)
    labels = class_labels_of(args.class_labels, pipeline)
    if pipeline.is_class_conditional and labels is not None and args.num_images not in (None, len(labels)):
        raise ParameterError("class_labels", f"has {len(labels)} labels for --num-images {args.num_images}: give one "
                                             "per image, or leave --num-images out")
    num_images = args.num_images or (64 if labels is None else None)
    generator = torch.Generator(device="cpu").manual_seed(args.seed)
    output = pipeline(batch_size=num_images, generator=generator, num_inference_steps=args.steps, output_type="np",
                      class_labels=labels, guidance_scale=args.guidance_scale)
    make_grid(output.images, nrow=args.nrow).save(args.out)
    classes = "" if output.class_labels is None else (
        f", guidance scale {args.guidance_scale:g}, classes (row-major) "
        f"{','.join(pipeline.conditioning.names_of(output.class_labels))}")
    print(f"wrote {len(output.images)} samples ({args.steps} steps, seed {args.seed}{classes}) to {args.out}")
