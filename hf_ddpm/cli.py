"""``hf-ddpm``: sample from and evaluate a trained pipeline without writing Python.

    hf-ddpm sample   --model DIR --num-images 64 --steps 1000 --seed 0 --out grid.png
    hf-ddpm evaluate --model DIR [--dataset digits|<hub id> | --train-data-dir DIR] [--split test]
                     [--num-images N] [--num-inference-steps S] [--timesteps all|K] [--json out.json] [--plot lt.png]
                     [--num-samples N [--feature-model ID] [--classifier ID]]
    hf-ddpm figures  --model DIR [--dataset … as for evaluate] [--out DIR] [--seed S] [--num-images N]
    hf-ddpm push     --folder DIR --repo-id ID [--token T] [--private]

Each subcommand is an ``add_<name>_parser(subparsers)`` that registers its options and sets ``func``; the
work is done by library functions. A new subcommand is one more entry in ``SUBCOMMANDS``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

from .errors import ParameterError
from .timestep_plan import MIN_STRATIFIED_TIMESTEPS


def _device(name: str | None) -> str:
    return name or ("cuda" if torch.cuda.is_available() else "cpu")


def load_pipeline(model: str, device: str | None = None):
    """``DDPMDocPipeline.from_pretrained(model)`` on ``device``; a ValueError naming ``--model`` if it fails."""
    from .pipelines import DDPMDocPipeline

    try:
        pipeline = DDPMDocPipeline.from_pretrained(model)
    except (OSError, ValueError) as error:
        raise ValueError(f"--model {model!r} could not be loaded as a DDPMDocPipeline: {error}") from error
    pipeline.set_progress_bar_config(disable=True)
    return pipeline.to(_device(device))


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


# --------------------------------------------------------------------------------------------------------------
# hf-ddpm sample


def add_sample_parser(subparsers) -> None:
    parser = subparsers.add_parser("sample", help="draw images by ancestral sampling and save them as one grid PNG")
    parser.add_argument("--model", required=True, help="a saved DDPMDocPipeline (folder or Hub id)")
    parser.add_argument("--num-images", type=_positive_int, default=64)
    parser.add_argument("--steps", type=_positive_int, default=1000, help="sampling steps (1000: the full chain)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="grid.png", help="the grid PNG to write")
    parser.add_argument("--nrow", type=_positive_int, default=None, help="images per row (default: ⌈√N⌉)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.set_defaults(func=run_sample)


def run_sample(args) -> None:
    from .images import make_grid

    pipeline = load_pipeline(args.model, args.device)
    generator = torch.Generator(device="cpu").manual_seed(args.seed)
    images = pipeline(
        batch_size=args.num_images, generator=generator, num_inference_steps=args.steps, output_type="np"
    ).images
    make_grid(images, nrow=args.nrow).save(args.out)
    print(f"wrote {args.num_images} samples ({args.steps} steps, seed {args.seed}) to {args.out}")


# --------------------------------------------------------------------------------------------------------------
# hf-ddpm evaluate


def add_held_out_arguments(parser) -> None:
    """The flags that choose the held-out images (``hf-ddpm evaluate`` and ``hf-ddpm figures``; see
    :func:`held_out_source` and :func:`load_held_out`)."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--dataset",
        default=None,
        help="'digits' or a datasets Hub id / folder (default: the model's training data, from its "
        "training_run.json, else the digits)",
    )
    source.add_argument("--train-data-dir", default=None, help="an image folder (datasets' imagefolder)")
    parser.add_argument("--dataset-config", default=None, help="the dataset's configuration name")
    parser.add_argument("--image-column", default=None, help="default: the dataset's single Image column")
    parser.add_argument(
        "--split", default=None, help="default: the held-out split training used (test/validation, else a fraction)"
    )
    parser.add_argument(
        "--validation-fraction",
        type=float,
        default=None,
        help="held out when the data has no test/validation split (default: as in training, else 0.1)",
    )
    parser.add_argument(
        "--split-seed", type=int, default=None, help="seed of that hold-out (default: the training seed, else 0)"
    )


