"""``hf-ddpm sample``: draw images by ancestral sampling and save them as one grid PNG."""

from __future__ import annotations

import torch

from .common import load_pipeline, positive_int


def add_sample_parser(subparsers) -> None:
    parser = subparsers.add_parser("sample", help="draw images by ancestral sampling and save them as one grid PNG")
    parser.add_argument("--model", required=True, help="a saved DDPMDocPipeline (folder or Hub id)")
    parser.add_argument("--num-images", type=positive_int, default=64)
    parser.add_argument("--steps", type=positive_int, default=1000, help="sampling steps (1000: the full chain)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="grid.png", help="the grid PNG to write")
    parser.add_argument("--nrow", type=positive_int, default=None, help="images per row (default: ⌈√N⌉)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.set_defaults(func=run_sample)


def run_sample(args) -> None:
    from ..images import make_grid

    pipeline = load_pipeline(args.model, args.device)
    generator = torch.Generator(device="cpu").manual_seed(args.seed)
    images = pipeline(
        batch_size=args.num_images, generator=generator, num_inference_steps=args.steps, output_type="np"
    ).images
    make_grid(images, nrow=args.nrow).save(args.out)
    print(f"wrote {args.num_images} samples ({args.steps} steps, seed {args.seed}) to {args.out}")
