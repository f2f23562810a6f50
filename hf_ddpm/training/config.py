"""What a training run is: frozen, typed sections, each validated once where it is built.

``RunConfig`` holds the data source, the model, the diffusion process, the objective, the optimisation, how the run
computes, its outputs and evaluations, and its Hub settings. Every field name is the trainer's flag name
(``--learning_rate`` sets ``OptimConfig.learning_rate``), so the flat ``settings`` dict of :meth:`RunConfig.settings`
is both what ``training_run.json`` stores and what ``training/train.py`` parses. A bad value raises
:class:`~hf_ddpm.errors.ParameterError` naming the field; the command line names its flag.

Fields declared with :func:`fixed` define the run: a run resumed from a checkpoint must have the same values
(:meth:`RunConfig.fixed_settings`), so that list follows the configuration instead of being kept by hand.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any

from ..data import is_digits
from ..errors import ParameterError, check_at_least, check_choice, check_interval, check_repo_id
from ..fourier_unet import check_fourier_periods
from ..losses import LOSS_TYPES, TIMESTEP_SAMPLERS, check_objective
from ..scheduler import DDPMDocScheduler
from ..timestep_plan import MIN_STRATIFIED_TIMESTEPS

LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup")
MIXED_PRECISIONS = {"no": "float32", "fp16": "float16 mixed", "bf16": "bfloat16 mixed"}  # option: the card's words
LOGGERS = ("none", "tensorboard", "wandb")
SECRET_SETTINGS = ("hub_token",)  # never written to training_run.json or a tracker
DEFAULT_TRAIN_STEPS = 3500  # the digits' default length: about 8 minutes with its final evaluation on 2 CPU cores
# A class-conditional run's final evaluation (class bounds, guidance figures) costs about a minute more: it trains
# less, so that both runs fit the same budget.
CONDITIONAL_TRAIN_STEPS = 3000
DEFAULT_OUTPUT_DIR, CONDITIONAL_OUTPUT_DIR = "ddpm-digits", "ddpm-digits-cond"
MIN_JUDGED_IMAGES = 4  # FD and precision/recall (k = 3 neighbours) need more images than neighbours, on both sides


def fixed(default):
    """A field whose value defines the run: a resumed run must have the same value."""
    return field(default=default, metadata={"fixed": True})


@dataclass(frozen=True)
class DataConfig:
    """The images: the built-in digits (neither ``dataset_name`` nor ``train_data_dir``), a ``datasets`` Hub id or
    folder, or an image folder; and how they are cropped, flipped and held out (see ``hf_ddpm.data``).
    ``class_conditional``: train on the data's class labels, read from ``label_column`` (an image folder's class
    sub-folders give ``label``; the digits their digit)."""

    dataset_name: str | None = fixed(None)
    dataset_config_name: str | None = fixed(None)
    train_data_dir: str | None = fixed(None)
    image_column: str | None = fixed(None)
    resolution: int | None = fixed(None)
    center_crop: bool = fixed(False)
    random_flip: bool = fixed(False)
    validation_fraction: float = fixed(0.1)
    max_eval_images: int | None = None
    cache_dir: str | None = None
    class_conditional: bool = fixed(False)
    label_column: str = fixed("label")

    def __post_init__(self):
        if self.dataset_name is not None and self.train_data_dir is not None:
            raise ParameterError("train_data_dir", f"cannot be given with dataset_name ({self.dataset_name!r}): "
                                                   "choose one source")
        if self.train_data_dir is not None:  # stored absolute: `hf-ddpm evaluate` must find it from anywhere
            object.__setattr__(self, "train_data_dir", os.path.abspath(os.path.expanduser(self.train_data_dir)))
        check_at_least("resolution", self.resolution, 1, optional=True)
        check_interval("validation_fraction", self.validation_fraction, 0.0, 1.0)
        check_at_least("max_eval_images", self.max_eval_images, 1, optional=True)


@dataclass(frozen=True)
class ModelConfig:
    """The UNet: a preset for the resolution or a ``UNet2DModel`` config, with Fourier features of these periods
    (8-bit units; empty: a plain ``UNet2DModel``)."""

    model_config_name_or_path: str | None = fixed(None)
    fourier_periods: tuple[float, ...] = fixed((2.0, 4.0, 8.0, 16.0))

    def __post_init__(self):
        periods = tuple(self.fourier_periods)
        object.__setattr__(self, "fourier_periods", check_fourier_periods(periods) if periods else ())


@dataclass(frozen=True)
class ProcessConfig:
    """The diffusion process: ``DDPMDocScheduler``'s options of the same names."""

    num_train_timesteps: int = fixed(1000)
    beta_schedule: str = fixed("linear")
    beta_start: float = fixed(1e-5)
    beta_end: float = fixed(0.02)
    variance_type: str = fixed("learned_range")
    prediction_type: str = fixed("epsilon")
    clip_sample: bool = fixed(True)

    def __post_init__(self):
        self.scheduler()  # the scheduler checks its options (choices, β in (0, 1), T, …), now, not after loading data

    def scheduler(self) -> DDPMDocScheduler:
        return DDPMDocScheduler(**dataclasses.asdict(self))