def add_evaluate_parser(subparsers) -> None:
    parser = subparsers.add_parser("evaluate", help="the held-out variational bound in bits/dim, with its terms")
    parser.add_argument("--model", required=True, help="a saved DDPMDocPipeline (folder or Hub id)")
    add_held_out_arguments(parser)
    parser.add_argument("--num-images", type=_positive_int, default=None, help="default: the whole split")
    parser.add_argument(
        "--num-inference-steps",
        type=_positive_int,
        default=None,
        help="the sampler judged: the bound (and the --num-samples samples) of the pipeline with this many ancestral "
        "steps, on the chain its scheduler's timestep_spacing gives (default: the full T-step chain)",
    )
    parser.add_argument(
        "--timesteps",
        default="all",
        help="'all' (the exact bound) or K ≥ 4: the chain's K/2 smallest timesteps plus K/2 drawn from its other "
        "steps, an unbiased estimate (all of them when the chain has no more than K steps)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the noise and the timestep subset")
    parser.add_argument("--batch-size", type=_positive_int, default=256, help="images per UNet call")
    quality = parser.add_argument_group("sample quality (hf_ddpm.metrics), against the held-out images")
    quality.add_argument("--num-samples", type=int, default=0, help="draw N samples (seeded by --seed) and report "
                         "FD, score, class histogram, precision/recall (default 0: skip)")
    quality.add_argument("--feature-model", default=None, help="transformers image model (Hub id or folder) for FD "
                         "and precision/recall, e.g. facebook/dinov2-small (default: the built-in digits evaluator)")
    quality.add_argument("--classifier", default=None, help="image classifier (Hub id, folder or 'digits') for the "
                         "score (default: the digits evaluator when --feature-model is not given, else none)")
    parser.add_argument("--json", default=None, help="write the numbers and settings to this JSON file")
    parser.add_argument("--plot", default=None, help="save a plot of L_t against t to this PNG")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.set_defaults(func=run_evaluate)


def timestep_count(spec: str, num_train_timesteps: int) -> int | None:
    """``--timesteps``: ``"all"`` → None (every timestep, the exact bound); ``"K"`` → K (at least
    ``MIN_STRATIFIED_TIMESTEPS``, at most T; see :meth:`hf_ddpm.timestep_plan.TimestepPlan.stratified`)."""
    if spec == "all":
        return None
    try:
        count = int(spec)
    except ValueError:
        count = 0
    if not MIN_STRATIFIED_TIMESTEPS <= count <= num_train_timesteps:
        raise ValueError(
            f"--timesteps must be 'all' or an integer in [{MIN_STRATIFIED_TIMESTEPS}, {num_train_timesteps}], "
            f"got {spec!r}"
        )
    return count


def held_out_source(args) -> tuple[dict, str]:
    """``load_eval_images`` keyword arguments for ``hf-ddpm evaluate``, and where they came from.

    Explicit flags win; without ``--dataset``/``--train-data-dir`` the data of the run that trained the model (its
    ``training_run.json``) is used, so the held-out split is the one training held out, with its fraction and seed;
    else the digits."""
    from .training.record import RUN_FILE, RunRecord

    flagged = args.dataset is not None or args.train_data_dir is not None
    record = None if flagged or not os.path.isdir(args.model) else RunRecord.load(args.model)
    if record is not None:
        data = record.config.data
        source = dict(dataset_name=data.dataset_name, train_data_dir=data.train_data_dir,
                      dataset_config_name=args.dataset_config or data.dataset_config_name)
        fraction, seed = data.validation_fraction, record.config.optim.seed
        origin = f"the training run ({os.path.join(args.model, RUN_FILE)})"
    else:
        source = dict(dataset_name=args.dataset, train_data_dir=args.train_data_dir,
                      dataset_config_name=args.dataset_config)
        fraction, seed = 0.1, 0
        origin = "the flags" if flagged else f"default (no {RUN_FILE})"
    source.update(validation_fraction=fraction if args.validation_fraction is None else args.validation_fraction,
                  seed=seed if args.split_seed is None else args.split_seed)
    return source, origin


