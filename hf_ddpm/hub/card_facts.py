"""What the model card says, as typed facts: the saved pipeline and the run's record, read once.

:class:`CardFacts` is the template's one variable, ``card``. The template reads typed attributes — the saved
network and diffusion process (:mod:`.saved_pipeline`), the run's ``RunConfig`` and ``RunResults``
(``card.config``, ``card.results``; None for a pipeline saved by hand) — and the few texts that need more than a
lookup (the training table's rows, the figures' captions, why diffusers alone cannot sample the model). What an
option means is read from the option's own table (``hf_ddpm.options`` for the scheduler's, ``LOSS_TYPES`` and
``TIMESTEP_SAMPLERS`` in ``hf_ddpm.losses``, ``MIXED_PRECISIONS`` in the run configuration).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..data.digits import DIGITS_LEVELS, DIGITS_NAMES, DIGITS_RESOLUTION, DIGITS_TEST_EVERY
from ..fourier_unet import input_channels
from ..guidance import ClassConditioning
from ..losses import HYBRID_VLB_WEIGHT, LOSS_TYPES, TIMESTEP_SAMPLERS
from ..options import VARIANCE_TYPES
from ..samplers import RECOMMENDED, SAMPLERS
from ..training.config import MIXED_PRECISIONS, DataConfig, RunConfig
from ..training.record import RunRecord, RunResults
from .saved_pipeline import FOURIER_UNET, Network, Process, read_pipeline_configs

# Captions of the images a run record names, by role (any other role is captioned with its name).
FIGURE_CAPTIONS = {
    "progressive": "Progressive generation (Ho et al. 2020, Fig. 6): the predicted x̂_0 along the reverse process, "
                   "then the sample",
    "loss": "Training loss",
    "evaluations": "Evaluations during training: the held-out bound estimate (± its standard error) and, where "
                   "samples were judged, their FD and class-balance χ²",
    "class_grid": "One row per class, samples at guidance scales s = 0 (the null label), 1 (the conditional model), 2 "
                  "and 4 side by side, each scale from the same x_T and noise",
    "guidance_tradeoff": "Classifier-free guidance: the samples' quality and the bound of the guided chain against the "
                         "guidance scale s",
}
NOT_JUDGED = "—"  # a cell of the guidance table without a number (the samples were not judged)


@dataclass(frozen=True)
class DataSource:
    """What the data was: a Hub dataset (listed in the card's ``datasets``), a local folder, or the digits."""

    description: str
    hub_id: str | None = None
    config_name: str | None = None
    index_type: str = "unknown"  # model-index dataset type and name
    index_name: str = "unknown"

    @classmethod
    def of(cls, data: DataConfig | None) -> "DataSource":
        if data is None:  # a pipeline saved outside training/train.py: say nothing we do not know
            return cls("data that was not recorded")
        name = data.dataset_name
        if data.train_data_dir:
            folder = Path(data.train_data_dir).name
            return cls(f"the images in a local folder ({folder})", index_type="imagefolder", index_name=folder)
        if name is None or name in DIGITS_NAMES:
            size = DIGITS_RESOLUTION
            return cls(f"scikit-learn's handwritten digits ({size}×{size}, {DIGITS_LEVELS + 1} grey levels)",
                       index_type="sklearn-digits", index_name="scikit-learn digits")
        if Path(name).exists():
            return cls(f"a local dataset ({Path(name).name})", index_type="local", index_name=Path(name).name)
        return cls(name, hub_id=name, config_name=data.dataset_config_name, index_type=name, index_name=name)

    @property
    def digits(self) -> bool:
        return self.index_type == "sklearn-digits"


@dataclass(frozen=True)
class SampleMetric:
    """One sample-quality number, named after the network whose features it uses."""

    name: str
    type: str  # the model-index metric type
    value: float
    data: str


@dataclass(frozen=True)
class Figure:
    """An image of the output folder that the card shows (``path`` relative to it)."""

    role: str
    path: str
    caption: str


@dataclass(frozen=True)
class CardFacts:
    """Everything the card states, for the pipeline saved in a folder and its run record (None: saved by hand)."""

    repo_id: str
    network: Network
    process: Process
    record: RunRecord | None
    data: DataSource
    sample_metrics: tuple[SampleMetric, ...]
    figures: tuple[Figure, ...]
    conditioning: ClassConditioning | None = None  # the labels of a class-conditional UNet (model_index.json)
    version: str = __version__  # of hf-ddpm, which rendered the card
    hybrid_weight: float = HYBRID_VLB_WEIGHT  # λ of the hybrid loss

    @classmethod
    def gather(cls, folder: Path, record: RunRecord | None, repo_id: str | None) -> "CardFacts":
        """The facts of the pipeline in ``folder``; ``repo_id`` (default: the record's ``hub_model_id``, else the
        folder's name) is the repo the usage snippets load."""
        index, unet, scheduler = read_pipeline_configs(folder)
        process = Process.read(scheduler)
        results = record.results if record else None
        quality = results.sample_quality if results else None
        return cls(
            repo_id=repo_id or (record and record.config.hub.hub_model_id) or folder.resolve().name,
            network=Network.read(folder / "unet", unet),
            process=process,
            record=record,
            data=DataSource.of(record.config.data if record else None),
            sample_metrics=_sample_metrics(quality) if quality else (),
            figures=tuple(_figures(folder, record, process.num_train_timesteps)) if record else (),
            conditioning=_conditioning(index, unet),
        )

    @property
    def title(self) -> str:
        return self.repo_id.split("/")[-1]

    @property
    def config(self) -> RunConfig | None:
        return self.record.config if self.record else None

    @property
    def results(self) -> RunResults | None:
        return self.record.results if self.record else None

    @property
    def loss_type(self) -> str | None:
        return self.config.objective.loss_type if self.config else None

    @property
    def loss_text(self) -> str:
        if not self.config:
            return "not recorded"
        return LOSS_TYPES[self.loss_type].format(target=self.process.prediction.target,
                                                 simple_weight=self.config.objective.simple_weight)

    @property
    def sampler_text(self) -> str:
        if not self.config:
            return "not recorded"
        objective = self.config.objective
        return TIMESTEP_SAMPLERS[objective.timestep_sampler].format(uniform_mix=objective.importance_uniform_mix)

    @property
    def eval_description(self) -> str:
        if self.results:
            return self.results.test_split
        if self.data.digits:
            return f"the digits' test split (index i % {DIGITS_TEST_EVERY} == {DIGITS_TEST_EVERY - 1})"
        return "held-out images"

    @property
    def augmentation(self) -> str:
        data = self.config.data if self.config else None
        return ", ".join(text for text, on in (("random horizontal flips", data and data.random_flip),
                                               ("centre crop", data and data.center_crop)) if on)

    @property
    def fid_reported(self) -> bool:
        return any(m.type == "fid" for m in self.sample_metrics)

    @property
    def samples_figure(self) -> Figure | None:
        return next((f for f in self.figures if f.role == "samples"), None)

    @property
    def other_figures(self) -> list[Figure]:
        return [f for f in self.figures if f.role != "samples"]

    @property
    def rate_distortion(self) -> dict | None:
        """The rate–distortion summary of the paper's experiments (``hf_ddpm.rate_distortion``), if the run or
        ``hf-ddpm figures`` made them."""
        figures = self.results.figures if self.results else None
        return figures.get("rate_distortion") if figures else None

    @property
    def class_bounds(self) -> dict | None:
        """A class-conditional run's conditional, marginal and null-label bounds and its generative classifier
        (``hf_ddpm.training.class_bounds``), if recorded."""
        return self.results.class_bounds if self.results else None

    @property
    def fast_scheduler(self) -> str:
        """The diffusers scheduler class the usage snippet swaps in for fast sampling (``hf_ddpm.samplers.RECOMMENDED``,
        whose configuration overrides are that class's defaults)."""
        return SAMPLERS[RECOMMENDED[0]].scheduler_class.__name__

    @property
    def fast_steps(self) -> int:
        """Its number of steps: the recommended one, at most T − 1 (which a multistep solver takes at most)."""
        return max(1, min(RECOMMENDED[1], self.process.num_train_timesteps - 1))

    @property
    def usage_labels(self) -> list[str]:
        """The class names the usage snippet asks for: two classes (e.g. the digits' "3" and "7")."""
        names = self.conditioning.names
        return ["3", "7"] if {"3", "7"} <= set(names) else list(names[:2])

    @property
    def guidance_tradeoff(self) -> list[dict] | None:
        """The rows of ``guidance_tradeoff.csv`` (``hf_ddpm.guidance_figures``), if the figures were made."""
        figures = self.results.figures if self.results else None
        guidance = figures.get("guidance") if figures else None
        return guidance["guidance_tradeoff"] if guidance else None

    @property
    def guidance_scale(self) -> float:
        """The guidance scale the usage snippet shows: the trade-off's scale with the lowest FD among those above 1,
        else 2 (an example)."""
        judged = [row for row in self.guidance_tradeoff or () if row["fd"] is not None and row["guidance_scale"] > 1]
        return min(judged, key=lambda row: row["fd"])["guidance_scale"] if judged else 2.0

    @property
    def guidance_table(self) -> tuple[list[str], list[list[str]]]:
        """The guidance trade-off as a markdown table: (the header's cells, each row's cells)."""
        rows = self.guidance_tradeoff
        first = rows[0]
        header = ["guidance scale s", first["fd_name"] or "FD", first["score_name"] or "score", "precision", "recall",
                  "label accuracy", "bound of the guided chain (bits/dim)"]
        cells = [[f"{row['guidance_scale']:g}"] + [NOT_JUDGED if row[key] is None else f"{row[key]:.4g}" for key in
                                                   ("fd", "score", "precision", "recall", "label_accuracy")]
                 + [f"{row['bits_per_dim']:.4f} ± {row['standard_error']:.4f}"] for row in rows]
        return header, cells

    @property
    def class_text(self) -> str:
        """The class-conditioning row of the training table: the classes, the null label and the label dropout."""
        conditioning, config = self.conditioning, self.config
        names = ", ".join(conditioning.names[:12]) + (" …" if conditioning.num_classes > 12 else "")
        if conditioning.null_class_label is None:
            null = "no null label (guidance is not possible)"
        else:
            null = f"null label ∅ = index {conditioning.null_class_label}"
            if config is not None:
                null += (f", to which training dropped each label with probability "
                         f"{config.objective.label_dropout:g} (classifier-free guidance's p_uncond)")
        return f"{conditioning.num_classes} classes ({names}); {null}"

    @property
    def training_rows(self) -> list[tuple[str, str]]:
        """The training table's rows after the process's: what the run's configuration and results say (and a
        class-conditional model's classes, from the saved pipeline)."""
        config, results = self.config, self.results
        rows = [] if self.conditioning is None else [("class labels", self.class_text)]
        if config is None:
            return rows
        optim = config.optim
        if results:
            rows.append(("optimizer steps", f"{results.global_step:,}"))
        per = f"{optim.train_batch_size} per process × {optim.gradient_accumulation_steps} accumulation"
        if results:
            n = results.num_processes
            per = f"{results.global_batch_size} per step ({per} × {n} process{'es' if n != 1 else ''})"
        rows.append(("batch", per))
        warmup = f", {optim.lr_warmup_steps} warm-up steps" if optim.lr_warmup_steps else ""
        rows.append(("learning rate (AdamW)", f"{optim.learning_rate:g}, {optim.lr_scheduler} schedule{warmup}"))
        ema = (f"yes (diffusers' EMAModel, max_decay {optim.ema_max_decay:g}, inv_gamma {optim.ema_inv_gamma:g}, "
               f"power {optim.ema_power:g}); the weights here are the EMA weights")
        rows.append(("EMA", ema if optim.use_ema else "no"))
        rows.append(("precision", MIXED_PRECISIONS[config.compute.mixed_precision]))
        if results:
            rows += [("hardware", results.hardware), ("training wall time", _duration_text(results.train_seconds))]
        rows.append(("seed", str(optim.seed)))
        return rows

    @property
    def no_fallback_reasons(self) -> list[str]:
        """Why diffusers' own DDPMPipeline (UNet2DModel + DDPMScheduler, no hf-ddpm code) cannot sample this model;
        empty when it can. (An explicit β schedule is no reason.)"""
        reasons = []
        if self.network.fourier:
            channels = self.network.in_channels
            reasons.append(
                f"the network is hf-ddpm's `{FOURIER_UNET}`, which diffusers cannot build by itself "
                f"(`UNet2DModel.from_pretrained` refuses its weights, whose first convolution reads "
                f"{input_channels(channels, self.network.fourier_periods)} channels, the image's {channels} and its "
                "Fourier features)")
        difference = VARIANCE_TYPES[self.process.variance_type].diffusers_difference
        if difference is not None:
            reasons.append(difference)
        if self.conditioning is not None:
            reasons.append(f"the network is class-conditional (`num_class_embeds` = "
                           f"{self.conditioning.num_class_embeds}) and `DDPMPipeline` passes it no labels")
        return reasons


def _conditioning(index: dict, unet: dict) -> ClassConditioning | None:
    """The labels of a class-conditional UNet (``num_class_embeds``), described by ``model_index.json``."""
    if unet.get("num_class_embeds") is None:
        return None
    return ClassConditioning(unet["num_class_embeds"], index.get("null_class_label"), index.get("class_names"),
                             index.get("class_frequencies"))


def _figures(folder: Path, record: RunRecord, T: int) -> list[Figure]:
    """Every image the record names, captioned by its role; a missing file is a ``ValueError`` naming it."""
    figures = []
    for role, path in record.images.items():
        if not (folder / path).is_file():
            raise ValueError(f"record.images[{role!r}]={path!r} is not a file inside {folder}")
        if role == "samples":
            caption = _grid_caption(record.results, T)
        else:
            caption = FIGURE_CAPTIONS.get(role, role.replace("_", " ").capitalize())
        figures.append(Figure(role, path, caption))
    return figures


def _grid_caption(results: RunResults | None, T: int) -> str:
    steps = results.num_inference_steps if results else T
    count = f"{results.num_samples} samples" if results else "Samples"
    chain = f"all {T} ancestral steps" if steps == T else f"{steps} of the {T} steps (respaced chain)"
    return f"{count} from the final EMA model, {chain}."


def _duration_text(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower()).strip("_")


def _is_inception(network: str) -> bool:
    return _slug(network).startswith("inception")


def _sample_metrics(quality: dict) -> tuple[SampleMetric, ...]:
    """The numbers of ``hf_ddpm.metrics.sample_quality``'s dict, named after the network whose features they use:
    "FID" and "Inception Score" only for Inception-v3, else e.g. "FD (digits classifier)"; a name that claims FID
    for other features is a ``ValueError``."""
    features = str(quality.get("feature_model") or "unknown features")
    classifier = str(quality.get("classifier") or features)
    n, ref = quality.get("num_samples"), quality.get("num_reference")
    data = f"{n} samples against {ref} held-out images" if n and ref else "samples against held-out images"
    found = []
    if quality.get("fd") is not None:
        inception = _is_inception(features)
        name = "FID" if inception else str(quality.get("fd_name") or f"FD ({features})")
        if re.search(r"\bFID\b", name, flags=re.IGNORECASE) and not inception:
            raise ValueError(f"sample metric named {name!r}, but its features come from {features!r}, not Inception-v3")
        found.append(SampleMetric(name, "fid" if inception else f"fd_{_slug(features)}", float(quality["fd"]), data))
    if quality.get("inception_score") is not None:
        inception = _is_inception(classifier)
        name = "Inception Score" if inception else str(quality.get("score_name") or f"classifier score ({classifier})")
        kind = "inception_score" if inception else f"classifier_score_{_slug(classifier)}"
        found.append(SampleMetric(name, kind, float(quality["inception_score"]), data))
    for key in ("precision", "recall"):
        if quality.get(key) is not None:
            found.append(SampleMetric(f"{key.capitalize()} ({features})", f"{key}_{_slug(features)}",
                                      float(quality[key]), data))
    return tuple(found)
