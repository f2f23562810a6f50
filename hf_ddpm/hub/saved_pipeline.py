"""What a saved pipeline's configs say, typed: the network (``unet/config.json``) and the diffusion process
(``scheduler/scheduler_config.json``), read once from the folder, for the model card and the push."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from ..options import PREDICTION_TYPES, VARIANCE_TYPES, PredictionType, describe_beta_schedule

# The networks the card describes: diffusers' own UNet, and hf-ddpm's Fourier-feature UNet (bundled in remote_code/).
PLAIN_UNET = "UNet2DModel"
FOURIER_UNET = "FourierUNet2DModel"
UNET_CLASSES = (PLAIN_UNET, FOURIER_UNET)


def read_pipeline_configs(folder: Path) -> tuple[dict, dict, dict]:
    """model_index.json, the UNet config and the scheduler config of a saved pipeline."""
    paths = (folder / "model_index.json", folder / "unet" / "config.json", folder / "scheduler" / "scheduler_config.json")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ValueError(f"{folder} does not hold a saved pipeline (missing {', '.join(missing)}); "
                         "call pipeline.save_pretrained(folder) first")
    return tuple(json.loads(p.read_text(encoding="utf-8")) for p in paths)  # type: ignore[return-value]


@dataclass(frozen=True)
class Network:
    """The saved UNet (``unet/config.json``; the parameter count from the safetensors headers)."""

    class_name: str
    in_channels: int
    sample_size: int
    block_out_channels: tuple[int, ...]
    layers_per_block: int
    attention_resolutions: tuple[int, ...]
    fourier_periods: tuple[float, ...]  # empty for diffusers' UNet2DModel
    num_parameters: int

    @classmethod
    def read(cls, unet_dir: Path, config: dict) -> "Network":
        class_name = config.get("_class_name", PLAIN_UNET)
        if class_name not in UNET_CLASSES:
            raise ValueError(f"{unet_dir / 'config.json'} names the class {class_name!r}; the model card describes "
                             f"only {' or '.join(UNET_CLASSES)}")
        blocks = config.get("down_block_types", [])
        periods = config.get("fourier_periods") if class_name == FOURIER_UNET else None
        return cls(
            class_name=class_name,
            in_channels=int(config.get("in_channels", 3)),
            sample_size=int(config["sample_size"]),
            block_out_channels=tuple(config.get("block_out_channels", ())),
            layers_per_block=int(config.get("layers_per_block", 1)),
            attention_resolutions=tuple(config["sample_size"] // 2**i for i, b in enumerate(blocks) if "Attn" in b),
            fourier_periods=tuple(float(p) for p in periods or ()),
            num_parameters=_count_parameters(unet_dir),
        )

    @property
    def fourier(self) -> bool:
        return self.class_name == FOURIER_UNET

    @property
    def fourier_periods_text(self) -> str:
        return ", ".join(f"{p:g}" for p in self.fourier_periods)

    @property
    def parameters_text(self) -> str:
        n = self.num_parameters
        return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k" if n >= 1e3 else str(n)

    @property
    def attention_text(self) -> str:
        return ", ".join(f"{r}×{r}" for r in self.attention_resolutions) or "no level"

    @property
    def channels_text(self) -> str:
        return "greyscale" if self.in_channels == 1 else f"{self.in_channels} channels"


@dataclass(frozen=True)
class Process:
    """The saved scheduler's diffusion process (``scheduler/scheduler_config.json``)."""

    num_train_timesteps: int
    beta_text: str
    variance_type: str
    prediction_type: str

    @classmethod
    def read(cls, config: dict) -> "Process":
        return cls(
            num_train_timesteps=int(config["num_train_timesteps"]),
            beta_text="given explicitly (trained_betas)" if config.get("trained_betas") is not None else
            describe_beta_schedule(config.get("beta_schedule", "linear"), config.get("beta_start"), config.get("beta_end")),
            variance_type=config.get("variance_type", "fixed_small"),
            prediction_type=config.get("prediction_type", "epsilon"),
        )

    @property
    def variance_text(self) -> str:
        return VARIANCE_TYPES[self.variance_type].variance

    @property
    def prediction(self) -> PredictionType:
        """What the network predicts: its symbols (plain and LaTeX) and definition."""
        return PREDICTION_TYPES[self.prediction_type]


def _count_parameters(unet_dir: Path) -> int:
    """Number of parameters in the UNet's safetensors weights, read from the file headers (no tensor is loaded)."""
    from safetensors import safe_open

    total = 0
    for path in sorted(unet_dir.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():
                total += math.prod(f.get_slice(name).get_shape())
    return total


