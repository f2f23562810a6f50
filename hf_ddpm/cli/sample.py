"""``hf-ddpm sample``: draw images with the model's ancestral chain or another sampler and save them as one grid PNG."""

from __future__ import annotations

import torch

from ..errors import ParameterError
from ..progress import bar_options
from ..samplers import RECOMMENDED, SAMPLERS, make_scheduler
from ..sample_files import DEFAULT_SHARD_SIZE, FORMATS
from .common import class_labels_of, load_pipeline, output_file, positive_int, process_state, torch_device


def add_sample_parser(subparsers) -> None:
    parser = subparsers.add_parser("sample", help="draw images by ancestral sampling and save them as one grid PNG")
    parser.add_argument("--model", required=True, help="a saved DDPMDocPipeline (folder or Hub id)")
    parser.add_argument("--num-images", type=positive_int, default=None,
                        help="default: one per --class-labels entry, else 64")
    parser.add_argument("--steps", type=positive_int, default=None,
                        help=f"sampling steps (default: the model's full chain for ddpm, {RECOMMENDED[1]} for the "
                             "other samplers)")
    parser.add_argument("--scheduler", choices=SAMPLERS, default="ddpm",
                        help="the sampler (diffusers' schedulers built from the model's scheduler configuration; "
                             "docs/guides/samplers.md compares them): " +
                             "; ".join(f"{name}: {sampler.description}" for name, sampler in SAMPLERS.items()))
    parser.add_argument("--eta", type=float, default=0.0,
                        help="DDIM's η (--scheduler ddim only): 0 deterministic, 1 the ancestral chain with β̃′")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=output_file("image"), default="grid.png",
                        help="the grid image to write (PNG; any format PIL writes)")
    parser.add_argument("--nrow", type=positive_int, default=None, help="images per row (default: ⌈√N⌉)")
    parser.add_argument("--class-labels", default=None,
                        help="a class-conditional model's labels, one per image: comma-separated class names or ids "
                             "(e.g. 3,7 or cat,dog; default: drawn uniformly)")
    parser.add_argument("--guidance-scale", type=float, default=1.0,
                        help="classifier-free guidance s ≥ 0: 1 the conditional model, 0 the null label, > 1 guided "
                             "(needs a model with a null label)")
    parser.add_argument("--device", type=torch_device, default=None, help="torch device (default: cuda if available, else cpu; under "
                                                       "accelerate launch each process's own device)")
    files = parser.add_argument_group("samples as files (hf_ddpm.sample_files): with --out-dir, every image is saved, "
                                      "image i drawn from a generator seeded by (--seed, i); accelerate launch -m "
                                      "hf_ddpm sample … splits them over processes; a run started again resumes")
    files.add_argument("--out-dir", default=None, help="write the --num-images images here instead of a grid")
    files.add_argument("--format", choices=FORMATS, default="png", help="png: 000000.png …; npz: shards merged into "
                       "samples_NxHxWxC.npz (arr_0 uint8 NHWC, arr_1 the labels of a conditional model), as openai's "
                       "evaluation suite reads")
    files.add_argument("--batch-size", type=positive_int, default=64, help="images per pipeline call")
    files.add_argument("--shard-size", type=positive_int, default=DEFAULT_SHARD_SIZE,
                       help="images per shard: the unit written at once, split over processes, and resumed")
    parser.set_defaults(func=run_sample, flag_names={"num_inference_steps": "--steps"})


def run_sample(args) -> None:
    from ..images import make_grid

    pipeline = load_pipeline(args.model, args.device)
    if args.steps is None:  # the full chain is the ancestral sampler's; the ODE solvers' is a few steps
        args.steps = pipeline.scheduler.config.num_train_timesteps if args.scheduler == "ddpm" else RECOMMENDED[1]
    pipeline.scheduler = make_scheduler(args.scheduler, pipeline.scheduler.config)
    labels = class_labels_of(args.class_labels, pipeline)
    if args.out_dir is not None:
        return write_sample_files(args, pipeline, labels)
    if pipeline.is_class_conditional and labels is not None and args.num_images not in (None, len(labels)):
        raise ParameterError("class_labels", f"has {len(labels)} labels for --num-images {args.num_images}: give one "
                                             "per image, or leave --num-images out")
    num_images = args.num_images or (64 if labels is None else None)
    pipeline.set_progress_bar_config(**bar_options("sampling", unit="step"))
    generator = torch.Generator(device="cpu").manual_seed(args.seed)
    output = pipeline(batch_size=num_images, generator=generator, num_inference_steps=args.steps, output_type="np",
                      class_labels=labels, guidance_scale=args.guidance_scale, eta=args.eta)
    make_grid(output.images, nrow=args.nrow).save(args.out)
    classes = "" if output.class_labels is None else (
        f", guidance scale {args.guidance_scale:g}, classes (row-major) "
        f"{','.join(pipeline.conditioning.names_of(output.class_labels))}")
    sampler = args.scheduler + (f", η = {args.eta:g}" if args.scheduler == "ddim" else "")
    print(f"wrote {len(output.images)} samples ({sampler}, {args.steps} steps, seed {args.seed}{classes}) to "
          f"{args.out}")


def write_sample_files(args, pipeline, labels) -> None:
    """``--out-dir``: the --num-images images as files, this process's share of them (``hf_ddpm.sample_files``);
    ``--class-labels`` are cycled over the images."""
    from ..sample_files import SampleSpec, scheduler_record, write_samples

    if args.num_images is None:
        raise ParameterError("num_images", "is needed with --out-dir (e.g. 50000)")
    conditioning = pipeline.conditioning
    if conditioning is None and (labels is not None or args.guidance_scale != 1.0):
        raise ParameterError("class_labels" if labels is not None else "guidance_scale",
                             "is for class-conditional models; this model takes no labels")
    if conditioning is not None:
        conditioning.check_guidance(args.guidance_scale)
    ids = None if labels is None else conditioning.label_ids(labels).tolist()
    spec = SampleSpec(model=args.model, num_images=args.num_images, seed=args.seed, num_inference_steps=args.steps,
                      scheduler=scheduler_record(pipeline.scheduler), class_labels=ids,
                      guidance_scale=args.guidance_scale, sampler_kwargs=None if args.eta == 0.0 else {"eta": args.eta},
                      format=args.format, shard_size=args.shard_size)
    state = process_state()
    where = write_samples(pipeline, args.out_dir, spec, batch_size=args.batch_size, state=state)
    if state.is_main_process:
        print(f"wrote {args.num_images} samples ({args.steps} steps, seed {args.seed}, {state.num_processes} "
              f"process(es)) to {where}")
