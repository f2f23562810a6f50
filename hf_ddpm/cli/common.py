"""What the ``hf-ddpm`` subcommands share: loading a pipeline, the held-out data flags of ``evaluate`` and ``figures``
(by default the data the model was trained on, from its ``training_run.json``), and argument types."""

from __future__ import annotations

import argparse
import os
import re

import torch

from ..errors import ParameterError


def process_state():
    """This process among those ``accelerate launch`` started (an ``accelerate.PartialState``, on the CPU with gloo
    under ``ACCELERATE_USE_CPU=1``; one process without a launcher). Processes that do not form one group are an
    error (:func:`~hf_ddpm.training.distributed.check_process_group`)."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    from ..training.distributed import check_process_group

    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    check_process_group(state)
    return state


def set_cpu_threads():
    """torch's CPU threads for a command-line process, chosen as the trainer chooses them
    (:func:`hf_ddpm.training.machine.cpu_threads`: OMP_NUM_THREADS if set, else the cores); the choice."""
    from ..training.machine import cpu_threads

    choice = cpu_threads()
    torch.set_num_threads(choice.threads)
    return choice


def device_name(name: str | None) -> str:
    """``--device``, else this process's accelerator under a multi-process launch, else cuda if available, else cpu."""
    if name:
        return name
    state = process_state()
    if state.num_processes > 1:
        return str(state.device)
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_pipeline(model: str, device: str | None = None):
    """``DDPMDocPipeline.from_pretrained(model)`` on ``device``; a ValueError naming ``--model`` if it fails."""
    from ..pipelines import DDPMDocPipeline

    try:
        pipeline = DDPMDocPipeline.from_pretrained(model)
    except (OSError, ValueError) as error:
        raise ValueError(f"--model {model!r} could not be loaded as a DDPMDocPipeline: {error}") from error
    pipeline.set_progress_bar_config(disable=True)
    return pipeline.to(device_name(device))


def class_labels_of(spec: str | None, pipeline) -> list | None:
    """``--class-labels``: comma-separated class names or ids → the pipeline's ``class_labels`` (a name where the
    model has a class of that name, else an integer id; the pipeline checks them)."""
    if spec is None:
        return None
    conditioning = pipeline.conditioning
    names = set(conditioning.names) if conditioning is not None else set()
    tokens = [token.strip() for token in spec.split(",")]
    return [token if token in names or not re.fullmatch(r"[+-]?\d+", token) else int(token) for token in tokens]


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer ≥ 0, got {text}")
    return value


def torch_device(text: str) -> str:
    """``--device``: a device torch knows and this machine has (a GPU that is not there is refused before any work,
    not at the first tensor moved to it)."""
    try:
        device = torch.device(text)
    except RuntimeError as error:
        raise argparse.ArgumentTypeError(f"{text!r} is not a torch device ({error})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: this machine has no CUDA device (torch.cuda.is_available() is "
                                         "False); leave --device out to use the CPU")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: this machine has no MPS device")
    return text


def output_file(kind: str | None = None):
    """An argparse type for a file written at the end of the work: its folder must exist and be writable and the
    path must not be a folder, so a typo is refused before the work, not after it; ``kind`` ``"image"`` (a suffix
    PIL writes) or ``"plot"`` (one matplotlib writes) checks the suffix too."""

    def parse(text: str) -> str:
        folder = os.path.dirname(os.path.abspath(text))
        if os.path.isdir(text):
            raise argparse.ArgumentTypeError(f"{text!r} is a folder: give a file name")
        if not os.path.isdir(folder):
            raise argparse.ArgumentTypeError(f"{text!r}: the folder {folder!r} does not exist")
        if not os.access(folder, os.W_OK):
            raise argparse.ArgumentTypeError(f"{text!r}: the folder {folder!r} is not writable")
        if kind is None:
            return text
        writer, suffixes = {"image": ("PIL", _image_suffixes), "plot": ("matplotlib", _plot_suffixes)}[kind]
        suffixes, suffix = suffixes(), os.path.splitext(text)[1].lower()
        if suffix not in suffixes:
            raise argparse.ArgumentTypeError(f"{text!r}: {writer} writes no {suffix or 'suffix-less'!r} {kind} "
                                             f"(give one of {', '.join(sorted(suffixes))})")
        return text

    return parse