@dataclass(frozen=True)
class ObjectiveConfig:
    """The loss (``hf_ddpm.losses``) and how its timesteps are drawn. ``simple_weight``: c of the loss
    ``"vlb_simple"`` (unused by the others); ``importance_uniform_mix``: the share of the uniform distribution in the
    importance sampler's p_t (unused by the uniform sampler); ``label_dropout``: p_uncond of classifier-free guidance,
    the probability that a class-conditional run replaces a label by the null label (unused without labels)."""

    loss_type: str = fixed("vlb_simple")
    simple_weight: float = fixed(20.0)
    timestep_sampler: str = fixed("importance")
    importance_uniform_mix: float = fixed(0.25)
    label_dropout: float = fixed(0.1)

    def __post_init__(self):
        check_choice("loss_type", self.loss_type, LOSS_TYPES)
        check_interval("simple_weight", self.simple_weight, 0.0, math.inf)
        check_choice("timestep_sampler", self.timestep_sampler, TIMESTEP_SAMPLERS)
        check_interval("importance_uniform_mix", self.importance_uniform_mix, 0.0, 1.0, closed_high=True)
        check_interval("label_dropout", self.label_dropout, 0.0, 1.0, closed_low=True)


@dataclass(frozen=True)
class OptimConfig:
    """AdamW, its learning-rate schedule, gradient clipping and the EMA of the weights. ``train_batch_size`` is per
    process. The run's length: ``max_train_steps`` optimizer steps, else ``num_epochs`` passes over the data, else the
    digits' default (:meth:`RunConfig.train_steps`)."""

    seed: int = fixed(0)
    train_batch_size: int = fixed(64)
    gradient_accumulation_steps: int = fixed(1)
    num_epochs: int | None = None
    max_train_steps: int | None = None
    learning_rate: float = 2e-3
    lr_scheduler: str = "cosine"
    lr_warmup_steps: int = 100
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 0.0
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    use_ema: bool = fixed(True)
    ema_max_decay: float = 0.999
    ema_inv_gamma: float = 1.0
    ema_power: float = 0.75

    def __post_init__(self):
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ParameterError("seed", f"must be an integer, got {self.seed!r}")
        for name in ("train_batch_size", "gradient_accumulation_steps"):
            check_at_least(name, getattr(self, name), 1)
        for name in ("num_epochs", "max_train_steps"):
            check_at_least(name, getattr(self, name), 1, optional=True)
        check_at_least("lr_warmup_steps", self.lr_warmup_steps, 0)
        check_choice("lr_scheduler", self.lr_scheduler, LR_SCHEDULERS)
        check_interval("learning_rate", self.learning_rate, 0.0, math.inf)
        for name in ("adam_beta1", "adam_beta2"):
            check_interval(name, getattr(self, name), 0.0, 1.0, closed_low=True)
        check_interval("adam_weight_decay", self.adam_weight_decay, 0.0, math.inf, closed_low=True)
        check_interval("adam_epsilon", self.adam_epsilon, 0.0, math.inf)
        check_interval("max_grad_norm", self.max_grad_norm, 0.0, math.inf, closed_low=True)
        check_interval("ema_max_decay", self.ema_max_decay, 0.0, 1.0)
        check_interval("ema_inv_gamma", self.ema_inv_gamma, 0.0, math.inf)
        check_interval("ema_power", self.ema_power, 0.0, math.inf)


@dataclass(frozen=True)
class ComputeConfig:
    """How the run computes; none of it changes what is trained beyond rounding. ``num_threads``: torch's
    intra-op threads per process on a CPU (None: chosen by :func:`hf_ddpm.training.threads.cpu_threads`)."""

    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    num_threads: int | None = None
    dataloader_num_workers: int = 0
    keep_decoded_mib: int = 2048

    def __post_init__(self):
        check_choice("mixed_precision", self.mixed_precision, MIXED_PRECISIONS)
        check_at_least("num_threads", self.num_threads, 1, optional=True)
        check_at_least("dataloader_num_workers", self.dataloader_num_workers, 0)
        check_at_least("keep_decoded_mib", self.keep_decoded_mib, 0)


