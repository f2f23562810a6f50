"""``hf-ddpm``: sample from and evaluate a trained pipeline without writing Python.

    hf-ddpm sample   --model DIR --num-images 64 --steps 1000 --seed 0 --out grid.png
                     [--class-labels 3,7,… --guidance-scale S]
    hf-ddpm evaluate --model DIR [--dataset digits|<hub id> | --train-data-dir DIR] [--split test]
                     [--num-images N] [--num-inference-steps S] [--timesteps all|K] [--json out.json] [--plot lt.png]
                     [--num-samples N [--feature-model ID] [--classifier ID]]
    hf-ddpm figures  --model DIR [--dataset … as for evaluate] [--out DIR] [--seed S] [--num-images N]
    hf-ddpm push     --folder DIR --repo-id ID [--token T] [--private]
    hf-ddpm reference-stats --dataset D [--split train] [--feature-model ID] --out stats.npz
    hf-ddpm convert  guided-diffusion|improved-diffusion CHECKPOINT.pt --out DIR -- FLAGS…

Each subcommand is a module here with an ``add_<name>_parser(subparsers)`` that registers its options and sets
``func``; the work is done by library functions. A new subcommand is one more entry in ``SUBCOMMANDS``.
"""

from __future__ import annotations

import argparse
import sys

from ..contention import follow_the_machine
from ..errors import ParameterError
from .common import set_cpu_threads
from .convert import add_convert_parser
from .evaluate import add_evaluate_parser
from .figures import add_figures_parser
from .push import add_push_parser
from .reference_stats import add_reference_stats_parser
from .sample import add_sample_parser

SUBCOMMANDS = (add_sample_parser, add_evaluate_parser, add_figures_parser, add_push_parser, add_convert_parser,
               add_reference_stats_parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-ddpm", description="Sample from and evaluate DDPM pipelines.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_parser in SUBCOMMANDS:
        add_parser(subparsers)
    return parser


# The library's parameters whose flags are not spelled "--" + the name with dashes.
FLAGS = {"dataset_name": "--dataset", "dataset_config_name": "--dataset-config", "eval_split": "--split",
         "num_timesteps": "--timesteps"}


def flag_of(parameter: str, flag_names: dict[str, str] | None = None) -> str:
    """The ``hf-ddpm`` flag of a library parameter (``train_data_dir`` → ``--train-data-dir``); ``flag_names``: a
    subcommand's own spellings (its parser's ``flag_names`` default, e.g. sample's ``--steps``)."""
    return {**FLAGS, **(flag_names or {})}.get(parameter, "--" + parameter.replace("_", "-"))


def main(argv: list[str] | None = None) -> int:
    """Run ``hf-ddpm`` (``argv``: the command line's arguments when None, which also sets the process's CPU threads);
    bad input (a ValueError; a library ``ParameterError`` with the flag it came from) is reported as one ``error:``
    line with exit status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # the command line: its process's CPU threads, following the machine; a call from Python keeps the caller's
    threads = set_cpu_threads() if argv is None else None
    try:
        with follow_the_machine(threads):
            args.func(args)
        end_process_group(meet=True)
    except ParameterError as error:
        end_process_group(meet=False)
        flag = flag_of(error.parameter, getattr(args, "flag_names", None))
        parser.exit(2, f"hf-ddpm {args.command}: error: {error.with_name(flag)}\n")
    except ValueError as error:
        end_process_group(meet=False)
        parser.exit(2, f"hf-ddpm {args.command}: error: {error}\n")
    return 0


def end_process_group(meet: bool) -> None:
    """Under ``accelerate launch``: the processes wait for each other (``meet``, after a command that finished) and the
    process group is destroyed before the interpreter exits. Left to the interpreter's exit, a gloo group whose peer
    has already gone can abort the process ("terminate called without an active exception") after its work is done."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    if meet:
        dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
