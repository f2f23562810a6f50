"""``hf-ddpm convert``: an openai improved-diffusion or guided-diffusion checkpoint saved as a ``DDPMDocPipeline``.

    hf-ddpm convert guided-diffusion 256x256_diffusion_uncond.pt --out adm-256 -- $MODEL_FLAGS $DIFFUSION_FLAGS

The flags after ``--`` are openai's, as their READMEs write them (``--name value``, booleans True/False); the
others take the codebase's defaults. A bad flag, a file that is no checkpoint and a checkpoint that does not fit the
flags are one ``error:`` line naming openai's flag.
"""

from __future__ import annotations

import os

from ..convert import CODEBASES, from_openai, load_checkpoint
from ..errors import ParameterError


def add_convert_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert", help="save an openai improved-/guided-diffusion checkpoint as a DDPMDocPipeline",
        description="Convert openai's improved-diffusion or guided-diffusion (ADM) checkpoint into a DDPMDocPipeline "
                    "folder (a diffusers UNet2DModel and a DDPMDocScheduler). Give the model and diffusion flags it "
                    "was trained with after --, as openai's READMEs write them.")
    parser.add_argument("codebase", choices=tuple(CODEBASES), help="whose checkpoint it is")
    parser.add_argument("checkpoint", help="openai's .pt file (a torch.save-d UNetModel state dict)")
    parser.add_argument("--out", required=True, help="the folder to save the pipeline in")
    # nargs="+": a "*" positional would match nothing right after the checkpoint and leave the flags unparsed
    parser.add_argument("flags", nargs="+", metavar="-- FLAGS", help="openai's MODEL_FLAGS and DIFFUSION_FLAGS")
    parser.set_defaults(func=run_convert)


def _named(parameter: str) -> str:
    """How the error names a parameter: openai's flags as their scripts spell them."""
    return parameter if parameter in ("checkpoint", "state_dict", "flags") else f"--{parameter}"


def run_convert(args) -> None:
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise ValueError(f"--out {args.out!r} is a file, not a folder")
    codebase = CODEBASES[args.codebase]
    try:
        flags = codebase.parse(args.flags)
        pipeline = from_openai(codebase, load_checkpoint(args.checkpoint), flags)
    except ParameterError as error:
        raise ValueError(error.with_name(_named(error.parameter))) from error
    pipeline.save_pretrained(args.out)
    unet, scheduler = pipeline.unet.config, pipeline.scheduler.config
    labels = f", {unet.num_class_embeds} classes" if unet.num_class_embeds else ""
    millions = sum(p.numel() for p in pipeline.unet.parameters()) / 1e6
    print(f"wrote {args.out}: {args.codebase} UNet2DModel ({millions:.1f}M parameters{labels}), T = "
          f"{scheduler.num_train_timesteps} ({scheduler.beta_schedule}, {scheduler.variance_type}, "
          f"{scheduler.prediction_type}), rescale_timesteps {pipeline.config.rescale_timesteps}")