@dataclass(frozen=True)
class OutputConfig:
    """Where the run writes, how often it checkpoints, draws sample grids and evaluates (every N optimizer steps;
    0: only at the end), and what it logs to. An evaluation during training estimates the held-out bound from
    ``eval_timesteps`` timesteps and, with ``eval_samples`` > 0, judges that many samples drawn with a respaced
    ``eval_inference_steps``-step chain (``hf_ddpm.metrics``: the digits evaluator, or ``feature_model`` /
    ``classifier``). ``figures``: end with the paper's figures (``hf_ddpm.figures``, in ``output_dir/figures``);
    None: only for the built-in digits (see :attr:`RunConfig.draws_figures`). ``output_dir`` None:
    :data:`DEFAULT_OUTPUT_DIR`, or :data:`CONDITIONAL_OUTPUT_DIR` for a class-conditional run (set by ``RunConfig``),
    so that the two default runs do not overwrite each other."""

    output_dir: str | None = None
    logging_dir: str = "logs"  # relative to output_dir
    checkpointing_steps: int = 500
    checkpoints_total_limit: int | None = 2
    resume_from_checkpoint: str | None = None
    save_images_steps: int = 0
    eval_steps: int = 1000
    eval_timesteps: int = 50
    eval_samples: int = 200
    eval_inference_steps: int | None = None  # None: min(100, num_train_timesteps)
    feature_model: str | None = None
    classifier: str | None = None
    final_eval_timesteps: int | None = None
    num_samples: int = 64
    num_inference_steps: int | None = None  # None: num_train_timesteps, the full chain (RunConfig)
    figures: bool | None = None
    logger: str = "none"

    def __post_init__(self):
        for name in ("checkpointing_steps", "save_images_steps", "eval_steps"):
            check_at_least(name, getattr(self, name), 0)
        check_at_least("checkpoints_total_limit", self.checkpoints_total_limit, 1, optional=True)
        for name in ("eval_timesteps", "final_eval_timesteps"):  # stratified estimates (hf_ddpm.timestep_plan)
            check_at_least(name, getattr(self, name), MIN_STRATIFIED_TIMESTEPS, optional=name == "final_eval_timesteps")
        check_at_least("num_samples", self.num_samples, 1)
        check_at_least("num_inference_steps", self.num_inference_steps, 1, optional=True)
        if self.eval_samples != 0:
            check_at_least("eval_samples", self.eval_samples, MIN_JUDGED_IMAGES)
        check_at_least("eval_inference_steps", self.eval_inference_steps, 1, optional=True)
        check_choice("figures", self.figures, (None, True, False))
        check_choice("logger", self.logger, LOGGERS)
        if self.logger != "none":  # a tracker that is not installed fails now, not after the data is read
            from accelerate.utils import is_tensorboard_available, is_wandb_available

            if not {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available}[self.logger]():
                raise ParameterError("logger", f"{self.logger}: the package is not installed (pip install {self.logger})")

    @property
    def logging_path(self) -> str:
        return os.path.join(self.output_dir, self.logging_dir)


@dataclass(frozen=True)
class HubConfig:
    """Pushing the final pipeline (and, with ``push_every_checkpoint``, each checkpoint's) to ``hub_model_id``."""

    push_to_hub: bool = False
    hub_model_id: str | None = None
    hub_token: str | None = None
    hub_private_repo: bool = False
    push_every_checkpoint: bool = False

    def __post_init__(self):
        if self.push_every_checkpoint and not self.push_to_hub:
            raise ParameterError("push_every_checkpoint", "needs push_to_hub (and hub_model_id)")
        if self.hub_private_repo and not self.push_to_hub:
            raise ParameterError("hub_private_repo", "needs push_to_hub")
        if self.push_to_hub and not self.hub_model_id:
            raise ParameterError("hub_model_id", "is needed by push_to_hub: the repo to push to, e.g. 'your-name/ddpm-digits'")
        if self.hub_model_id is not None:
            check_repo_id("hub_model_id", self.hub_model_id)


SECTIONS = {"data": DataConfig, "model": ModelConfig, "process": ProcessConfig, "objective": ObjectiveConfig,
            "optim": OptimConfig, "compute": ComputeConfig, "output": OutputConfig, "hub": HubConfig}