def _image_suffixes() -> set[str]:
    from PIL import Image

    return {suffix for suffix, name in Image.registered_extensions().items() if name in Image.SAVE}


def _plot_suffixes() -> set[str]:
    from matplotlib.backend_bases import FigureCanvasBase

    return {"." + suffix for suffix in FigureCanvasBase.get_supported_filetypes()}


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
    parser.add_argument("--label-column", default=None, help="a class-conditional model's held-out labels: the "
                        "dataset's class-label column (default: the training run's, else 'label'; the digits: their "
                        "digit)")


def held_out_source(args) -> tuple[dict, str]:
    """``load_eval_images`` keyword arguments for ``hf-ddpm evaluate``, and where they came from.

    Explicit flags win; without ``--dataset``/``--train-data-dir`` the data of the run that trained the model (its
    ``training_run.json``) is used, so the held-out split is the one training held out, with its fraction and seed;
    else the digits."""
    from ..training.record import RUN_FILE, RunRecord

    flagged = args.dataset is not None or args.train_data_dir is not None
    record = None if flagged or not os.path.isdir(args.model) else RunRecord.load(args.model)
    if record is not None:
        data = record.config.data
        source = dict(dataset_name=data.dataset_name, train_data_dir=data.train_data_dir,
                      dataset_config_name=args.dataset_config or data.dataset_config_name)
        fraction, seed = data.validation_fraction, record.config.optim.seed
        source["label_column"] = args.label_column or data.label_column
        origin = f"the training run ({os.path.join(args.model, RUN_FILE)})"
    else:
        source = dict(dataset_name=args.dataset, train_data_dir=args.train_data_dir,
                      dataset_config_name=args.dataset_config, label_column=args.label_column or "label")
        fraction, seed = 0.1, 0
        origin = "the flags" if flagged else f"default (no {RUN_FILE})"
    source.update(validation_fraction=fraction if args.validation_fraction is None else args.validation_fraction,
                  seed=seed if args.split_seed is None else args.split_seed)
    return source, origin


def load_held_out(args, pipeline):
    """The held-out images the flags of :func:`add_held_out_arguments` (and ``--num-images``) choose, at the model's
    resolution, and where the choice came from; data of another channel count than the model's is an error. For a
    class-conditional model the images carry their labels (``label_tensor()``), which must be the model's classes."""
    from ..data import load_eval_images

    unet = pipeline.unet.config
    source, origin = held_out_source(args)
    if not pipeline.is_class_conditional:
        source["label_column"] = None
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
    if held_out.labels is not None:
        try:
            pipeline.conditioning.label_ids(held_out.label_tensor())
        except ParameterError as error:
            raise ParameterError("label_column", f"{source['label_column']!r} of {held_out.name} does not hold the "
                                                 f"model's classes: {error.detail}") from error
    return held_out, origin


def announce_cost(pipeline, phases, *, shorter: str, enabled: bool = True):
    """Print what ``phases`` (:class:`hf_ddpm.cost.Phase`) will take on this machine, the network timed at 1 image
    and at their largest call, with one line naming the flags that shorten them (``shorter``) when that is over
    :data:`~hf_ddpm.cost.CPU_LIMIT_SECONDS` on a CPU; return the :class:`~hf_ddpm.progress.NetworkProgress` that shows
    them as they run (``start`` them, ``close`` it). ``enabled`` False (processes other than the main one): no
    timing, nothing printed."""
    from ..cost import CPU_LIMIT_SECONDS, describe_phases, describe_seconds, network_cost
    from ..progress import NetworkProgress

    phases = list(phases)
    if enabled:
        network = network_cost(pipeline.unet, max([-(-p.images // p.calls) for p in phases if p.calls], default=1))
        for line in describe_phases("estimated on this machine", phases, network):
            print(line)
        seconds = network.seconds(*phases)
        if pipeline.device.type == "cpu" and seconds > CPU_LIMIT_SECONDS:
            print(f"≈ {describe_seconds(seconds)} is long for a CPU: {shorter} shorten it")
    return NetworkProgress(pipeline.unet, enabled=enabled)
