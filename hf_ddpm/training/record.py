"""What a training run produced, saved and loaded in one place.

:class:`RunResults` are the numbers (``metrics.json``, one key per field); :class:`RunRecord` pairs them with the
:class:`~hf_ddpm.training.config.RunConfig` that produced them and the images the run drew, and is saved as
``training_run.json`` beside the pipeline. The trainer writes it; the model card renders from it; ``hf-ddpm
evaluate`` finds the run's held-out data in it and ``hf-ddpm push`` renders the card from it again.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import RunConfig

RUN_FILE = "training_run.json"
METRICS_FILE = "metrics.json"


@dataclass(frozen=True)
class RunResults:
    """The numbers of a finished run (``metrics.json``).

    Bound: ``test_bits_per_dim`` ± ``test_bits_per_dim_stderr`` over ``num_test_images`` held-out images
    (``test_split``), from ``test_bits_per_dim_timesteps`` timesteps (all T: the full bound), described by
    ``test_bits_per_dim_method``; ``test_bound`` is the bound summary's JSON form (terms, prior, decoder, rate).
    Samples: ``num_samples`` drawn with ``num_inference_steps`` steps, judged by ``sample_quality``
    (``hf_ddpm.metrics.sample_quality``'s dict, or None). Training: ``global_step`` optimizer steps of
    ``global_batch_size`` images on ``num_processes`` process(es) with ``threads_per_process`` CPU threads each
    (0 on a GPU) on ``hardware``; ``images_seen`` in this session; the per-step losses (``train_loss_history``) and
    the evaluations made during training (``eval_log``). Timings in seconds. ``figures``: what the paper's figures
    recorded (``hf_ddpm.figures``' ``figures.json``: settings, the rate–distortion summary, seconds per figure), or
    None when they were not drawn. ``class_bounds``: a class-conditional run's conditional, marginal and null-label
    bounds and its generative classifier's accuracy (``hf_ddpm.training.class_bounds``), else None.
    """

    global_step: int
    global_batch_size: int
    num_processes: int
    threads_per_process: int
    hardware: str
    images_seen: int
    train_seconds: float
    sampling_seconds: float
    eval_seconds: float
    total_seconds: float
    test_bits_per_dim: float
    test_bits_per_dim_stderr: float
    test_bits_per_dim_timesteps: int
    test_bits_per_dim_method: str
    test_bound: dict
    test_split: str
    num_test_images: int
    final_train_loss: float
    train_loss_history: dict
    eval_log: list
    num_samples: int
    num_inference_steps: int
    sample_quality: dict | None = None
    figures: dict | None = None
    class_bounds: dict | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class RunRecord:
    """A run's configuration, its results (None for a pipeline not trained by ``training/train.py``, or saved
    before the end) and the images it left in the output folder (paths relative to it)."""

    config: RunConfig
    results: RunResults | None = None
    images: dict[str, str] = field(default_factory=dict)  # e.g. {"samples": "samples.png", "loss": "loss.png"}

    def save(self, folder: str | os.PathLike) -> None:
        """Write ``training_run.json`` (and ``metrics.json`` when there are results) into ``folder``, atomically."""
        folder = Path(folder)
        record = {"settings": self.config.settings(), "images": dict(self.images),
                  "metrics": None if self.results is None else self.results.to_dict()}
        write_json(folder / RUN_FILE, record)
        if self.results is not None:
            write_json(folder / METRICS_FILE, self.results.to_dict())

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "RunRecord | None":
        """The record in ``folder``'s ``training_run.json``, or None when there is none."""
        path = Path(folder) / RUN_FILE
        if not path.is_file():
            return None
        stored = json.loads(path.read_text(encoding="utf-8"))
        metrics = stored.get("metrics")
        return cls(config=RunConfig.from_settings(stored.get("settings") or {}),
                   results=None if metrics is None else RunResults(**metrics),
                   images=dict(stored.get("images") or {}))


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically (a temporary file renamed over ``path``)."""
    path = Path(path)
    staging = path.with_name(path.name + ".tmp")
    staging.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(staging, path)