@dataclass(frozen=True)
class RunConfig:
    """A whole training run; the sections' fields have distinct names (the trainer's flags)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    process: ProcessConfig = field(default_factory=ProcessConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    hub: HubConfig = field(default_factory=HubConfig)

    def __post_init__(self):
        """Checks across sections; the default output folder of the run's kind, and the final samples' full chain."""
        if self.output.output_dir is None:
            folder = CONDITIONAL_OUTPUT_DIR if self.data.class_conditional else DEFAULT_OUTPUT_DIR
            object.__setattr__(self, "output", dataclasses.replace(self.output, output_dir=folder))
        if self.output.num_inference_steps is None:
            object.__setattr__(self, "output", dataclasses.replace(
                self.output, num_inference_steps=self.process.num_train_timesteps))
        check_objective(self.process.variance_type, self.objective.loss_type)
        for name in ("num_inference_steps", "eval_inference_steps"):
            steps = getattr(self.output, name)
            if steps is not None and steps > self.process.num_train_timesteps:
                raise ParameterError(name, f"must not exceed num_train_timesteps ({self.process.num_train_timesteps}), "
                                           f"got {steps}")
        if self.compute.mixed_precision == "fp16":
            import torch

            if not torch.cuda.is_available():
                raise ParameterError("mixed_precision", "'fp16' needs a GPU; use 'bf16' or 'no' on a CPU")
        if self.output.classifier is not None and not self.judges_samples:
            raise ParameterError("classifier", "needs a feature_model for data other than the built-in digits (the FD "
                                               "of the judged samples is computed in its features)")
        if self.judges_samples:  # the final samples and the held-out images are judged: enough of each, or no run
            check_at_least("num_samples", self.output.num_samples, MIN_JUDGED_IMAGES)
            check_at_least("max_eval_images", self.data.max_eval_images, MIN_JUDGED_IMAGES, optional=True)

    def train_steps(self, steps_per_epoch: int) -> int:
        """The run's optimizer steps: ``max_train_steps``; else ``num_epochs`` × ``steps_per_epoch``; else
        :data:`DEFAULT_TRAIN_STEPS`, or :data:`CONDITIONAL_TRAIN_STEPS` for a class-conditional run (the same time
        budget)."""
        optim = self.optim
        if optim.max_train_steps is not None:
            return optim.max_train_steps
        if optim.num_epochs is not None:
            return optim.num_epochs * steps_per_epoch
        return CONDITIONAL_TRAIN_STEPS if self.data.class_conditional else DEFAULT_TRAIN_STEPS

    @property
    def eval_chain_steps(self) -> int:
        """The steps of the chain that draws the samples judged during training (``eval_inference_steps``, by default
        100 or T if fewer)."""
        return self.output.eval_inference_steps or min(100, self.process.num_train_timesteps)

    @property
    def judges_samples(self) -> bool:
        """The samples' quality is measured, at the end (the ``num_samples`` final samples) and, with
        ``eval_samples`` > 0, at each evaluation: by the digits evaluator on the built-in digits, else only with a
        ``feature_model`` the user named (``hf_ddpm.metrics``; the digits evaluator's features mean nothing for other
        images)."""
        return self.output.feature_model is not None or is_digits(self.data.dataset_name, self.data.train_data_dir)

    @property
    def draws_figures(self) -> bool:
        """The run ends with the paper's figures: ``output.figures``, or when that is None, for the built-in digits
        (where they take about a minute) and not for other data."""
        if self.output.figures is not None:
            return self.output.figures
        return is_digits(self.data.dataset_name, self.data.train_data_dir)

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> "RunConfig":
        """The configuration from a flat {field name: value} dict (flags, or training_run.json's ``settings``);
        missing fields take their defaults, unknown names are an error."""
        known = {f.name for section in SECTIONS.values() for f in dataclasses.fields(section)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ParameterError(unknown[0], f"is not a setting of a training run (unknown: {unknown})")
        return cls(**{
            name: section(**{f.name: _from_json(settings[f.name]) for f in dataclasses.fields(section)
                             if f.name in settings})
            for name, section in SECTIONS.items()
        })

    def settings(self, *, secrets: bool = False) -> dict[str, Any]:
        """The flat {field name: value} dict, JSON-ready (tuples as lists); without the Hub token unless asked."""
        flat = {}
        for name in SECTIONS:
            flat.update({key: list(value) if isinstance(value, tuple) else value
                         for key, value in dataclasses.asdict(getattr(self, name)).items()})
        return flat if secrets else {k: v for k, v in flat.items() if k not in SECRET_SETTINGS}

    def fixed_settings(self) -> dict[str, Any]:
        """The settings a resumed run must share with the checkpoint's run: every :func:`fixed` field."""
        flat = self.settings()
        return {f.name: flat[f.name] for name, section in SECTIONS.items() for f in dataclasses.fields(section)
                if f.metadata.get("fixed")}

    def replace(self, **changes) -> "RunConfig":
        """A copy with some fields changed, named flat (e.g. ``resolution=8``), validated again."""
        return RunConfig.from_settings({**self.settings(secrets=True), **changes})


def _from_json(value):
    return tuple(value) if isinstance(value, list) else value