def sample_quality_of(pipeline, held_out, args, num_inference_steps: int) -> dict:
    """``--num-samples``: draw the samples with ``num_inference_steps`` steps and judge them against the held-out
    images (``hf_ddpm.metrics``)."""
    from .metrics import sample_quality
    from .images import sample_grid

    samples, _ = sample_grid(pipeline, args.num_samples, num_inference_steps, args.seed)
    try:
        quality = sample_quality(samples, (held_out.tensor() + 1) / 2, feature_model=args.feature_model,
                                 classifier=args.classifier, device=pipeline.device)
    except OSError as error:  # a feature model or classifier that cannot be loaded
        raise ValueError(str(error)) from error
    score = "" if quality["inception_score"] is None else \
        f", {quality['score_name']} {quality['inception_score']:.3f}, classes {quality['class_histogram']}"
    print(f"{args.num_samples} samples ({num_inference_steps} steps, seed {args.seed}): {quality['fd_name']} "
          f"{quality['fd']:.4f}, precision {quality['precision']:.3f}, recall {quality['recall']:.3f}{score}")
    return dict(quality, num_inference_steps=num_inference_steps, seed=args.seed)


def load_held_out(args, pipeline):
    """The held-out images the flags of :func:`add_held_out_arguments` (and ``--num-images``) choose, at the model's
    resolution, and where the choice came from; data of another channel count than the model's is an error."""
    from .data import load_eval_images

    unet = pipeline.unet.config
    source, origin = held_out_source(args)
    try:
        held_out = load_eval_images(
            **source,
            split=args.split,
            image_column=args.image_column,
            resolution=unet.sample_size if isinstance(unet.sample_size, int) else None,
            num_images=args.num_images,
        )
    except ParameterError as error:
        hint = f"data chosen by {origin}; --dataset / --train-data-dir choose other data"
        raise ParameterError(error.parameter, f"{error.detail} ({hint})") from error
    if held_out.channels != unet.in_channels:
        raise ValueError(
            f"the data ({held_out.name}, split {held_out.split!r}) has {held_out.channels} channel(s) but --model "
            f"{args.model!r} expects {unet.in_channels}"
        )
    return held_out, origin


def run_evaluate(args) -> None:
    from .evaluation import plot_terms
    from .training.held_out import held_out_bound

    pipeline = load_pipeline(args.model, args.device)
    process = pipeline.scheduler.config
    T = process.num_train_timesteps
    num_timesteps = timestep_count(args.timesteps, T)
    steps = T if args.num_inference_steps is None else args.num_inference_steps
    if steps > T:
        raise ParameterError("num_inference_steps", f"must be at most the model's num_train_timesteps={T}, got {steps}")
    if args.num_samples < 0:
        raise ValueError(f"--num-samples must be ≥ 0 (0 skips sample quality), got {args.num_samples}")
    held_out, origin = load_held_out(args, pipeline)
    quality = sample_quality_of(pipeline, held_out, args, steps) if args.num_samples else None
    bound = held_out_bound(
        pipeline.unet,
        pipeline.scheduler,
        held_out.tensor().to(pipeline.device, pipeline.unet.dtype),
        num_timesteps=num_timesteps,
        seed=args.seed,
        batch_size=args.batch_size,
        num_inference_steps=steps,
    )
    print(f"{held_out.name}, split {held_out.split!r} (chosen by {origin})")
    print(bound.describe())
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
        if quality is not None:
            record["sample_quality"] = quality
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(record, handle, indent=2)
        print(f"wrote {args.json}")
    if args.plot:
        plot_terms(bound, args.plot)
        print(f"wrote {args.plot}")


