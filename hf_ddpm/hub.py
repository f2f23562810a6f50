"""Publishing a trained pipeline on the Hugging Face Hub: the model card, the push, the ``push`` command.

* :func:`write_model_card` renders ``model_card.md`` (Jinja, through huggingface_hub's ``ModelCard`` and
  ``ModelCardData``) into ``<output_dir>/README.md`` from the saved pipeline's configs and the run's settings and
  metrics, and stores those inputs in ``training_run.json`` so the card can be rendered again for another repo id.
  No network.
* :func:`check_card_metadata` checks the card's YAML offline (huggingface_hub's ``ModelCard.validate`` posts the
  card to the Hub's ``/api/validate-yaml``, which our machines cannot reach).
* :func:`push_output_folder` creates the repo (idempotent) and uploads the pipeline, the card and the images in one
  commit — never checkpoints or optimizer state. Failures become a :class:`HubPushError`; local files are never
  modified.
* :class:`CheckpointPusher` pushes pipelines saved during training from a background thread
  (``--push_every_checkpoint``), never blocking or failing the training loop.
* :func:`add_hub_arguments`, :func:`check_hub_arguments`, :func:`add_push_parser`, :func:`run_push`: command line.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import math
import os
import re
import shutil
import tempfile
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Mapping

import yaml
from huggingface_hub import CommitOperationAdd, EvalResult, HfApi, ModelCard, ModelCardData
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from .errors import ParameterError
from .fourier_unet import input_channels

logger = logging.getLogger(__name__)

TEMPLATE_PATH = Path(__file__).with_name("model_card.md")  # a link to the repository root's model_card.md
RUN_FILE = "training_run.json"
CARD_FILE = "README.md"
CARD_TAGS = ["pytorch", "diffusers", "unconditional-image-generation", "ddpm", "hf-ddpm"]
PIPELINE_TAG = "unconditional-image-generation"
LICENSE = "apache-2.0"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")
# Files beside the pipeline that are never pushed: training state and logs.
EXCLUDED_DIRS = ("checkpoint-*", "checkpoints", "logs", ".*", "__pycache__")
BUILTIN_DIGITS = "digits"
# The networks the card describes: diffusers' own UNet, and hf-ddpm's Fourier-feature UNet (bundled in remote_code/).
PLAIN_UNET = "UNet2DModel"
FOURIER_UNET = "FourierUNet2DModel"
UNET_CLASSES = (PLAIN_UNET, FOURIER_UNET)


class HubPushError(RuntimeError):
    """A push to the Hub failed; the message says why and how to retry. The local output is untouched."""


# ---------------------------------------------------------------------------------------------------- the card


def write_model_card(
    output_dir: str | os.PathLike,
    *,
    args: argparse.Namespace | Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    global_step: int | None = None,
    wall_time_s: float | None = None,
    num_processes: int = 1,
    sample_grid: str | None = None,
    loss_plot: str | None = None,
    hardware: str | None = None,
) -> Path:
    """Render the model card of the pipeline saved in ``output_dir`` into ``output_dir/README.md``.

    Model and scheduler settings are read from the saved pipeline (``unet/config.json``,
    ``scheduler/scheduler_config.json``, the parameter count from the weights), so call this after
    ``pipeline.save_pretrained(output_dir)``. ``args`` is the trainer's namespace (flag names as in
    ``training/train.py``; missing ones are left out of the card). ``metrics`` is the trainer's ``metrics.json``
    content: ``test_bits_per_dim`` (+ ``_stderr``, ``_timesteps``), ``test_split``, ``num_test_images``,
    ``num_samples``, ``num_inference_steps`` and ``sample_quality`` (``hf_ddpm.metrics.sample_quality``'s dict).
    ``sample_grid``/``loss_plot`` are paths relative to ``output_dir``. Also writes ``training_run.json``.
    """
    output_dir = Path(output_dir)
    _read_pipeline_configs(output_dir)  # fail now, with a clear message, if no pipeline is saved there
    for name, rel in (("sample_grid", sample_grid), ("loss_plot", loss_plot)):
        if rel is not None and not (output_dir / rel).is_file():
            raise ValueError(f"{name}={rel!r} is not a file inside {output_dir}")
    settings = dict(vars(args) if isinstance(args, argparse.Namespace) else (args or {}))
    run = {
        "repo_id": settings.get("hub_model_id"),
        "settings": {k: v for k, v in settings.items() if k in _CARD_SETTINGS and v is not None},
        "metrics": dict(metrics or {}),
        "global_step": global_step,
        "wall_time_s": wall_time_s,
        "num_processes": num_processes,
        "hardware": hardware or _describe_hardware(num_processes),
        "sample_grid": sample_grid,
        "loss_plot": loss_plot,
    }
    card = render_model_card(output_dir, run)
    (output_dir / RUN_FILE).write_text(json.dumps(run, indent=2, default=str) + "\n", encoding="utf-8")
    card_path = output_dir / CARD_FILE
    card.save(card_path)
    return card_path


def render_model_card(folder: str | os.PathLike, run: Mapping[str, Any], repo_id: str | None = None) -> ModelCard:
    """The card for the pipeline in ``folder`` and the run description ``run`` (the ``training_run.json`` schema).

    ``repo_id`` overrides the run's own repo id (the usage snippet loads from it). The metadata is checked with
    :func:`check_card_metadata` before the card is returned.
    """
    context = _card_context(Path(folder), run, repo_id)
    card = ModelCard.from_template(_card_data(context), template_path=str(TEMPLATE_PATH), **context)
    check_card_metadata(card)
    return card


def check_card_metadata(card: ModelCard | str) -> None:
    """Offline check of a card's YAML metadata; raises ``ValueError`` naming the problem.

    ``ModelCard.validate`` (huggingface_hub 2.4) sends the card to the Hub's ``/api/validate-yaml`` endpoint, so it
    cannot run offline. This is the local stand-in: the YAML block parses to a mapping, huggingface_hub's own
    ``ModelCardData`` accepts it with metadata errors raised (``model-index`` parsed into ``EvalResult``s and written
    back), the fields the Hub reads have the right types and finite values, and the library, pipeline tag and tags
    are the ones a diffusers DDPM page needs.
    """
    text = str(card)
    if not text.startswith("---\n"):
        raise ValueError("model card has no YAML metadata block (it must start with '---')")
    block = text[4:].split("\n---\n", 1)[0]
    metadata = yaml.safe_load(block)
    if not isinstance(metadata, dict):
        raise ValueError(f"model card metadata must be a YAML mapping, got {type(metadata).__name__}")
    try:
        data = ModelCardData(**metadata, ignore_metadata_errors=False)
    except (KeyError, TypeError, AttributeError) as err:  # huggingface_hub's model-index parser on a malformed entry
        raise ValueError(f"model card metadata is malformed (model-index): missing or bad {err}") from err
    if data.library_name != "diffusers":
        raise ValueError(f"library_name must be 'diffusers', got {data.library_name!r}")
    if data.pipeline_tag != PIPELINE_TAG:
        raise ValueError(f"pipeline_tag must be {PIPELINE_TAG!r}, got {data.pipeline_tag!r}")
    if not isinstance(data.license, str) or not data.license:
        raise ValueError(f"license must be a licence id string, got {data.license!r}")
    for field in ("tags", "datasets"):
        values = getattr(data, field)
        if values is not None and not (isinstance(values, list) and all(isinstance(v, str) and v for v in values)):
            raise ValueError(f"{field} must be a list of non-empty strings, got {values!r}")
    missing = [tag for tag in CARD_TAGS if tag not in (data.tags or [])]
    if missing:
        raise ValueError(f"tags lack {missing}")
    for result in data.eval_results or []:
        if not isinstance(result.metric_value, (int, float)) or not math.isfinite(result.metric_value):
            raise ValueError(f"model-index metric {result.metric_type!r} has a non-finite value {result.metric_value!r}")
    if data.eval_results and data.to_dict().get("model-index") is None:
        raise ValueError("eval_results did not convert to a model-index")


# Training flags (issue 3's names) the card shows; everything else in the namespace is left out of training_run.json.
_CARD_SETTINGS = {
    "dataset_name", "dataset_config_name", "train_data_dir", "resolution", "center_crop", "random_flip",
    "validation_fraction", "train_batch_size", "gradient_accumulation_steps", "num_epochs", "max_train_steps",
    "learning_rate", "lr_scheduler", "lr_warmup_steps", "adam_beta1", "adam_beta2", "adam_weight_decay",
    "max_grad_norm", "use_ema", "ema_max_decay", "ema_inv_gamma", "ema_power", "ema_min_decay",
    "mixed_precision", "loss_type", "timestep_sampler", "seed", "hub_model_id",
}


def _read_pipeline_configs(folder: Path) -> tuple[dict, dict, dict]:
    """model_index.json, the UNet config and the scheduler config of a saved pipeline."""
    paths = (folder / "model_index.json", folder / "unet" / "config.json", folder / "scheduler" / "scheduler_config.json")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ValueError(f"{folder} does not hold a saved pipeline (missing {', '.join(missing)}); "
                         "call pipeline.save_pretrained(folder) first")
    return tuple(json.loads(p.read_text(encoding="utf-8")) for p in paths)  # type: ignore[return-value]


def _count_parameters(unet_dir: Path) -> int:
    """Number of parameters in the UNet's safetensors weights, read from the file headers (no tensor is loaded)."""
    from safetensors import safe_open

    total = 0
    for path in sorted(unet_dir.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():
                total += math.prod(f.get_slice(name).get_shape())
    return total


def _describe_hardware(num_processes: int) -> str:
    import torch

    if torch.cuda.is_available():
        return f"{num_processes} × {torch.cuda.get_device_name(0)}"
    return f"CPU ({os.cpu_count()} cores), {num_processes} process{'es' if num_processes != 1 else ''}"


def _parameters_text(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k" if n >= 1e3 else str(n)


def _dataset_info(settings: Mapping[str, Any], metrics: Mapping[str, Any]) -> dict:
    """What the data was: a Hub dataset (listed in the card's ``datasets``), a local image folder, or the digits."""
    if not settings:  # a pipeline saved outside training/train.py: say nothing we do not know
        return {"description": "data that was not recorded", "hub_id": None, "config": None,
                "index_type": "unknown", "index_name": "unknown"}
    name, data_dir = settings.get("dataset_name"), settings.get("train_data_dir")
    if data_dir:
        return {"description": f"the images in a local folder ({Path(data_dir).name})", "hub_id": None,
                "config": None, "index_type": "imagefolder", "index_name": Path(data_dir).name}
    if name and name != BUILTIN_DIGITS and not Path(name).exists():
        return {"description": name, "hub_id": name, "config": settings.get("dataset_config_name"),
                "index_type": name, "index_name": name}
    if name and name != BUILTIN_DIGITS:
        return {"description": f"a local dataset ({Path(name).name})", "hub_id": None, "config": None,
                "index_type": "local", "index_name": Path(name).name}
    return {"description": "scikit-learn's handwritten digits (8×8, 17 grey levels)", "hub_id": None, "config": None,
            "index_type": "sklearn-digits", "index_name": "scikit-learn digits"}


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower()).strip("_")


def _sample_metrics(metrics: Mapping[str, Any]) -> list[dict]:
    """Sample-quality numbers from the metrics helper's keys (``hf_ddpm.metrics.sample_quality``), named after the
    network whose features they use: "FID" and "Inception Score" only for Inception-v3, else e.g. "FD (digits
    classifier)"; a name that claims FID for other features is a ``ValueError``."""
    features = str(metrics.get("feature_model") or "unknown features")
    classifier = str(metrics.get("classifier") or features)
    is_inception = lambda net: _slug(net).startswith("inception")  # noqa: E731
    n, ref = metrics.get("num_samples"), metrics.get("num_reference")
    data = (f"{n} samples against {ref} held-out images" if n and ref else "samples against held-out images")
    found = []
    if metrics.get("fd") is not None:
        name = "FID" if is_inception(features) else str(metrics.get("fd_name") or f"FD ({features})")
        if re.search(r"\bFID\b", name, flags=re.IGNORECASE) and not is_inception(features):
            raise ValueError(f"sample metric named {name!r}, but its features come from {features!r}, not Inception-v3")
        found.append({"name": name, "type": "fid" if is_inception(features) else f"fd_{_slug(features)}",
                      "value": float(metrics["fd"]), "data": data, "inception": is_inception(features)})
    if metrics.get("inception_score") is not None:
        name = "Inception Score" if is_inception(classifier) else str(metrics.get("score_name") or f"classifier score ({classifier})")
        found.append({"name": name, "type": "inception_score" if is_inception(classifier) else f"classifier_score_{_slug(classifier)}",
                      "value": float(metrics["inception_score"]), "data": data, "inception": is_inception(classifier)})
    for key in ("precision", "recall"):
        if metrics.get(key) is not None:
            found.append({"name": f"{key.capitalize()} ({features})", "type": f"{key}_{_slug(features)}",
                          "value": float(metrics[key]), "data": data, "inception": is_inception(features)})
    return found


def _card_context(folder: Path, run: Mapping[str, Any], repo_id: str | None) -> dict:
    """Every template variable of model_card.md, from the saved configs and the run description."""
    _, unet, sched = _read_pipeline_configs(folder)
    settings = run.get("settings") or {}
    metrics = run.get("metrics") or {}
    repo_id = repo_id or run.get("repo_id") or folder.resolve().name
    dataset = _dataset_info(settings, metrics)
    T = int(sched["num_train_timesteps"])
    variance_type = sched.get("variance_type", "fixed_small")
    prediction_type = sched.get("prediction_type", "epsilon")
    loss_type = settings.get("loss_type")  # None: a pipeline saved outside training/train.py
    channels = int(unet.get("in_channels", 3))
    resolution = int(settings.get("resolution") or unet.get("sample_size"))

    attention_levels = [str(unet["sample_size"] // 2**i) for i, block in enumerate(unet.get("down_block_types", []))
                        if "Attn" in block]
    unet_class = unet.get("_class_name", PLAIN_UNET)
    if unet_class not in UNET_CLASSES:
        raise ValueError(f"{folder / 'unet' / 'config.json'} names the class {unet_class!r}; the model card describes "
                         f"only {' or '.join(UNET_CLASSES)}")
    fourier_periods = unet.get("fourier_periods") if unet_class == FOURIER_UNET else None
    unet_info = {
        "class_name": unet_class,
        "fourier_periods_text": ", ".join(f"{float(p):g}" for p in fourier_periods) if fourier_periods else None,
        "parameters_text": _parameters_text(_count_parameters(folder / "unet")),
        "block_out_channels": unet.get("block_out_channels", []),
        "layers_per_block": unet.get("layers_per_block"),
        "attention_text": ", ".join(f"{r}×{r}" for r in attention_levels) if attention_levels else "no level",
    }
    schedule = sched.get("beta_schedule")
    beta_text = (f"{schedule}, β_1 = {sched['beta_start']:g} → β_T = {sched['beta_end']:g}"
                 if schedule in ("linear", "scaled_linear") else f"`{schedule}`")
    if sched.get("trained_betas") is not None:
        beta_text = "given explicitly (trained_betas)"
    variance_text = {
        "fixed_small": "σ_t² = β̃_t (the posterior variance)",
        "fixed_small_log": "σ_t² = β̃_t (the posterior variance)",
        "fixed_large": "σ_t² = β_t",
        "fixed_large_log": "σ_t² = β_t",
        "learned": "learned; the network's extra channels are log σ_t²",
        "learned_range": "learned; log σ_t² interpolates between log β_t and log β̃_t (improved DDPM)",
    }.get(variance_type, variance_type)
    symbols = {"epsilon": ("ε", "ε_θ"), "sample": ("x_0", "x̂_θ"), "v_prediction": ("v", "v_θ")}
    target_symbol, output_symbol = symbols.get(prediction_type, ("target", "f_θ"))
    loss_text = {
        "simple": f"L_simple, the unweighted MSE on {target_symbol} (Eq. 14)",
        "vlb": "the variational bound L_vlb (Eq. 5)",
        "hybrid": "L_hybrid = L_simple + λ·L_vlb (improved DDPM)",
    }.get(loss_type, loss_type or "not recorded")
    sampler = settings.get("timestep_sampler")
    timestep_sampler_text = {None: "not recorded", "uniform": "uniform"}.get(
        sampler, f"{sampler} (importance sampling of t by the bound's terms)")

    bpd = metrics.get("test_bits_per_dim")
    sample_metrics = _sample_metrics(metrics.get("sample_quality") or metrics)  # nested (trainer) or merged
    eval_description = metrics.get("test_split")
    if not eval_description:
        eval_description = ("the digits' test split (index i % 5 == 4)" if dataset["index_type"] == "sklearn-digits"
                            else "held-out images")
        if metrics.get("num_test_images"):
            eval_description += f", {metrics['num_test_images']} images"

    batch = settings.get("train_batch_size")
    accumulation = settings.get("gradient_accumulation_steps", 1) or 1
    num_processes = run.get("num_processes") or 1
    rows = []
    if run.get("global_step") is not None:
        rows.append(("optimizer steps", f"{run['global_step']:,}"))
    if batch is not None:
        rows.append(("batch", f"{batch * accumulation * num_processes} per step ({batch} per process × "
                              f"{accumulation} accumulation × {num_processes} process{'es' if num_processes != 1 else ''})"))
    if settings.get("learning_rate") is not None:
        lr = f"{settings['learning_rate']:g}"
        if settings.get("lr_scheduler"):
            lr += f", {settings['lr_scheduler']} schedule"
        if settings.get("lr_warmup_steps"):
            lr += f", {settings['lr_warmup_steps']} warm-up steps"
        rows.append(("learning rate (AdamW)", lr))
    if "use_ema" in settings:
        ema = "no"
        if settings["use_ema"]:
            parts = [f"{k.removeprefix('ema_')} {settings[k]:g}" for k in ("ema_max_decay", "ema_inv_gamma", "ema_power")
                     if settings.get(k) is not None]
            ema = "yes (diffusers' EMAModel" + (", " + ", ".join(parts) if parts else "") + "); the weights here are the EMA weights"
        rows.append(("EMA", ema))
    if settings.get("mixed_precision"):
        rows.append(("precision", {"no": "float32", "fp16": "float16 mixed", "bf16": "bfloat16 mixed"}.get(
            settings["mixed_precision"], settings["mixed_precision"])))
    if run.get("hardware"):
        rows.append(("hardware", run["hardware"]))
    if run.get("wall_time_s") is not None:
        rows.append(("training wall time", _duration_text(run["wall_time_s"])))
    if settings.get("seed") is not None:
        rows.append(("seed", str(settings["seed"])))
    augmentation = ", ".join(a for a, on in (("random horizontal flips", settings.get("random_flip")),
                                             ("centre crop", settings.get("center_crop"))) if on)
    # Why diffusers' own DDPMPipeline (UNet2DModel + DDPMScheduler, no hf-ddpm code) cannot sample this model, if not.
    # (An explicit β schedule, trained_betas, is no reason, nor are fixed_small_log and learned_range: DDPMScheduler
    # gives the same chains, tests/test_scheduler.py.)
    no_fallback_reasons = []
    if unet_class == FOURIER_UNET:
        no_fallback_reasons.append(
            f"the network is hf-ddpm's `{FOURIER_UNET}`, which diffusers cannot build by itself "
            f"(`UNet2DModel.from_pretrained` refuses its weights, whose first convolution reads "
            f"{input_channels(channels, fourier_periods or ())} channels, the image's {channels} and its Fourier "
            "features)")
    if variance_type == "learned":
        no_fallback_reasons.append(
            "this model's variance type `learned` means something else in diffusers' `DDPMScheduler` "
            "(hf-ddpm's `learned` is a log-variance, diffusers reads a variance)")
    if variance_type == "fixed_large_log":
        no_fallback_reasons.append("diffusers' `DDPMScheduler` samples NaN with the variance type `fixed_large_log`")
    from .losses import HYBRID_VLB_WEIGHT

    return {
        "hf_ddpm_version": _version(),
        "repo_id": repo_id,
        "title": repo_id.split("/")[-1],
        "dataset": dataset,
        "resolution": resolution,
        "channels": channels,
        "channels_word": "greyscale" if channels == 1 else f"{channels} channels",
        "augmentation": augmentation,
        "unet": unet_info,
        "num_train_timesteps": T,
        "fewer_steps": max(1, T // 10),
        "beta_text": beta_text,
        "variance_type": variance_type,
        "variance_text": variance_text,
        "prediction_type": prediction_type,
        "loss_type": loss_type,
        "loss_text": loss_text,
        "hybrid_weight": HYBRID_VLB_WEIGHT,
        "target_symbol": target_symbol,
        "output_symbol": output_symbol,
        "timestep_sampler_text": timestep_sampler_text,
        "training_rows": rows,
        "bits_per_dim": None if bpd is None else float(bpd),
        "bits_per_dim_stderr": metrics.get("test_bits_per_dim_stderr"),
        "bits_per_dim_timesteps": metrics.get("test_bits_per_dim_timesteps"),
        "eval_description": eval_description,
        "sample_metrics": sample_metrics,
        "fid_reported": any(m["type"] == "fid" for m in sample_metrics),
        "sample_grid": run.get("sample_grid"),
        "sample_grid_caption": _grid_caption(metrics, T),
        "loss_plot": run.get("loss_plot"),
        "diffusers_fallback": not no_fallback_reasons,
        "no_fallback_reason": "; and ".join(no_fallback_reasons),
    }


def _grid_caption(metrics: Mapping[str, Any], T: int) -> str:
    steps = metrics.get("num_inference_steps") or T
    count = f"{metrics['num_samples']} samples" if metrics.get("num_samples") else "Samples"
    chain = f"all {T} ancestral steps" if steps == T else f"{steps} of the {T} steps (respaced chain)"
    return f"{count} from the final EMA model, {chain}."


def _duration_text(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def _card_data(context: Mapping[str, Any]) -> ModelCardData:
    """The YAML metadata: library, licence, tags, pipeline tag, Hub datasets and the model-index of measured numbers."""
    dataset = context["dataset"]
    results = []
    common = dict(task_type=PIPELINE_TAG, task_name="Unconditional image generation",
                  dataset_type=dataset["index_type"], dataset_name=dataset["index_name"],
                  dataset_config=dataset["config"])
    if context["bits_per_dim"] is not None:
        results.append(EvalResult(**common, metric_type="bits_per_dim", metric_name="NLL bound (bits/dim)",
                                  metric_value=round(context["bits_per_dim"], 4)))
    for m in context["sample_metrics"]:
        results.append(EvalResult(**common, metric_type=m["type"], metric_name=m["name"],
                                  metric_value=round(m["value"], 4)))
    return ModelCardData(
        library_name="diffusers",
        license=LICENSE,
        tags=list(CARD_TAGS),
        pipeline_tag=PIPELINE_TAG,
        datasets=[dataset["hub_id"]] if dataset["hub_id"] else None,
        model_name=context["repo_id"],
        eval_results=results or None,
    )


# ---------------------------------------------------------------------------------------------------- pushing


def pipeline_files(folder: str | os.PathLike) -> list[str]:
    """Relative paths of a saved pipeline: ``model_index.json`` and every file of the components it names."""
    folder = Path(folder)
    model_index, _, _ = _read_pipeline_configs(folder)
    components = [name for name, value in model_index.items()
                  if not name.startswith("_") and isinstance(value, list) and value and value[0] is not None]
    files = ["model_index.json"]
    for name in components:
        files += sorted(p.relative_to(folder).as_posix() for p in (folder / name).rglob("*")
                        if p.is_file() and not _is_excluded(p.relative_to(folder)))
    return files


def files_to_push(folder: str | os.PathLike) -> list[str]:
    """What a push uploads from an output folder, as relative POSIX paths.

    The saved pipeline (:func:`pipeline_files`), the card ``README.md``, JSON files (metrics, ``training_run.json``)
    and images (sample grids, loss plots). Never accelerate checkpoints (``checkpoint-*/``: optimizer, LR scheduler,
    random states), logs, or any other weights.
    """
    folder = Path(folder)
    files = pipeline_files(folder)
    components = {f.split("/")[0] for f in files if "/" in f}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if not path.is_file() or _is_excluded(rel) or rel.parts[0] in components or rel.as_posix() in files:
            continue
        top_level_text = len(rel.parts) == 1 and (rel.name == CARD_FILE or rel.suffix == ".json")
        if top_level_text or rel.suffix.lower() in IMAGE_SUFFIXES:
            files.append(rel.as_posix())
    return files


# hf-ddpm's modules that a pipeline needs, as flat sibling files for diffusers' remote-code loader, with the names
# the entry file imports from each.
REMOTE_CODE_DIR = "remote_code"
REMOTE_CODE_ENTRY = "hf_ddpm_remote.py"
_REMOTE_MODULES = {
    "errors": ("hf_ddpm_errors", "ParameterError"),
    "options": ("hf_ddpm_options", "VARIANCE_TYPES"),
    "schedules": ("hf_ddpm_schedules", "make_betas"),
    "scheduler": ("hf_ddpm_scheduler", "DDPMDocScheduler"),
    "timestep_plan": ("hf_ddpm_timestep_plan", "TimestepPlan"),
    "host_transfers": ("hf_ddpm_host_transfers", "to_device"),
    "variational_bound": ("hf_ddpm_variational_bound", "VariationalBound"),
    "likelihood": ("hf_ddpm_likelihood", "bits_per_dim, estimate_bound"),
    "pipelines.pipeline_ddpm_doc": ("hf_ddpm_pipeline", "DDPMDocPipeline"),
    "fourier_unet": ("hf_ddpm_fourier_unet", FOURIER_UNET),
}
_RELATIVE_IMPORT = re.compile(r"^(\s*)from \.+([\w.]*) import", flags=re.MULTILINE)


def remote_code_files() -> dict[str, bytes]:
    """This installation's scheduler, bound, pipeline and Fourier-UNet modules for diffusers' remote-code loader.

    Pushed under ``remote_code/`` so that someone with only diffusers can build a ``DDPMDocPipeline`` (with
    ``log_likelihood``) from ``get_class_from_dynamic_module(folder, "hf_ddpm_remote.py", subfolder="remote_code",
    class_name="DDPMDocPipeline", trust_remote_code=True)``, and load a ``FourierUNet2DModel``'s weights with the
    class that ``class_name="FourierUNet2DModel"`` gives. The modules import each other as flat siblings; the
    entry file imports every one of them directly because diffusers copies only the entry file's own relative
    imports from a local folder. Nothing in ``model_index.json`` points here, so hf-ddpm users never run these files.
    """
    import importlib

    flat_names = {module.split(".")[-1]: flat for module, (flat, _) in _REMOTE_MODULES.items()}

    def rewrite(match: re.Match) -> str:
        target = match.group(2)
        if target not in flat_names:
            raise RuntimeError(f"remote code bundle: relative import of {target!r} is not in {sorted(flat_names)}")
        return f"{match.group(1)}from .{flat_names[target]} import"

    stamp = f"hf-ddpm {_version()}, bundled for diffusers' remote-code loader"
    files = {}
    entry = [f'"""DDPMDocPipeline, DDPMDocScheduler and FourierUNet2DModel of {stamp}."""', ""]
    for module, (flat, names) in _REMOTE_MODULES.items():
        source = Path(importlib.import_module(f"hf_ddpm.{module}").__file__).read_text(encoding="utf-8")
        header = f"# hf_ddpm.{module} from {stamp} (imports rewritten to sibling files).\n"
        files[f"{REMOTE_CODE_DIR}/{flat}.py"] = (header + _RELATIVE_IMPORT.sub(rewrite, source)).encode("utf-8")
        entry.append(f"from .{flat} import {names}  # noqa: F401")
    files[f"{REMOTE_CODE_DIR}/{REMOTE_CODE_ENTRY}"] = ("\n".join(entry) + "\n").encode("utf-8")
    return files


def _version() -> str:
    from . import __version__

    return __version__


def _is_excluded(rel: Path) -> bool:
    return any(fnmatch.fnmatch(part, pattern) for part in rel.parts[:-1] for pattern in EXCLUDED_DIRS) or \
        rel.name.startswith(".")


def check_repo_id(parameter: str, repo_id: str) -> None:
    """A ``ParameterError`` naming ``parameter`` unless ``repo_id`` is a valid Hub repo id."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ParameterError(parameter, f"={repo_id!r} is not a valid Hub repo id ('name' or 'user/name'): {err}") from None


def _explain_push_failure(err: BaseException, folder: Path, repo_id: str, endpoint: str) -> str:
    """A message for a failed push: what went wrong, that the local files are intact, and how to retry."""
    from huggingface_hub.errors import OfflineModeIsEnabled

    status = getattr(getattr(err, "response", None), "status_code", None)
    namespace = repo_id.split("/")[0] if "/" in repo_id else "your namespace"
    if status == 401:
        reason = "the Hub rejected the token (401 Unauthorized); pass a write token with --hub_token/--token or run `hf auth login`"
    elif status == 403:
        reason = (f"the token may not write to {namespace} (403 Forbidden): the repo name may belong to someone else, "
                  "or the token is read-only")
    elif status == 409:
        reason = "the Hub reported a conflict (409): the repo name is taken, or another commit landed at the same time"
    elif status is not None:
        reason = f"the Hub answered HTTP {status}"
    elif isinstance(err, OfflineModeIsEnabled):
        reason = "HF_HUB_OFFLINE is set, so huggingface_hub makes no network calls"
    elif isinstance(err, (ConnectionError, OSError)) or "connect" in type(err).__name__.lower():
        reason = f"cannot reach the Hub at {endpoint}"
    else:
        reason = type(err).__name__
    detail = str(err).strip().splitlines()
    detail_text = f" ({detail[0][:300]})" if detail else ""
    return (f"Pushing {folder} to the Hub repo {repo_id!r} failed: {reason}{detail_text}. "
            f"The local output in {folder} is complete and unchanged; push it later with "
            f"`hf-ddpm push --folder {folder} --repo-id {repo_id}`.")


def _card_bytes(folder: Path, repo_id: str) -> bytes:
    """The card to upload, for ``repo_id``: rendered again from training_run.json; else the folder's own README.md;
    else (a pipeline saved by hand) rendered from the saved configs alone."""
    run_file = folder / RUN_FILE
    card = folder / CARD_FILE
    if not run_file.is_file() and card.is_file():
        return card.read_bytes()
    run = json.loads(run_file.read_text(encoding="utf-8")) if run_file.is_file() else {}
    return str(render_model_card(folder, run, repo_id=repo_id)).encode("utf-8")


def push_output_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    commit_message: str = "Upload DDPM pipeline trained with hf-ddpm",
) -> str:
    """Create ``repo_id`` if needed and upload the output ``folder`` in ONE commit; returns the commit URL.

    Uploads :func:`files_to_push`, with ``README.md`` rendered for ``repo_id``, and :func:`remote_code_files`.
    The folder is only read. Any
    failure (no network, bad token, name taken, server error) raises :class:`HubPushError` with the reason; a bad
    ``folder`` or ``repo_id`` raises ``ValueError`` before any network call.
    """
    folder = Path(folder)
    check_repo_id("repo_id", repo_id)
    if not folder.is_dir():
        raise ValueError(f"folder={str(folder)!r} is not a directory")
    files = files_to_push(folder)  # ValueError when no pipeline is saved there
    card = _card_bytes(folder, repo_id)  # rendering errors surface here, before any network call
    code_files = remote_code_files()
    api = HfApi(token=token)
    try:
        created_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        if created_id != repo_id:  # "name" -> "user/name": the card's snippet must load the full id
            repo_id, card = created_id, _card_bytes(folder, created_id)
        operations = [CommitOperationAdd(path_in_repo=f, path_or_fileobj=str(folder / f)) for f in files if f != CARD_FILE]
        operations.append(CommitOperationAdd(path_in_repo=CARD_FILE, path_or_fileobj=card))
        operations += [CommitOperationAdd(path_in_repo=path, path_or_fileobj=code) for path, code in code_files.items()]
        return api.create_commit(repo_id, operations, commit_message=commit_message).commit_url
    except Exception as err:  # noqa: BLE001 - every failure of the remote side becomes one clear error
        raise HubPushError(_explain_push_failure(err, folder, repo_id, api.endpoint)) from err


class CheckpointPusher:
    """Pushes the pipeline at each checkpoint to the Hub from a background thread (``--push_every_checkpoint``).

    :meth:`push_pipeline` saves the pipeline to a temporary folder synchronously (so the weights pushed are the ones
    at that step) and returns at once; huggingface_hub's ``HfApi.run_as_future`` runs the upload on one worker
    thread. While a push is still running a new one is skipped (the next checkpoint or the final push carries
    newer weights anyway). Failures are logged and collected in :attr:`errors`, never raised into the training
    loop. Only weights and configs are pushed, never optimizer or accelerate state. Call :meth:`close` before the
    final :func:`push_output_folder`, so a late checkpoint commit cannot land after the final one.
    """

    def __init__(self, repo_id: str, *, token: str | None = None, private: bool = False):
        check_repo_id("hub_model_id", repo_id)
        self.repo_id = repo_id
        self.private = private
        self.errors: list[str] = []
        self.skipped_steps: list[int] = []
        self._api = HfApi(token=token)
        self._future: Future | None = None
        self._repo_ready = False
        self._lock = threading.Lock()

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "CheckpointPusher | None":
        """The pusher the flags ask for, or None without ``--push_every_checkpoint``."""
        if not getattr(args, "push_every_checkpoint", False):
            return None
        return cls(args.hub_model_id, token=args.hub_token, private=args.hub_private_repo)

    def push_pipeline(self, pipeline, step: int) -> Future | None:
        """Save ``pipeline`` now and upload it in the background; None when skipped because a push is in flight."""
        if self._future is not None and not self._future.done():
            logger.info("Hub push of an earlier checkpoint still running; not pushing step %d", step)
            self.skipped_steps.append(step)
            return None
        staging = Path(tempfile.mkdtemp(prefix="hf-ddpm-push-"))
        try:
            pipeline.save_pretrained(staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self._future = self._api.run_as_future(self._upload, staging, step)
        return self._future

    def _upload(self, staging: Path, step: int) -> str | None:
        try:
            if not self._repo_ready:
                self.repo_id = self._api.create_repo(self.repo_id, private=self.private, exist_ok=True).repo_id
                self._repo_ready = True
            operations = [CommitOperationAdd(path_in_repo=f, path_or_fileobj=str(staging / f))
                          for f in pipeline_files(staging)]
            return self._api.create_commit(self.repo_id, operations,
                                           commit_message=f"Training in progress: step {step}").commit_url
        except Exception as err:  # noqa: BLE001 - a failed checkpoint push must never stop training
            message = f"checkpoint push at step {step}: " + _explain_push_failure(err, staging, self.repo_id, self._api.endpoint)
            with self._lock:
                self.errors.append(message)
            logger.warning("%s Training goes on.", message)
            return None
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def close(self, timeout: float | None = None) -> list[str]:
        """Wait (up to ``timeout`` seconds) for the push in flight; the errors of all checkpoint pushes."""
        if self._future is not None:
            try:
                self._future.result(timeout=timeout)
            except TimeoutError:
                logger.warning("Hub checkpoint push still running after %s s; not waiting longer", timeout)
        return list(self.errors)


# ---------------------------------------------------------------------------------------------------- command line


def add_hub_arguments(parser: argparse.ArgumentParser) -> None:
    """The trainer's Hub flags (names as in diffusers' training examples)."""
    group = parser.add_argument_group("Hugging Face Hub")
    group.add_argument("--push_to_hub", action="store_true",
                       help="Push the final pipeline, model card and sample grids to the Hub in one commit.")
    group.add_argument("--hub_model_id", type=str, default=None,
                       help="Repo to push to: 'user/name', 'org/name' or 'name' (your namespace). Created if missing.")
    group.add_argument("--hub_token", type=str, default=None,
                       help="Hub token (default: $HF_TOKEN or the token saved by `hf auth login`).")
    group.add_argument("--hub_private_repo", action="store_true", help="Create the repo as private.")
    group.add_argument("--push_every_checkpoint", action="store_true",
                       help="Also push the (EMA) pipeline at every checkpoint, in the background (needs --push_to_hub).")


def check_hub_arguments(args: argparse.Namespace) -> None:
    """Contradictory or malformed Hub flags: ``ValueError`` naming the flag, before any work or network call."""
    from .training.config import HubConfig

    try:
        HubConfig(push_to_hub=args.push_to_hub, hub_model_id=args.hub_model_id, hub_token=args.hub_token,
                  hub_private_repo=args.hub_private_repo, push_every_checkpoint=args.push_every_checkpoint)
    except ParameterError as error:
        raise ValueError(error.with_name(f"--{error.parameter}")) from None


def add_push_parser(subparsers) -> argparse.ArgumentParser:
    """``hf-ddpm push --folder DIR --repo-id ID [--token T] [--private]``."""
    parser = subparsers.add_parser(
        "push", help="push a trained output folder (pipeline, card, sample grids) to the Hugging Face Hub",
        description="Create the repo if needed and upload the saved pipeline, its model card (rendered for the repo "
                    "id), metrics and images in one commit. Checkpoints and optimizer state are never uploaded.")
    parser.add_argument("--folder", required=True, help="output folder of training/train.py (holds model_index.json)")
    parser.add_argument("--repo-id", required=True, help="'user/name', 'org/name' or 'name'")
    parser.add_argument("--token", default=None, help="Hub token (default: $HF_TOKEN or `hf auth login`'s)")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.set_defaults(func=run_push)
    return parser


def run_push(args: argparse.Namespace) -> None:
    """Handler of ``hf-ddpm push``. A bad folder or repo id raises ``ValueError`` (the CLI's exit status 2); a failed
    push exits with status 1 and the reason on stderr."""
    try:
        url = push_output_folder(args.folder, args.repo_id, token=args.token, private=args.private)
    except HubPushError as err:
        raise SystemExit(f"hf-ddpm push: error: {err}") from None
    print(f"Pushed {args.folder} to {url}")