# --------------------------------------------------------------------------------------------------------------
# hf-ddpm figures


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
                    "that hf-ddpm push shows them on the model card.")
    parser.add_argument("--model", required=True, help="a saved DDPMDocPipeline (folder or Hub id)")
    add_held_out_arguments(parser)
    parser.add_argument("--num-images", type=_positive_int, default=None,
                        help="held-out images of the rate–distortion table (default: the whole split); the first "
                             "few are also encoded for the shared-latent and interpolation figures")
    parser.add_argument("--out", default=None, help="output folder (default: MODEL/figures for a model folder, "
                                                    "else ./figures)")
    parser.add_argument("--seed", type=int, default=0, help="seeds every figure (progressive.png's samples are "
                                                            "hf-ddpm sample --seed's)")
    parser.add_argument("--batch-size", type=_positive_int, default=256, help="images per UNet call (rate–distortion)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.set_defaults(func=run_figures)


def run_figures(args) -> None:
    from .figures import FIGURES_DIR, add_to_record, write_figures
    from .rate_distortion import describe_summary

    pipeline = load_pipeline(args.model, args.device)
    held_out, origin = load_held_out(args, pipeline)
    out = args.out or (os.path.join(args.model, FIGURES_DIR) if os.path.isdir(args.model) else FIGURES_DIR)
    settings = {"model": args.model, "dataset": held_out.name, "split": held_out.split, "data_chosen_by": origin}
    summary = write_figures(pipeline, (held_out.tensor() + 1) / 2, out, seed=args.seed, settings=settings,
                            batch_size=args.batch_size)
    print(f"{held_out.name}, split {held_out.split!r} (chosen by {origin}): {len(held_out)} images")
    for name, seconds in summary["seconds"].items():
        print(f"  {name:16s} {seconds:7.1f} s")
    print(describe_summary(summary["rate_distortion"]))
    print(f"wrote the figures to {out}")
    if os.path.isdir(args.model) and add_to_record(args.model, out, summary):
        print(f"added the progressive figure and the rate–distortion summary to {args.model}'s training_run.json")


# --------------------------------------------------------------------------------------------------------------
# hf-ddpm push


def add_push_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "push", help="push a trained output folder (pipeline, card, sample grids) to the Hugging Face Hub",
        description="Create the repo if needed and upload the saved pipeline, its model card (rendered for the repo "
                    "id), metrics and images in one commit. Checkpoints and optimizer state are never uploaded.")
    parser.add_argument("--folder", required=True, help="output folder of training/train.py (holds model_index.json)")
    parser.add_argument("--repo-id", required=True, help="'user/name', 'org/name' or 'name'")
    parser.add_argument("--token", default=None, help="Hub token (default: $HF_TOKEN or `hf auth login`'s)")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.set_defaults(func=run_push)


def run_push(args) -> None:
    """A bad folder or repo id is a ValueError (exit status 2); a failed push exits with status 1 and the reason."""
    from .hub import HubPushError, push_output_folder

    try:
        url = push_output_folder(args.folder, args.repo_id, token=args.token, private=args.private)
    except HubPushError as err:
        raise SystemExit(f"hf-ddpm push: error: {err}") from None
    print(f"Pushed {args.folder} to {url}")


# --------------------------------------------------------------------------------------------------------------

SUBCOMMANDS = (add_sample_parser, add_evaluate_parser, add_figures_parser, add_push_parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-ddpm", description="Sample from and evaluate DDPM pipelines.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_parser in SUBCOMMANDS:
        add_parser(subparsers)
    return parser


# The library's parameters whose flags are not spelled "--" + the name with dashes.
FLAGS = {"dataset_name": "--dataset", "dataset_config_name": "--dataset-config", "eval_split": "--split",
         "num_timesteps": "--timesteps"}


def flag_of(parameter: str) -> str:
    """The ``hf-ddpm`` flag of a library parameter (``train_data_dir`` → ``--train-data-dir``)."""
    return FLAGS.get(parameter, "--" + parameter.replace("_", "-"))


def main(argv: list[str] | None = None) -> int:
    """Run ``hf-ddpm``; bad input (a ValueError; a library ``ParameterError`` with the flag it came from) is
    reported as one ``error:`` line with exit status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except ParameterError as error:
        parser.exit(2, f"hf-ddpm {args.command}: error: {error.with_name(flag_of(error.parameter))}\n")
    except ValueError as error:
        parser.exit(2, f"hf-ddpm {args.command}: error: {error}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
